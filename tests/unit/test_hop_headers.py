"""The header fields that cross the router, built without a socket: what a node gets from a
client's request and what the client gets from the node's answer."""

from __future__ import annotations

from routercore.hop_headers import SAFETY_HEADERS, HopHeaders, client_headers
from routercore.http.messages import Request
from routercore.http.response_parser import ResponseHead, ResponseParser

HOP = HopHeaders("1.1 llm-router-abc")


def request(*headers: tuple[bytes, bytes]) -> Request:
    return Request("POST", "/v1/chat/completions", list(headers), b"{}", "10.0.0.9")


def test_a_node_gets_the_harmless_fields_length_and_this_routers_hop() -> None:
    sent = HOP.upstream(
        request(
            (b"host", b"router:8080"),
            (b"user-agent", b"wrk"),
            (b"authorization", b"Bearer sk-secret"),
            (b"content-type", b"text/plain"),
            (b"x-request-id", b"r1"),
            (b"accept", b"*/*"),
        ),
        "10.0.0.2",
        9000,
        b'{"model":"m"}',
    )
    assert sent == [
        (b"host", b"10.0.0.2:9000"),
        (b"user-agent", b"wrk"),
        (b"x-request-id", b"r1"),
        (b"accept", b"*/*"),
        (b"content-type", b"application/json"),
        (b"content-length", b"13"),
        (b"x-forwarded-for", b"10.0.0.9"),
        (b"via", b"1.1 llm-router-abc"),
    ]
    assert (b"content-type", b"application/json") not in HOP.upstream(request(), "h", 1, b"")


def test_the_hop_is_appended_to_the_clients_first_via() -> None:
    first = request((b"via", b"1.1 proxy-a"), (b"via", b"1.1 proxy-b"))
    assert HOP.upstream(first, "h", 1, b"")[-1] == (b"via", b"1.1 proxy-a, 1.1 llm-router-abc")
    empty = request((b"via", b""), (b"via", b"1.1 proxy-b"))  # the first one counts, even empty
    assert HOP.upstream(empty, "h", 1, b"")[-1] == (b"via", b"1.1 llm-router-abc")
    latin = request((b"via", b"1.1 caf\xe9"))
    assert HOP.upstream(latin, "h", 1, b"")[-1] == (b"via", b"1.1 caf\xe9, 1.1 llm-router-abc")


def head(*lines: bytes, status: bytes = b"200 OK") -> ResponseHead:
    raw = b"HTTP/1.1 " + status + b"\r\n" + b"".join(line + b"\r\n" for line in lines) + b"\r\n"
    (parsed, *_) = ResponseParser().feed(raw)
    assert isinstance(parsed, ResponseHead)
    return parsed


NODE = (b"x-router-node", b"n1")


def test_the_client_gets_the_answers_fields_without_hops_cookies_or_policies() -> None:
    answer = head(
        b"Server: nginx",
        b"Content-Type: application/json",
        b"Content-Length: 2",
        b"Connection: keep-alive",
        b"Keep-Alive: timeout=5",
        b"Set-Cookie: a=b",
        b"X-Router-Node: elsewhere",
        b"X-Custom: yes",
    )
    assert client_headers(answer, NODE) == [
        (b"content-type", b"application/json"),
        (b"content-length", b"2"),
        (b"x-custom", b"yes"),
        NODE,
        *SAFETY_HEADERS,
    ]


def test_fields_the_nodes_connection_names_are_dropped_too() -> None:
    answer = head(b"Connection: keep-alive, x-private", b"X-Private: 1", b"X-Custom: yes")
    assert client_headers(answer, NODE) == [(b"x-custom", b"yes"), NODE, *SAFETY_HEADERS]
    chunked = head(b"Transfer-Encoding: chunked", b"Content-Length: 5", b"X-Custom: yes")
    assert client_headers(chunked, NODE) == [(b"x-custom", b"yes"), NODE, *SAFETY_HEADERS]
    no_body = head(b"Content-Length: 0", status=b"204 No Content")
    assert client_headers(no_body, NODE) == [NODE, *SAFETY_HEADERS]
