"""The server wire (routercore/http/wire.py): the fast path against h11 on the same bytes.

The fast path may only accept what h11 accepts, with the same meaning, and must frame answers
as h11 does. The property tests feed generated requests (valid and not, split anywhere,
pipelined) to a fast wire and to an h11-only wire and require the same events; and send
generated answers through both and require that a client (h11) reads the same response.

Every test runs on both implementations (the `w` fixture: the compiled routercore._wire and
its twin routercore._wire_py); the `test_cython_*` ones also require the two to give the same
events and the same bytes for generated input.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from routercore.http import wire as facade
from routercore.http.wire import CLOSED, END, NEED_DATA, NOT_SIMPLE, PAUSED
from tests.support.twins import mutate, run_python

_COMPILED = pytest.mark.skipif(
    not facade.COMPILED_AVAILABLE,
    reason=f"compiled wire unavailable: {facade.COMPILED_UNAVAILABLE_REASON}",
)


@pytest.fixture(params=["python", pytest.param("cython", marks=_COMPILED)])
def w(request: pytest.FixtureRequest) -> ModuleType:
    """The wire module of the parametrized implementation."""
    module = facade.implementation(request.param)
    assert request.param == module.IMPLEMENTATION
    return module


PLAIN = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
    b"Content-Type: application/json\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n{}"
)


def parsed(w: ModuleType, data: bytes, max_head: int = 65536) -> Any:
    result = w.parse_simple_head(data, max_head)
    assert isinstance(result, tuple), result
    return result[0]


def test_a_plain_request_is_parsed_on_the_fast_path(w: ModuleType) -> None:
    result = w.parse_simple_head(PLAIN, 65536)
    assert isinstance(result, tuple)
    head, size = result
    assert PLAIN[size:] == b"{}"
    assert head.method == b"POST"
    assert head.target == b"/v1/chat/completions"
    assert head.http_version == b"1.1"
    assert head.content_length == 2
    assert head.headers == [
        (b"host", b"127.0.0.1:8080"),
        (b"content-type", b"application/json"),
        (b"content-length", b"2"),
        (b"connection", b"keep-alive"),
    ]


def test_header_values_lose_surrounding_whitespace_only(w: ModuleType) -> None:
    head = parsed(w, b"GET /?q=a%20b HTTP/1.1\r\nHost:x\r\nX-A: \t a \t b\t \r\nX-E:\r\n\r\n")
    assert head.headers == [(b"host", b"x"), (b"x-a", b"a \t b"), (b"x-e", b"")]
    assert head.content_length is None


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.0\r\nHost: x\r\n\r\n",  # HTTP/1.0: keep-alive rules differ
        b"GET / HTTP/1.1\r\n\r\n",  # no Host
        b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
        b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"CONNECT a:1 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n folded\r\n\r\n",  # obs-fold
        b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",  # space before the colon
        b"GET / HTTP/1.1\nHost: x\r\n\r\n",  # bare LF
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n",  # bare CR
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
        b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",  # leading empty line
        b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01",  # TLS client hello: h11 rejects at once
    ],
)
def test_anything_unusual_is_left_to_h11(w: ModuleType, data: bytes) -> None:
    assert w.parse_simple_head(data, 65536) is NOT_SIMPLE


def test_incomplete_heads_wait_until_the_limit_then_go_to_h11(w: ModuleType) -> None:
    assert w.parse_simple_head(b"GET / HTTP/1.1\r\nHost: x\r\n", 1024) is NEED_DATA
    assert w.parse_simple_head(b"GET / HTTP/1.1\n\n", 1024) is NOT_SIMPLE  # h11: head ends here
    assert w.parse_simple_head(b"GET / HTTP/1.1\r\nX: " + b"a" * 2000, 1024) is NOT_SIMPLE
    whole = b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 2000 + b"\r\n\r\n"
    assert w.parse_simple_head(whole, 1024) is NOT_SIMPLE  # complete but larger than the limit


def test_a_connection_moves_to_h11_for_good_after_an_unusual_request(w: ModuleType) -> None:
    wire = w.ServerWire(65536)
    wire.receive_data(PLAIN + b"GET / HTTP/1.0\r\n\r\n")
    assert isinstance(wire.next_event(), w.Head)
    assert wire.fast
    assert wire.next_event() == b"{}"
    assert wire.next_event() is END
    assert wire.next_event() is PAUSED
    wire.send_head(200, [(b"content-length", b"0")], b"OK")
    wire.send_end()
    assert wire.start_next_cycle()
    head = wire.next_event()
    assert isinstance(head, w.Head) and head.http_version == b"1.0"
    assert not wire.fast


def test_fast_framing_errors_match_h11(w: ModuleType) -> None:
    for fast in (True, False):
        wire = w.ServerWire(65536, fast=fast)
        wire.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert isinstance(wire.next_event(), w.Head)
        with pytest.raises(h11.LocalProtocolError):
            wire.send_head(200, [(b"x-bad", b"a\r\nb: c")], b"OK")
        assert wire.can_start_response  # an invalid head changes nothing: a 500 can follow
        wire.send_head(200, [(b"content-length", b"3")], b"OK")
        assert not wire.can_start_response
        with pytest.raises(h11.LocalProtocolError):
            wire.send_data(b"four")
        assert not wire.start_next_cycle()


# -- generated input: both wires must agree ----------------------------------------------------

_HEADER_LINES = [
    b"Host: example",
    b"host:example:8080",
    b"Content-Type: application/json",
    b"Content-Length: 0",
    b"Content-Length: 3",
    b"Content-Length: 007",
    b"Content-Length: 3, 3",
    b"Content-Length: x",
    b"Transfer-Encoding: chunked",
    b"Transfer-Encoding: gzip",
    b"Expect: 100-continue",
    b"Connection: keep-alive",
    b"Connection: Keep-Alive",
    b"Connection: close",
    b"Connection: upgrade",
    b"Upgrade: websocket",
    b"X-Empty:",
    b"X-Spaces: \t a  b \t",
    b"X-Obs: caf\xc3\xa9",
    b"X-Nul: a\x00b",
    b" folded",
    b"Bad Name: v",
    b"NoColon",
    b": empty-name",
    b"X-Cr: a\rb",
]


@st.composite
def _request(draw: Any) -> bytes:
    method = draw(st.sampled_from([b"GET", b"POST", b"HEAD", b"get", b"CONNECT", b"B@D", b""]))
    target = draw(st.sampled_from([b"/", b"/v1/chat?x=1", b"*", b"http://h/p", b"/a b", b""]))
    version = draw(st.sampled_from([b"HTTP/1.1"] * 6 + [b"HTTP/1.0", b"HTTP/2.0", b"http/1.1"]))
    lines = draw(st.lists(st.sampled_from(_HEADER_LINES), max_size=6))
    if draw(st.integers(0, 3)):
        lines.insert(draw(st.integers(0, len(lines))), b"Host: h")
    sep = draw(st.sampled_from([b"\r\n"] * 8 + [b"\n"]))
    head = sep.join([method + b" " + target + b" " + version, *lines]) + sep + sep
    lead = draw(st.sampled_from([b""] * 8 + [b"\r\n"]))
    body = draw(st.sampled_from([b"", b"abc", b"3\r\nabc\r\n0\r\n\r\n"]))
    return lead + head + body


@st.composite
def _stream(draw: Any) -> tuple[list[bytes], bool, int]:
    data = b"".join(draw(st.lists(_request(), min_size=1, max_size=3)))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    eof = draw(st.booleans())
    max_head = draw(st.sampled_from([65536, 40]))
    return [p for p in pieces if p], eof, max_head


def _drive(w: ModuleType, wire: Any, pieces: list[bytes], eof: bool) -> list[Any]:
    """Feed the pieces; answer each complete request; record what the wire reported."""
    out: list[Any] = []

    def pump() -> bool:
        while True:
            try:
                event = wire.next_event()
            except h11.RemoteProtocolError as exc:
                out.append(("error", exc.error_status_hint))
                return False
            if event is NEED_DATA:
                return True
            if event is CLOSED:
                out.append("closed")
                return False
            if event is PAUSED:
                out.append("paused")
                return False
            if isinstance(event, w.Head):
                out.append(("head", event.method, event.target, event.http_version,
                            tuple(event.headers)))  # fmt: skip
            elif event is END:
                out.append("end")
                if wire.waiting_for_100_continue:
                    out.append("still waiting for 100-continue")
                wire.send_head(404, [(b"content-length", b"2")], b"Not Found")
                method = next(e[1] for e in reversed(out) if e[0] == "head")
                if method != b"HEAD":
                    wire.send_data(b"ok")
                wire.send_end()
                if not wire.start_next_cycle():
                    out.append("must close")
                    return False
            else:
                body = bytes(event)
                if out and out[-1][0] == "body":
                    body = out.pop()[1] + body
                out.append(("body", body))

    for piece in pieces:
        wire.receive_data(piece)
        if not pump():
            return out
    if eof:
        wire.receive_data(b"")
        pump()
    return out


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=_stream())
def test_fast_wire_reports_exactly_what_h11_reports(
    w: ModuleType, case: tuple[list[bytes], bool, int]
) -> None:
    pieces, eof, max_head = case
    fast = _drive(w, w.ServerWire(max_head, fast=True), pieces, eof)
    reference = _drive(w, w.ServerWire(max_head, fast=False), pieces, eof)
    assert fast == reference


_RESPONSE_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", b"4"),
    (b"content-length", b"5"),
    (b"Content-Length", b"4"),
    (b"content-length", b"x"),
    (b"transfer-encoding", b"chunked"),
    (b"Transfer-Encoding", b"CHUNKED"),
    (b"transfer-encoding", b"gzip"),
    (b"connection", b"close"),
    (b"connection", b"keep-alive"),
    (b"x-router-node", b"node-1"),
    (b"x-empty", b""),
    (b"x-bad", b"a\r\nb"),
    (b"bad name", b"v"),
]


@st.composite
def _response(draw: Any) -> tuple[int, list[tuple[bytes, bytes]], list[bytes]]:
    status = draw(st.sampled_from([200, 201, 204, 304, 404, 500, 199, 1000]))
    headers = draw(st.lists(st.sampled_from(_RESPONSE_HEADERS), max_size=4))
    pieces = draw(st.lists(st.sampled_from([b"", b"ab", b"cd", b"efghi"]), max_size=3))
    return status, headers, pieces


def _answer(
    w: ModuleType, fast: bool, status: int, headers: list[tuple[bytes, bytes]], pieces: list[bytes]
) -> Any:
    """Send one answer to `GET /`; what a client reads from it, or where sending failed."""
    wire = w.ServerWire(65536, fast=fast)
    wire.receive_data(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert isinstance(wire.next_event(), w.Head)
    assert wire.next_event() is END
    out = b""
    step = "head"
    try:
        out += wire.send_head(status, headers, b"Reason")
        for i, piece in enumerate(pieces):
            step = f"data {i}"
            out += wire.send_data(piece)
        step = "end"
        out += wire.send_end()
    except h11.LocalProtocolError:
        return ("refused at", step, wire.can_start_response)
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("Host", "h")]))
    client.send(h11.EndOfMessage())
    client.receive_data(out)
    events: list[Any] = []
    while True:
        event = client.next_event()
        if event is h11.NEED_DATA:
            break
        if isinstance(event, h11.Response):
            events.append((event.status_code, sorted(event.headers)))
        elif isinstance(event, h11.Data):
            events.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            events.append("end")
            break
    body = b"".join(e for e in events if isinstance(e, bytes))
    return events[0], body, events[-1], wire.start_next_cycle()


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=_response())
def test_fast_answers_read_exactly_like_h11_answers(
    w: ModuleType,
    case: tuple[int, list[tuple[bytes, bytes]], list[bytes]],
) -> None:
    status, headers, pieces = case
    assert _answer(w, True, status, headers, pieces) == _answer(w, False, status, headers, pieces)


# -- the compiled wire against its twin: same events, same bytes ------------------------------

# Bytes that sit on the edges of the head grammar: separators, whitespace that is and is not
# allowed in a value, NUL, DEL, a non-ASCII byte, upper case, digits.
_EDGE_BYTES = b"\x00\t\n\x0b\x0c\r :;,/AZaz09-\x7f\x80\xff"


@st.composite
def _mutated_head(draw: Any) -> tuple[bytes, int]:
    """A generated request with a few bytes replaced, inserted or cut, and a head limit."""
    data = mutate(draw, draw(_request()), _EDGE_BYTES)
    max_head = draw(st.sampled_from([65536, 40, max(1, len(data) - 4), len(data)]))
    return data, max_head


def _parse_summary(w: ModuleType, data: bytes, max_head: int) -> Any:
    try:
        result = w.parse_simple_head(data, max_head)
    except IndexError:
        return "IndexError"
    if not isinstance(result, tuple):
        return repr(result)
    head, size = result
    fields = (head.method, head.target, head.http_version, head.headers, head.content_length)
    return fields, size, [type(x) for x in (head.method, head.target, *head.headers[0])]


@_COMPILED
@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=_mutated_head())
def test_cython_parser_matches_the_twin_on_generated_heads(case: tuple[bytes, int]) -> None:
    data, max_head = case
    compiled, twin = facade.implementation("cython"), facade.implementation("python")
    assert _parse_summary(compiled, data, max_head) == _parse_summary(twin, data, max_head)


@_COMPILED
@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=_stream())
def test_cython_wire_reports_exactly_what_the_twin_reports(
    case: tuple[list[bytes], bool, int],
) -> None:
    pieces, eof, max_head = case
    compiled, twin = facade.implementation("cython"), facade.implementation("python")
    for fast in (True, False):
        assert _drive(compiled, compiled.ServerWire(max_head, fast=fast), pieces, eof) == _drive(
            twin, twin.ServerWire(max_head, fast=fast), pieces, eof
        )


def _framed(
    w: ModuleType,
    read_request: bool,
    status: int,
    headers: list[tuple[bytes, bytes]],
    pieces: list[bytes],
) -> Any:
    """The exact bytes one answer is framed as (or where it was refused), and what follows."""
    wire = w.ServerWire(65536)
    if read_request:
        wire.receive_data(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        assert isinstance(wire.next_event(), w.Head)
        assert wire.next_event() is END
    out = []
    try:
        out.append(wire.send_head(status, headers, b"Reason"))
        out += [wire.send_data(piece) for piece in pieces]
        out.append(wire.send_end())
    except h11.LocalProtocolError as exc:
        out.append(("refused", str(exc), wire.can_start_response))
    return out, wire.can_start_response, wire.start_next_cycle()


@_COMPILED
@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    case=_response(),
    read_request=st.booleans(),
    extra=st.lists(st.binary(max_size=300), max_size=3),
)
def test_cython_frames_answers_byte_for_byte_like_the_twin(
    case: tuple[int, list[tuple[bytes, bytes]], list[bytes]],
    read_request: bool,
    extra: list[bytes],
) -> None:
    status, headers, pieces = case
    pieces = pieces + extra  # sizes past one hex digit
    compiled, twin = facade.implementation("cython"), facade.implementation("python")
    assert _framed(compiled, read_request, status, headers, pieces) == _framed(
        twin, read_request, status, headers, pieces
    )


@_COMPILED
def test_cython_parser_matches_the_twin_for_every_byte_at_every_position() -> None:
    """Each of the 256 byte values put in place of, and before, each byte of a plain head."""
    compiled, twin = facade.implementation("cython"), facade.implementation("python")
    head = PLAIN[: PLAIN.index(b"\r\n\r\n") + 4]
    for at in range(len(head)):
        for byte in range(256):
            for data in (
                head[:at] + bytes([byte]) + head[at + 1 :],
                head[:at] + bytes([byte]) + head[at:],
            ):
                assert _parse_summary(compiled, data, 65536) == _parse_summary(twin, data, 65536)


@_COMPILED
def test_cython_chunks_of_any_size_and_buffer_type_match_the_twin() -> None:
    compiled, twin = facade.implementation("cython"), facade.implementation("python")
    for size in (1, 15, 16, 255, 256, 4095, 4096, 65536, 1 << 20):
        for data in (b"x" * size, bytearray(b"y" * size), memoryview(b"z" * size)):
            framed = [
                _framed(w, True, 200, [(b"content-type", b"text/plain")], [data, b"", data])
                for w in (compiled, twin)
            ]
            assert framed[0] == framed[1]
            assert framed[0][0][1] == b"%x\r\n" % size + bytes(data) + b"\r\n"


# -- which implementation the facade picks ------------------------------------------------------

_PROBE = "from routercore.http import wire\nprint('impl', wire.IMPLEMENTATION, wire.ServerWire)\n"


def test_no_extensions_env_gives_the_twin_wire() -> None:
    out = run_python(
        _PROBE, {"LLM_ROUTER_NO_EXTENSIONS": "1", "LLM_ROUTER_REQUIRE_EXTENSIONS": "1"}
    )
    assert "impl python <class 'routercore._wire_py.ServerWire'>" in out


@_COMPILED
def test_cython_wire_is_preferred_when_built() -> None:
    assert "impl cython <class 'routercore._wire.ServerWire'>" in run_python(_PROBE, {})


def test_a_missing_wire_build_fails_only_when_required() -> None:
    code = "import sys\nsys.modules['routercore._wire'] = None\n" + _PROBE
    assert "ImportError: LLM_ROUTER_REQUIRE_EXTENSIONS=1 but routercore._wire" in run_python(
        code, {"LLM_ROUTER_REQUIRE_EXTENSIONS": "1"}
    )
    assert "impl python" in run_python(code, {})
    with pytest.raises(ValueError):
        facade.implementation("rust")
