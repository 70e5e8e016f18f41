"""Fuzz what a node may answer: random header names and values (control characters, CR, LF,
NUL, obs-text), cookies, forged `x-router-node`, hop-by-hop fields, and every framing (a length,
chunked, both, neither) on statuses that carry a body or must not (204, 304).

A raw node (routercore/testing/raw_node.py) sends each reply byte for byte; the client reads
the router's answer with h11. What must hold: a node head the router cannot relay gets a JSON
502; any other reply reaches the client as well-formed HTTP with the node's status and body,
without cookies or the node's own `x-router-node`, with `nosniff` and a sandbox CSP, and with no
length on a 204/304. No ERROR is logged and `/healthz` keeps answering.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
from typing import Any

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from routercore.testing.raw_node import RawNode
from tests.support.logs import ErrorLog
from tests.support.polling import wait_until
from tests.support.routers import http

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
TIMEOUT = max(120, EXAMPLES // 5)

_CTL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")

names = st.one_of(
    st.sampled_from(
        [b"x-a", b"set-cookie", b"x-router-node", b"content-type", b"connection", b"keep-alive",
         b"server", b"content-security-policy", b"x-content-type-options", b"trailer",
         b"upgrade", b"proxy-authenticate", b"set-cookie2", b"x a", b"x\x00a", b"\xe9t\xe9",
         b"x-a\t"]
    ),
    st.from_regex(rb"\A[a-z][-a-z0-9]{0,15}\Z").filter(
        lambda n: n not in (b"content-length", b"transfer-encoding")
    ),
)  # fmt: skip
value_bytes = st.lists(
    st.sampled_from(
        [b"a", b"Z", b"0", b" ", b"\t", b"\r", b"\n", b"\x00", b"\x07", b"\x0b", b"\x0c",
         b"\x1f", b"\x7f", b"\xe9", b";", b"=", b",", b"close", b"x-a", b"keep-alive"]
    ),
    max_size=12,
).map(lambda parts: b"".join(parts).replace(b"\r\n", b"\n"))  # fmt: skip
FRAMINGS = ("length", "chunked", "length_and_chunked", "until_close")


@st.composite
def node_replies(draw: st.DrawFn) -> tuple[bytes, dict[str, Any]]:
    status = draw(st.sampled_from([200, 200, 201, 202, 204, 304, 400, 401, 404, 418, 429]))
    fields = draw(st.lists(st.tuples(names, value_bytes), max_size=6))
    framing = draw(st.sampled_from(FRAMINGS))
    body = draw(st.binary(max_size=300)) if status not in (204, 304) else b""
    lines = [b"%s: %s" % (n, v) for n, v in fields]
    wire_body = body
    if framing in ("length", "length_and_chunked"):
        lying = draw(st.booleans()) and framing == "length_and_chunked"
        lines.append(b"content-length: %d" % (len(body) + (7 if lying else 0)))
    if framing in ("chunked", "length_and_chunked"):
        lines.append(b"transfer-encoding: chunked")
        wire_body = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
    reply = b"HTTP/1.1 %d Whatever\r\n" % status + b"".join(x + b"\r\n" for x in lines)
    reply += b"\r\n" + wire_body
    head_ok = all(_TOKEN.fullmatch(n) and not _CTL.search(v) for n, v in fields)
    expect = {"status": status, "body": body, "head_ok": head_ok}
    return reply, expect


def ask(port: int) -> tuple[h11.Response, bytes]:
    """One chat request on a fresh connection, read with a strict HTTP client (h11)."""
    body = b'{"model": "m", "stream": false}'
    client = h11.Connection(h11.CLIENT)
    out = client.send(
        h11.Request(
            method="POST",
            target="/api/chat",
            headers=[("host", "r"), ("content-type", "application/json"),
                     ("content-length", str(len(body))), ("connection", "close")],
        )
    )  # fmt: skip
    out += client.send(h11.Data(data=body)) + client.send(h11.EndOfMessage())
    response: h11.Response | None = None
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(out)
        while True:
            event = client.next_event()
            if event is h11.NEED_DATA:
                client.receive_data(s.recv(65536))
                continue
            if isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                data += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise AssertionError("connection closed before the answer ended")
    assert response is not None
    return response, data


@pytest.mark.timeout(TIMEOUT)
def test_fuzz_node_replies(router_factory: Any, error_log: ErrorLog) -> None:
    router = router_factory(connect_timeout=0.5, read_timeout=2.0, request_timeout=5.0)
    node = RawNode(b"")
    cases = [0]
    try:
        register = {
            "machine_name": "raw",
            "runtime_port": node.port,
            "models": ["m"],
            "runtime_kind": "ollama",  # answered as sent: no translation, no kind question
        }

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        )
        @given(case=node_replies())
        def one_case(case: tuple[bytes, dict[str, Any]]) -> None:
            cases[0] += 1
            node.reply, expect = case
            # After a 502 marked the node unreachable, registering again makes the router
            # probe it at once; the probe (answered with this case's status line) brings it back.
            status, _, agent = http("POST", router.url + "/api/agents/register", register)
            assert status in (200, 201)
            wait_until(lambda: router.agents()[0]["status"] == "online", message="node online")
            response, body = ask(router.port)
            headers: dict[bytes, list[bytes]] = {}
            for name, value in response.headers:
                headers.setdefault(name, []).append(value)
            if not expect["head_ok"]:
                assert response.status_code == 502, (response, body)
                assert isinstance(json.loads(body)["error"], str)
            else:
                assert response.status_code == expect["status"], (response, body)
                assert body == expect["body"]
                assert headers[b"x-router-node"] == [agent["agent_id"].encode()]
                assert headers[b"x-content-type-options"] == [b"nosniff"]
                assert headers[b"content-security-policy"] == [b"sandbox"]
                assert b"set-cookie" not in headers and b"set-cookie2" not in headers
                assert b"keep-alive" not in headers and b"upgrade" not in headers
                if expect["status"] in (204, 304):
                    assert b"content-length" not in headers
            assert not error_log.records, [r.getMessage() for r in error_log.records]

        one_case()
    finally:
        sys.stdout.write(f"\nnode replies: {cases[0]} fuzz cases")
        node.close()
    assert http("GET", router.url + "/healthz")[0] == 200
