"""The connection over real sockets (connection.py): keep-alive, pipelining, framing, requests
refused before a handler, requests split anywhere.

Each runs on every server variant (`run_fixture(VARIANTS)`, tests/support/http_server.py).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from routercore.http.messages import Request, Response
from tests.support.http_client import Client, build
from tests.support.http_server import (
    VARIANTS,
    capture,
    echo,
    errors,
    make_runner,
    run_fixture,
    serve,
)
from tests.support.polling import eventually

run = run_fixture(VARIANTS)


def test_keep_alive_serves_several_requests_on_one_connection(run: Any) -> None:
    async def main() -> None:
        async with serve(echo) as (_, port):
            c = await Client.connect(port)
            for i in range(5):
                r = await c.request("POST", f"/n/{i}?x={i}", body=f"body{i}".encode())
                assert r.status == 200
                assert r.json()["path"] == f"/n/{i}"
                assert r.json()["query"] == {"x": str(i)}
                assert r.json()["body"] == f"body{i}"
                assert r.json()["peer"] == "127.0.0.1"
                assert r.headers["server"] == "llm-router"
                assert "connection" not in r.headers
            c.close()

    run(main())


def test_pipelined_requests_are_answered_in_order(run: Any) -> None:
    async def slow_first(request: Request) -> Response:
        if request.path == "/1":
            await asyncio.sleep(0.05)  # the first answer is the slowest
        return Response.json({"path": request.path})

    async def main() -> None:
        async with serve(slow_first) as (_, port):
            c = await Client.connect(port)
            await c.send(b"".join(build("GET", f"/{i}") for i in range(1, 6)))
            paths = [(await c.reply()).json()["path"] for _ in range(5)]
            assert paths == ["/1", "/2", "/3", "/4", "/5"]
            # the connection is still usable afterwards
            assert (await c.request("GET", "/6")).json()["path"] == "/6"
            c.close()

    run(main())


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
def test_http10_request_is_answered_then_closed(run: Any, streamed: bool) -> None:
    async def stream(request: Request) -> None:
        assert request.stream is not None
        await request.stream.start(200, [(b"content-type", b"text/plain")])
        for part in (b"a", b"b", b"c"):
            await request.stream.write(part)
        await request.stream.end()

    async def main() -> None:
        async with serve(stream if streamed else echo) as (_, port):
            c = await Client.connect(port)
            await c.send(b"GET /old HTTP/1.0\r\n\r\n")
            r = await c.reply()
            assert r.status == 200
            if streamed:  # close-delimited: HTTP/1.0 has no chunked encoding
                assert "transfer-encoding" not in r.headers
                assert r.body == b"abc"
            else:
                assert r.json()["path"] == "/old"
            assert await c.closed()

    run(main())


def test_connection_close_request_header_closes_after_answer(run: Any) -> None:
    async def main() -> None:
        async with serve(echo) as (_, port):
            c = await Client.connect(port)
            r = await c.request("GET", "/", headers={"Connection": "close"})
            assert r.status == 200
            assert r.headers["connection"] == "close"
            assert await c.closed()

    run(main())


def test_expect_100_continue_gets_100_then_the_answer(run: Any) -> None:
    async def main() -> None:
        async with serve(echo) as (_, port):
            c = await Client.connect(port)
            await c.send(
                b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
            )
            interim = await c.reply()
            assert interim.status == 100
            await c.send(b"hello")
            r = await c.reply()
            assert r.status == 200
            assert r.json()["body"] == "hello"
            c.close()

    run(main())


def test_chunked_request_body_is_reassembled(run: Any) -> None:
    async def main() -> None:
        async with serve(echo) as (_, port):
            c = await Client.connect(port)
            await c.send(
                b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
            )
            await c.send(b"6;ext=1\r\n world\r\n0\r\nX-Trailer: yes\r\n\r\n")
            r = await c.reply()
            assert r.json()["body"] == "hello world"
            # keep-alive still works after a chunked body
            assert (await c.request("GET", "/next")).json()["path"] == "/next"
            c.close()

    run(main())


MALFORMED = {
    "bad request line": b"GARBAGE\r\n\r\n",
    "request line with spaces": b"GET / / HTTP/1.1\r\nHost: t\r\n\r\n",
    "bad version syntax": b"GET / HTTP/1.1.1\r\nHost: t\r\n\r\n",
    "bad header": b"GET / HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\n",
    "header without colon": b"GET / HTTP/1.1\r\nHost: t\r\nnocolon\r\n\r\n",
    "control char in header": b"GET / HTTP/1.1\r\nHost: t\r\nX: a\x00b\r\n\r\n",
    "invalid content-length": b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n",
    "negative content-length": b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n",
    "huge content-length": b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: "
    + b"9" * 40
    + b"\r\n\r\n",
    "conflicting content-lengths": (
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"
    ),
    "content-length and transfer-encoding": (
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "missing host": b"GET / HTTP/1.1\r\n\r\n",
    "garbage bytes": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    "bad chunk size": b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "non-ascii target": b"GET /\xff\xfe HTTP/1.1\r\nHost: t\r\n\r\n",
}


@pytest.mark.parametrize("raw", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_request_gets_400_and_close(
    run: Any, raw: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    capture(caplog)
    called: list[Request] = []

    async def handler(request: Request) -> Response:
        called.append(request)
        return Response.json({"ok": True})

    async def main() -> None:
        async with serve(handler) as (_, port):
            other = await Client.connect(port)  # a healthy neighbour connection
            c = await Client.connect(port)
            await c.send(raw)
            r = await c.reply()
            assert r.status == 400
            assert r.headers["connection"] == "close"
            assert "error" in r.json()
            assert b"Traceback" not in r.body
            assert await c.closed()
            assert called == []
            assert (await other.request("GET", "/")).status == 200
            fresh = await Client.connect(port)
            assert (await fresh.request("GET", "/")).status == 200
            other.close()
            fresh.close()

    run(main())
    assert any("event=bad_request" in r.getMessage() for r in caplog.records)
    assert errors(caplog) == []


# Heads the server refuses with a status of their own (not 400), then closes.
UNSUPPORTED = {
    "505 HTTP version": (b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505),
    "501 transfer-encoding": (
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n",
        501,
    ),
}


@pytest.mark.parametrize(("raw", "status"), list(UNSUPPORTED.values()), ids=list(UNSUPPORTED))
def test_unsupported_protocol_gets_its_status_and_close(run: Any, raw: bytes, status: int) -> None:
    async def main() -> None:
        async with serve(echo) as (_, port):
            c = await Client.connect(port)
            await c.send(raw)
            r = await c.reply()
            assert r.status == status
            assert "error" in r.json()
            assert await c.closed()

    run(main())


def test_error_after_the_head_uses_the_v1_error_format(run: Any) -> None:
    async def main() -> None:
        async with serve(echo) as (_, port):
            c = await Client.connect(port)
            await c.send(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\n"
                b"Transfer-Encoding: chunked\r\n\r\nnot-hex\r\n"
            )
            r = await c.reply()
            assert r.status == 400
            err = r.json()["error"]
            assert set(err) == {"message", "type", "code"}
            assert await c.closed()

    run(main())


def test_client_eof_at_idle_closes_quietly(run: Any, caplog: pytest.LogCaptureFixture) -> None:
    capture(caplog)

    async def main() -> None:
        async with serve(echo) as (server, port):
            c = await Client.connect(port)
            assert (await c.request("GET", "/")).status == 200
            c.writer.write_eof()
            assert await c.closed()
            await eventually(lambda: not server.state.connections, message="connection gone")

    run(main())
    assert errors(caplog) == []


def test_pipelined_requests_with_bodies_keep_their_bodies(run: Any) -> None:
    async def main() -> None:
        async with serve(echo) as (_, port):
            c = await Client.connect(port)
            chunked = (
                b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"2\r\nch\r\n0\r\n\r\n"
            )
            await c.send(
                build("POST", "/a", b"first") + chunked + build("PUT", "/b", b"third body")
            )
            got = [(await c.reply()).json() for _ in range(3)]
            assert [(g["method"], g["path"], g["body"]) for g in got] == [
                ("POST", "/a", "first"),
                ("POST", "/c", "ch"),
                ("PUT", "/b", "third body"),
            ]
            c.close()

    run(main())


def test_upgrade_request_answered_normally_keeps_the_connection(run: Any) -> None:
    async def main() -> None:
        async with serve(echo) as (_, port):
            c = await Client.connect(port)
            upgrade = {"Connection": "Upgrade", "Upgrade": "websocket"}
            assert (await c.request("GET", "/not-ws", headers=upgrade)).status == 200
            assert (await c.request("GET", "/after")).json()["path"] == "/after"
            c.close()

    run(main())


def test_body_sent_without_waiting_for_100_continue(run: Any) -> None:
    async def main() -> None:
        async with serve(echo) as (_, port):
            c = await Client.connect(port)
            await c.send(
                b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n"
                b"Expect: 100-continue\r\n\r\nabc"
            )
            first = await c.reply()
            final = first if first.status != 100 else await c.reply()
            assert final.status == 200
            assert final.json()["body"] == "abc"
            c.close()

    run(main())


def _split_request() -> Any:
    bodies = st.binary(max_size=300)
    return st.tuples(
        bodies,
        st.booleans(),
        st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=30),
    )


@pytest.mark.parametrize("loop", sorted(VARIANTS))
def test_requests_split_at_any_byte_parse_the_same(loop: str) -> None:
    """Two pipelined requests, delivered in arbitrary pieces, parse exactly as sent."""
    runner = make_runner(loop)

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(case=_split_request())
    def check(case: tuple[bytes, bool, list[int]]) -> None:
        body, chunked, cuts = case
        if chunked:
            framed = b"".join(
                b"%x\r\n%s\r\n" % (len(body[i : i + 7]), body[i : i + 7])
                for i in range(0, len(body), 7)
            )
            first = (
                b"POST /one?q=1 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                + framed
                + b"0\r\n\r\n"
            )
        else:
            first = build("POST", "/one?q=1", body) if body else build("POST", "/one?q=1")
        data = first + build("GET", "/two")

        async def main() -> None:
            async with serve(echo) as (_, port):
                c = await Client.connect(port)
                pos = 0
                for size in cuts:
                    if pos >= len(data):
                        break
                    await c.send(data[pos : pos + size])
                    pos += size
                    await asyncio.sleep(0)
                await c.send(data[pos:])
                one, two = (await c.reply()).json(), (await c.reply()).json()
                assert one["body"].encode("latin-1") == body
                assert one["query"] == {"q": "1"}
                assert two["path"] == "/two"
                c.close()

        runner(main())

    check()


def test_a_failing_error_responder_costs_one_connection_only(
    run: Any, caplog: pytest.LogCaptureFixture
) -> None:
    capture(caplog)

    def broken_on_error(request: Request | None, status: int, message: str) -> Response:
        if status == 400:
            raise RuntimeError("formatter bug")
        return Response.json({"error": message}, status=status)

    async def main() -> None:
        async with serve(echo, on_error=broken_on_error) as (_, port):
            c = await Client.connect(port)
            await c.send(b"NOT HTTP\r\n\r\n")
            assert await c.closed()
            ok = await Client.connect(port)
            assert (await ok.request("GET", "/")).status == 200
            ok.close()

    run(main())
    assert any("event=connection_failed" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.ERROR]


class _ClosingTransport:
    """A transport whose socket failed: is_closing() is true before connection_lost runs."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def set_write_buffer_limits(self, high: int) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closing

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closing = True

    abort = close


def test_a_writer_stops_when_the_socket_is_closing_before_connection_lost() -> None:
    """The socket failed, connection_lost is still queued: the next write must raise instead
    of relaying the node's answer into a transport that drops it."""
    from routercore.http.connection import HTTPConnection
    from routercore.http.state import ServerLimits, ServerState, plain_error

    pieces_taken: list[int] = []
    outcome: list[str] = []

    async def relay(request: Request) -> None:
        stream = request.stream
        assert stream is not None
        await stream.start(200, [(b"content-type", b"text/plain")])
        try:
            for i in range(100):
                pieces_taken.append(i)
                await stream.write(b"x" * 1024)
                if i == 1:
                    transport.closing = True  # the socket broke under the relay
        except ConnectionResetError:
            outcome.append("stopped")

    async def main() -> None:
        state = ServerState(relay, ServerLimits(access_log=False), plain_error)
        conn = HTTPConnection(state)
        conn.connection_made(transport)  # type: ignore[arg-type]
        conn.data_received(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        assert conn.task is not None
        await conn.task

    transport = _ClosingTransport()
    asyncio.run(main())
    assert outcome == ["stopped"]
    assert len(pieces_taken) <= 4
    assert len(transport.written) <= 2
