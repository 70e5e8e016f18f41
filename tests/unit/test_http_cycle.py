"""One request/response cycle over real sockets (cycle.py, response.py): whole and streamed
answers, HEAD/204/HTTP 1.0 framing, handler failures, a client that leaves, the access log.

Each runs on every server variant, as in test_http_connection.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections import Counter
from typing import Any

import pytest

from routercore.http.messages import Request, Response
from tests.support.http_client import Client, build
from tests.support.http_server import VARIANTS, capture, echo, errors, run_fixture, serve
from tests.support.polling import eventually

run = run_fixture(VARIANTS)


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
