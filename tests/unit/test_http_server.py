"""The HTTP server over real sockets: keep-alive, pipelining, framing, errors, shutdown, logs.

Every test runs on the stock asyncio loop and on uvloop, and on uvloop once more with the wire's
fast path off so that h11 reads every request (the `run` fixture): one suite for both paths.
The raw client and the server runner are in tests/support (http_client.py, http_server.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
from collections import Counter
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from routercore.app import error_response
from routercore.http.messages import Request, Response
from routercore.http.server import HTTPServer, ServerLimits
from tests.conftest import join, wait_for
from tests.support.http_client import Client, build, eventually
from tests.support.http_server import (
    VARIANTS,
    capture,
    echo,
    errors,
    make_runner,
    run_fixture,
    serve,
)

run = run_fixture(VARIANTS)


# -- keep-alive, pipelining, framing -----------------------------------------------------------


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


def test_answered_requests_are_freed_without_the_cycle_collector(run: Any) -> None:
    """A request and its response stream must not reference each other: a cycle per request
    is work for the cyclic garbage collector, whose pauses stall the loop at high rates."""

    async def main() -> None:
        async with serve(echo) as (_, port):
            c = await Client.connect(port)
            for i in range(20):
                assert (await c.request("POST", f"/n/{i}", body=b"x")).status == 200
            c.close()

    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        run(main())
        gc.collect()
        # Per request and per connection; the server's own objects live as long as it does.
        per_request = {
            "Request",
            "RequestCycle",
            "ResponseWriter",
            "RequestBody",
            "FlowControl",
            "HTTPConnection",
            "ServerWire",
        }
        leaked = Counter(name for o in gc.garbage if (name := type(o).__qualname__) in per_request)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert not leaked, f"objects freed only by the cycle collector: {dict(leaked)}"


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


def test_http10_request_is_answered_then_closed(run: Any) -> None:
    async def main() -> None:
        async with serve(echo) as (_, port):
            c = await Client.connect(port)
            await c.send(b"GET /old HTTP/1.0\r\n\r\n")
            r = await c.reply()
            assert r.status == 200
            assert r.json()["path"] == "/old"
            assert await c.closed()

    run(main())


def test_http10_streaming_response_is_close_delimited(run: Any) -> None:
    async def stream(request: Request) -> None:
        assert request.stream is not None
        await request.stream.start(200, [(b"content-type", b"text/plain")])
        for part in (b"a", b"b", b"c"):
            await request.stream.write(part)
        await request.stream.end()

    async def main() -> None:
        async with serve(stream) as (_, port):
            c = await Client.connect(port)
            await c.send(b"GET / HTTP/1.0\r\n\r\n")
            r = await c.reply()
            assert r.status == 200
            assert "transfer-encoding" not in r.headers
            assert r.body == b"abc"

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


def test_head_gets_headers_and_length_but_no_body(run: Any) -> None:
    async def handler(request: Request) -> Response:
        return Response.json({"hello": "world"})

    async def main() -> None:
        async with serve(handler) as (_, port):
            c = await Client.connect(port)
            r = await c.request("HEAD", "/")
            assert r.status == 200
            assert r.headers["content-length"] == str(len(b'{"hello":"world"}'))
            # no body bytes came: the next answer parses cleanly right after the head
            r2 = await c.request("GET", "/")
            assert r2.json() == {"hello": "world"}
            c.close()

    run(main())


def test_head_on_a_streaming_handler_sends_no_body(run: Any) -> None:
    async def stream(request: Request) -> None:
        assert request.stream is not None
        await request.stream.start(200, [(b"content-type", b"text/plain")])
        await request.stream.write(b"ignored for HEAD")
        await request.stream.end()

    async def main() -> None:
        async with serve(stream) as (_, port):
            c = await Client.connect(port)
            assert (await c.request("HEAD", "/")).status == 200
            r = await c.request("GET", "/")
            assert r.body == b"ignored for HEAD"
            c.close()

    run(main())


def test_204_has_no_content_length_and_no_body(run: Any) -> None:
    async def handler(request: Request) -> Response:
        return Response(204)

    async def main() -> None:
        async with serve(handler) as (_, port):
            c = await Client.connect(port)
            r = await c.request("DELETE", "/x")
            assert r.status == 204
            assert "content-length" not in r.headers
            assert "transfer-encoding" not in r.headers
            assert (await c.request("DELETE", "/y")).status == 204
            c.close()

    run(main())


def test_streamed_chunks_reach_the_client_as_written(run: Any) -> None:
    go_on = asyncio.Event()

    async def stream(request: Request) -> None:
        assert request.stream is not None
        await request.stream.start(200, [(b"content-type", b"text/event-stream")])
        await request.stream.write(b"data: 1\n\n")
        await go_on.wait()  # the client must see chunk 1 before chunk 2 exists
        await request.stream.write(b"data: 2\n\n")
        await request.stream.end()

    async def main() -> None:
        async with serve(stream) as (_, port):
            c = await Client.connect(port)
            await c.send(build("GET", "/"))
            head = await asyncio.wait_for(c.reader.readuntil(b"\r\n\r\n"), 5)
            assert b"transfer-encoding: chunked" in head.lower()
            first = await asyncio.wait_for(c.reader.readuntil(b"data: 1\n\n\r\n"), 5)
            assert first.endswith(b"data: 1\n\n\r\n")
            go_on.set()
            rest = await asyncio.wait_for(c.reader.readuntil(b"0\r\n\r\n"), 5)
            assert b"data: 2" in rest
            c.close()

    run(main())


# -- malformed requests ------------------------------------------------------------------------

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


# -- handler failures ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "shape"), [("/v1/chat/completions", "v1"), ("/api/chat", "plain"), ("/x", "plain")]
)
def test_handler_exception_gives_500_in_the_api_error_format(
    run: Any, caplog: pytest.LogCaptureFixture, path: str, shape: str
) -> None:
    capture(caplog)

    async def broken(request: Request) -> Response:
        raise RuntimeError("secret internals")

    async def main() -> None:
        async with serve(broken) as (_, port):
            c = await Client.connect(port)
            r = await c.request("POST", path, body=b"{}")
            assert r.status == 500
            body = r.json()
            if shape == "v1":
                assert body["error"]["type"] == "server_error"
                assert set(body["error"]) == {"message", "type", "code"}
            else:
                assert isinstance(body["error"], str)
            assert b"secret internals" not in r.body
            # keep-alive survives a handler crash
            assert (await c.request("POST", path, body=b"{}")).status == 500
            c.close()

    run(main())
    crashes = [r for r in caplog.records if "event=handler_crashed" in r.getMessage()]
    assert len(crashes) == 2
    assert crashes[0].exc_info is not None


def test_unsendable_response_gives_500_instead_of_a_hang(
    run: Any, caplog: pytest.LogCaptureFixture
) -> None:
    capture(caplog)

    async def handler(request: Request) -> Response:
        if request.path == "/unicode":
            return Response.json({}, headers=[("x-name", "名前")])
        return Response.json({}, headers=[("x-evil", "a\r\nset-cookie: b")])

    async def main() -> None:
        async with serve(handler) as (_, port):
            c = await Client.connect(port)
            for path in ("/unicode", "/split"):
                r = await c.request("GET", path)
                assert r.status == 500
                assert "set-cookie" not in r.headers
            c.close()

    run(main())
    assert any("event=response_failed" in r.getMessage() for r in caplog.records)


def test_handler_returning_nothing_gives_500(run: Any) -> None:
    async def nothing(request: Request) -> None:
        return None

    async def main() -> None:
        async with serve(nothing) as (_, port):
            c = await Client.connect(port)
            r = await c.request("GET", "/")
            assert r.status == 500
            assert r.json() == {"error": "no response"}
            c.close()

    run(main())


def test_handler_that_streams_then_crashes_aborts_the_connection(
    run: Any, caplog: pytest.LogCaptureFixture
) -> None:
    capture(caplog)

    async def handler(request: Request) -> None:
        assert request.stream is not None
        await request.stream.start(200, [(b"content-type", b"text/plain")])
        await request.stream.write(b"partial")
        raise RuntimeError("node exploded")

    async def main() -> None:
        async with serve(handler) as (_, port):
            c = await Client.connect(port)
            await c.send(build("GET", "/"))
            head = await c.reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            data = b""
            with contextlib.suppress(ConnectionError):
                while chunk := await asyncio.wait_for(c.reader.read(65536), 5):
                    data += chunk
            assert b"partial" in data
            assert not data.endswith(b"0\r\n\r\n")  # never a clean end of the chunked body

    run(main())
    assert any("event=handler_crashed" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("leave", ["reset", "half-close"])
def test_client_leaving_cancels_the_handler(run: Any, leave: str) -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()
    gone_callbacks: list[str] = []

    async def handler(request: Request) -> Response:
        assert request.stream is not None
        request.stream.on_client_gone(lambda: gone_callbacks.append("gone"))
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return Response.json({})

    async def main() -> None:
        async with serve(handler) as (server, port):
            c = await Client.connect(port)
            await c.send(build("GET", "/"))
            await asyncio.wait_for(started.wait(), 5)
            if leave == "reset":
                c.abort()
            else:
                c.writer.write_eof()
            await asyncio.wait_for(cancelled.wait(), 5)
            assert gone_callbacks == ["gone"]
            await eventually(lambda: not server.state.connections, message="connection gone")

    run(main())


def test_write_to_a_gone_client_is_not_logged_as_a_crash(
    run: Any, caplog: pytest.LogCaptureFixture
) -> None:
    capture(caplog)
    done = asyncio.Event()

    async def handler(request: Request) -> None:
        stream = request.stream
        assert stream is not None
        await stream.start(200, [])
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            pass  # a careless handler that swallows the cancellation and writes anyway
        try:
            await stream.write(b"too late")
        finally:
            done.set()

    async def main() -> None:
        async with serve(handler) as (_, port):
            c = await Client.connect(port)
            await c.send(build("GET", "/"))
            await c.reader.readuntil(b"\r\n\r\n")
            c.abort()
            await asyncio.wait_for(done.wait(), 5)
            await asyncio.sleep(0)

    run(main())
    assert errors(caplog) == []


# -- graceful shutdown ---------------------------------------------------------------------------


def test_shutdown_lets_an_in_flight_request_finish_within_grace(run: Any) -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def handler(request: Request) -> Response:
        if request.path == "/slow":
            started.set()
            await release.wait()
        return Response.json({"path": request.path})

    async def main() -> None:
        server = HTTPServer(handler, ServerLimits(), error_response)
        _, port = await server.start("127.0.0.1", 0)
        busy = await Client.connect(port)
        idle = await Client.connect(port)
        assert (await idle.request("GET", "/warm")).status == 200
        await busy.send(build("GET", "/slow"))
        await asyncio.wait_for(started.wait(), 5)
        stopping = asyncio.create_task(server.shutdown(30))
        assert await idle.closed()  # idle keep-alive connection: closed at once
        with pytest.raises(OSError):  # no longer accepting
            await Client.connect(port)
        release.set()
        r = await busy.reply()
        assert r.status == 200
        assert r.headers["connection"] == "close"
        assert await busy.closed()
        await asyncio.wait_for(stopping, 5)
        assert not server.state.connections

    run(main())


def test_shutdown_cuts_requests_that_outlive_grace(run: Any) -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def handler(request: Request) -> Response:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return Response.json({})

    async def main() -> None:
        server = HTTPServer(handler, ServerLimits(), error_response)
        _, port = await server.start("127.0.0.1", 0)
        c = await Client.connect(port)
        await c.send(build("GET", "/"))
        await asyncio.wait_for(started.wait(), 5)
        await server.shutdown(0.2)
        assert cancelled.is_set()  # shutdown returns after the cut handler cleaned up
        assert not server.state.connections
        assert await c.closed()

    run(main())


def test_shutdown_lets_a_request_being_received_finish(run: Any) -> None:
    async def main() -> None:
        server = HTTPServer(echo, ServerLimits(), error_response)
        _, port = await server.start("127.0.0.1", 0)
        c = await Client.connect(port)
        await c.send(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nab")
        await eventually(lambda: any(x.request_head for x in server.state.connections))
        stopping = asyncio.create_task(server.shutdown(30))
        await asyncio.sleep(0)
        await c.send(b"cd")
        r = await c.reply()
        assert r.json()["body"] == "abcd"
        assert r.headers["connection"] == "close"
        await asyncio.wait_for(stopping, 5)

    run(main())


# -- access log ----------------------------------------------------------------------------------


def test_access_log_has_one_line_per_request(run: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="routercore.access")

    async def handler(request: Request) -> Response:
        status = int(request.path.strip("/") or 200)
        return Response.json({}, status=status)

    async def main() -> None:
        async with serve(handler) as (_, port):
            c = await Client.connect(port)
            for status in (200, 404, 503):
                assert (await c.request("GET", f"/{status}")).status == status
            c.close()

    run(main())
    lines = [r.getMessage() for r in caplog.records if r.name == "routercore.access"]
    assert len(lines) == 3
    for line, status in zip(lines, (200, 404, 503), strict=True):
        method, path, code, ms, *_ = line.split()
        assert (method, path, code) == ("GET", f"/{status}", str(status))
        assert ms.endswith("ms") and float(ms[:-2]) >= 0


def test_access_log_can_be_switched_off(run: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="routercore.access")

    async def main() -> None:
        async with serve(echo, access_log=False) as (_, port):
            c = await Client.connect(port)
            assert (await c.request("GET", "/")).status == 200
            c.close()

    run(main())
    assert [r for r in caplog.records if r.name == "routercore.access"] == []


def test_access_log_records_a_cancelled_request(run: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="routercore.access")
    started = asyncio.Event()

    async def handler(request: Request) -> Response:
        started.set()
        await asyncio.sleep(30)
        return Response.json({})

    async def main() -> None:
        async with serve(handler) as (server, port):
            c = await Client.connect(port)
            await c.send(build("GET", "/gone"))
            await asyncio.wait_for(started.wait(), 5)
            c.abort()
            await eventually(lambda: not server.state.connections)

    run(main())
    lines = [r.getMessage() for r in caplog.records if r.name == "routercore.access"]
    assert len(lines) == 1
    assert lines[0].startswith("GET /gone 499 ")


# -- framing properties and load ---------------------------------------------------------------


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


def test_many_concurrent_keep_alive_clients(run: Any) -> None:
    async def handler(request: Request) -> Response:
        await asyncio.sleep(0)
        return Response.json({"path": request.path, "body": request.body.decode()})

    async def one(port: int, n: int) -> None:
        c = await Client.connect(port)
        for i in range(5):
            r = await c.request("POST", f"/{n}/{i}", body=f"{n}-{i}".encode())
            assert r.json() == {"path": f"/{n}/{i}", "body": f"{n}-{i}"}
        c.close()

    async def main() -> None:
        async with serve(handler) as (server, port):
            await asyncio.gather(*(one(port, n) for n in range(200)))
            await eventually(lambda: not server.state.connections, message="all closed")

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


# -- the real router ---------------------------------------------------------------------------


def test_real_router_client_disconnect_stops_the_node_generating(
    router_factory: Any, fake_nodes: Any
) -> None:
    """The server cancels the proxy's handler; the proxy then closes its upstream connection."""
    router = router_factory()
    (node,) = join(router, fake_nodes, token_delay=0.2)
    sock = socket.create_connection(("127.0.0.1", router.port), timeout=10)
    body = b'{"model": "llama3", "messages": [{"role": "user", "content": "hi"}], "stream": true}'
    sock.sendall(build("POST", "/api/chat", body, {"Content-Type": "application/json"}))
    got = b""
    while b"\r\n\r\n" not in got or b"\n" not in got.partition(b"\r\n\r\n")[2]:
        got += sock.recv(65536)  # the head and a first NDJSON line
    assert got.startswith(b"HTTP/1.1 200")
    wait_for(lambda: node.snapshot()["in_flight"] == 1, message="node generating")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()  # reset: the client is gone mid-stream
    wait_for(lambda: node.snapshot()["cancelled"] >= 1, message="upstream closed by the router")
    assert node.snapshot()["in_flight"] == 0


def test_real_router_limits_and_error_formats(router_factory: Any) -> None:
    """413 at once from Content-Length and the per-API error shapes, through the real app."""
    router = router_factory(max_body_bytes=1024)

    def ask(data: bytes) -> tuple[int, Any]:
        with socket.create_connection(("127.0.0.1", router.port), timeout=10) as s:
            s.sendall(data)
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += s.recv(65536)
            head, _, rest = buf.partition(b"\r\n\r\n")
            length = int(
                next(
                    line.split(b":")[1]
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
            )
            while len(rest) < length:
                rest += s.recv(65536)
            return int(head.split()[1]), orjson.loads(rest[:length])

    status, payload = ask(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n"
    )
    assert status == 413
    assert payload["error"]["type"] == "invalid_request_error"
    status, payload = ask(b"POST /api/chat HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n")
    assert (status, set(payload)) == (413, {"error"})
    assert isinstance(payload["error"], str)
    status, payload = ask(build("GET", "/no/such/thing"))
    assert status == 404 and isinstance(payload["error"], str)
    status, payload = ask(build("GET", "/v1/nothing"))
    assert status == 404 and payload["error"]["code"] == "not_found"


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
