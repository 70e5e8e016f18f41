"""Each ServerLimits field over real sockets, on both loops and both wire paths (fast, h11).

Timeouts are configured small and asserted as "eventually closed", never timed.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import pytest

from routercore.http.messages import Request, Response
from routercore.http.server import HTTPServer
from tests.support.http_client import Client, build
from tests.support.http_server import VARIANTS, capture, echo, errors, run_fixture, serve
from tests.support.polling import eventually

run = run_fixture(VARIANTS)


async def trickle(c: Client, pieces: list[bytes], pause: float) -> int:
    """Send `pieces` one by one until done or the server answers/closes; returns how many."""
    for sent, piece in enumerate(pieces):
        if c.reader.at_eof() or c.answer_started():
            return sent
        try:
            await c.send(piece)
        except ConnectionError:
            return sent
        await asyncio.sleep(pause)
    return len(pieces)


# -- head size -----------------------------------------------------------------------------------


def test_head_over_max_header_bytes_sent_slowly_gets_431_and_close(run: Any) -> None:
    async def main() -> None:
        async with serve(echo, max_header_bytes=2048) as (_, port):
            c = await Client.connect(port)
            await c.send(b"GET / HTTP/1.1\r\nHost: t\r\n")
            lines = [b"X-Fill: " + b"a" * 90 + b"\r\n"] * 40  # 4000 bytes, no end of head
            sender = asyncio.create_task(trickle(c, lines, 0.001))
            r = await c.reply()  # may come before all lines are out
            await sender
            assert r.status == 431
            assert r.headers["connection"] == "close"
            assert "error" in r.json()
            assert await c.closed()

    run(main())


def test_whole_head_over_max_header_bytes_in_one_write_gets_431(run: Any) -> None:
    called: list[Request] = []

    async def handler(request: Request) -> Response:
        called.append(request)
        return Response.json({})

    async def main() -> None:
        async with serve(handler, max_header_bytes=2048) as (_, port):
            c = await Client.connect(port)
            await c.send(build("GET", "/", headers={"X-Big": "b" * 8000}))
            r = await c.reply()
            assert r.status == 431
            assert await c.closed()
            assert called == []
            ok = await Client.connect(port)
            assert (await ok.request("GET", "/", headers={"X-Small": "s" * 1000})).status == 200
            ok.close()

    run(main())


# -- body size -----------------------------------------------------------------------------------


# A body over max_body_bytes (1000), however it announces itself: 413 is the first thing on the
# wire (no interim 100 before it), the connection closes, the handler never runs.
BODIES_OVER_THE_LIMIT = {
    # only the head: the answer must not wait for a body that never comes
    "content-length": [
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Length: 1001\r\n\r\n"
    ],
    "content-length with expect 100": [
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n"
    ],
    "chunked, growing past it": [
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n",
        *[b"190\r\n" + b"c" * 400 + b"\r\n"] * 3,  # 3 x 400 bytes > 1000
    ],
}


@pytest.mark.parametrize(
    "pieces", list(BODIES_OVER_THE_LIMIT.values()), ids=list(BODIES_OVER_THE_LIMIT)
)
def test_body_over_the_limit_gets_413_and_close(run: Any, pieces: list[bytes]) -> None:
    called: list[Request] = []

    async def handler(request: Request) -> Response:
        called.append(request)
        return Response.json({})

    async def main() -> None:
        async with serve(handler, max_body_bytes=1000) as (_, port):
            c = await Client.connect(port)
            for piece in pieces:
                await c.send(piece)
            r = await c.reply()
            assert r.status == 413
            assert r.headers["connection"] == "close"
            if b" /v1/" in pieces[0]:
                assert r.json()["error"]["type"] == "invalid_request_error"
            assert await c.closed()
            assert called == []

    run(main())


def test_413_is_readable_while_the_client_keeps_sending_its_body(run: Any) -> None:
    async def main() -> None:
        async with serve(echo, max_body_bytes=1000) as (_, port):
            c = await Client.connect(port)
            big = 2_000_000
            head = f"POST /api/chat HTTP/1.1\r\nHost: t\r\nContent-Length: {big}\r\n\r\n"

            async def pump() -> None:
                c.writer.write(head.encode())
                sent = 0
                try:
                    while sent < big:
                        c.writer.write(b"x" * 65536)
                        await c.writer.drain()
                        sent += 65536
                except ConnectionError:
                    pass

            sender = asyncio.create_task(pump())
            r = await c.reply()
            assert r.status == 413
            assert r.json() == {"error": "request body exceeds the limit of 1000 bytes"}
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            c.abort()

    run(main())


def test_body_at_the_limit_is_accepted(run: Any) -> None:
    async def main() -> None:
        async with serve(echo, max_body_bytes=1000) as (_, port):
            c = await Client.connect(port)
            r = await c.request("POST", "/", body=b"z" * 1000)
            assert r.status == 200
            assert len(r.json()["body"]) == 1000
            c.close()

    run(main())


def test_chunked_body_within_the_limit_with_expect_100_is_accepted(run: Any) -> None:
    async def main() -> None:
        async with serve(echo, max_body_bytes=1000) as (_, port):
            c = await Client.connect(port)
            await c.send(
                b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                b"Expect: 100-continue\r\n\r\n"
            )
            assert (await c.reply()).status == 100
            await c.send(b"3\r\nabc\r\n0\r\n\r\n")
            r = await c.reply()
            assert r.json()["body"] == "abc"
            c.close()

    run(main())


# -- timeouts ------------------------------------------------------------------------------------


def test_slowloris_head_is_cut_with_408_by_an_absolute_deadline(
    run: Any, caplog: pytest.LogCaptureFixture
) -> None:
    capture(caplog)

    async def main() -> None:
        async with serve(echo, header_timeout=0.3) as (_, port):
            c = await Client.connect(port)
            drip = b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"s" * 400
            # one byte every 20 ms, far more often than the timeout: a deadline that restarted
            # per byte would never fire, and the drip would take 8 s to finish
            sender = asyncio.create_task(trickle(c, [bytes([b]) for b in drip], 0.02))
            r = await c.reply(timeout=30)
            assert r.status == 408
            sent = await sender
            assert sent < len(drip), "the answer came only after the whole drip"
            assert await c.closed()

    run(main())
    assert any("event=header_timeout" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("limits", "asks_first"),
    [({"header_timeout": 0.2}, False), ({"idle_timeout": 0.2}, True)],
    ids=["silent, header timeout", "idle keep-alive, idle timeout"],
)
def test_quiet_connection_is_closed_by_its_timeout(
    run: Any, limits: dict[str, float], asks_first: bool
) -> None:
    async def main() -> None:
        async with serve(echo, **limits) as (server, port):
            c = await Client.connect(port)
            if asks_first:
                assert (await c.request("GET", "/")).status == 200
            assert await c.closed()  # nothing (more) was asked, so no answer: just closed
            await eventually(lambda: not server.state.connections)

    run(main())


def test_body_timeout_gets_408_and_close(run: Any, caplog: pytest.LogCaptureFixture) -> None:
    capture(caplog)

    async def main() -> None:
        async with serve(echo, body_timeout=0.2) as (_, port):
            c = await Client.connect(port)
            await c.send(b"POST /api/x HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
            r = await c.reply()
            assert r.status == 408
            assert r.json() == {"error": "timed out reading the request body"}
            assert await c.closed()

    run(main())
    assert any("event=body_timeout" in r.getMessage() for r in caplog.records)


def test_body_arriving_steadily_is_not_cut_by_the_body_timeout(run: Any) -> None:
    async def main() -> None:
        async with serve(echo, body_timeout=0.5) as (_, port):
            c = await Client.connect(port)
            await c.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\n\r\n")
            for part in (b"ab", b"cd", b"ef"):
                await asyncio.sleep(0.05)
                await c.send(part)
            assert (await c.reply()).json()["body"] == "abcdef"
            c.close()

    run(main())


def test_keep_alive_connection_in_use_is_not_closed_by_the_idle_timeout(run: Any) -> None:
    async def main() -> None:
        async with serve(echo, idle_timeout=0.3) as (_, port):
            c = await Client.connect(port)
            for _ in range(6):  # spans twice the idle timeout in all
                assert (await c.request("GET", "/")).status == 200
                await asyncio.sleep(0.1)
            c.close()

    run(main())


# -- connection cap ------------------------------------------------------------------------------


def test_connection_over_the_cap_gets_503_and_close(
    run: Any, caplog: pytest.LogCaptureFixture
) -> None:
    capture(caplog)

    async def main() -> None:
        async with serve(echo, max_connections=2) as (server, port):
            a = await Client.connect(port)
            b = await Client.connect(port)
            assert (await a.request("GET", "/a")).status == 200
            assert (await b.request("GET", "/b")).status == 200
            extra = await Client.connect(port)
            r = await extra.reply()
            assert r.status == 503
            assert r.headers["connection"] == "close"
            assert "error" in r.json()
            assert await extra.closed()
            a.close()
            await eventually(lambda: len(server.state.connections) < 2)
            again = await Client.connect(port)
            assert (await again.request("GET", "/again")).status == 200
            again.close()
            b.close()

    run(main())
    assert any("reason=max_connections" in r.getMessage() for r in caplog.records)


# -- write flow control --------------------------------------------------------------------------

TOTAL = 64 * 1024 * 1024
PIECE = 64 * 1024
HIGH_WATER = 64 * 1024
# What the server promises: a writer goes at most one piece over the high-water mark before it
# waits (plus that piece's chunk framing, and the response head held back for the first piece).
BUFFER_BOUND = HIGH_WATER + PIECE + 1024


def test_streaming_to_a_client_that_does_not_read_awaits_drain(run: Any) -> None:
    progress = {"written": 0, "max_buffer": 0, "done": False, "in_write": False}

    async def flood(request: Request) -> None:
        stream = request.stream
        assert stream is not None
        transport = next(iter(server_ref[0].state.connections)).transport
        assert transport is not None
        await stream.start(200, [(b"content-type", b"application/octet-stream")])
        piece = b"p" * PIECE
        while progress["written"] < TOTAL:
            progress["in_write"] = True
            await stream.write(piece)
            progress["in_write"] = False
            progress["written"] += PIECE
            progress["max_buffer"] = max(progress["max_buffer"], transport.get_write_buffer_size())
        await stream.end()
        progress["done"] = True

    server_ref: list[HTTPServer] = []

    def parked_in_drain(conn: Any) -> bool:
        """The handler waits inside write(), whose only wait is the drain. This test runs on
        the handler's loop, so it sees `in_write` set only while the handler is suspended there
        (a write that does not wait sets it back before anything else runs)."""
        return bool(progress["in_write"]) and conn.flow.write_paused

    async def main() -> None:
        async with serve(flood, write_high_water=HIGH_WATER) as (server, port):
            server_ref.append(server)
            # A bare socket that reads nothing (a StreamReader would buffer megabytes for us).
            loop = asyncio.get_running_loop()
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            sock.setblocking(False)
            await loop.sock_connect(sock, ("127.0.0.1", port))
            await loop.sock_sendall(sock, build("GET", "/flood"))
            conn = await eventually(lambda: next(iter(server.state.connections), None))
            # Wait for the condition itself, not for a quiet moment: the kernel may still grow
            # its socket buffers after the first pause (autotuning) and let the handler go on
            # for a while, but whenever it is parked, the bounds below hold.
            await eventually(lambda: parked_in_drain(conn), 30, "the handler awaits drain")
            assert progress["written"] < TOTAL // 2  # the kernel's buffers hold a few MB at most
            assert conn.transport.get_write_buffer_size() <= BUFFER_BOUND
            assert progress["max_buffer"] <= BUFFER_BOUND
            # now read everything: the handler resumes and finishes
            data = b""
            while b"\r\n\r\n" not in data:
                data += await asyncio.wait_for(loop.sock_recv(sock, 2**20), 10)
            head, _, rest = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            received = len(rest)
            while not progress["done"] or received < TOTAL:
                chunk = await asyncio.wait_for(loop.sock_recv(sock, 2**20), 10)
                if not chunk:
                    break
                received += len(chunk)
            sock.close()
            assert progress["done"]
            assert progress["max_buffer"] <= BUFFER_BOUND

    run(main())


def test_client_that_stops_reading_is_cut_after_the_write_timeout(
    run: Any, caplog: pytest.LogCaptureFixture
) -> None:
    capture(caplog)
    outcome: list[str] = []

    async def flood(request: Request) -> None:
        stream = request.stream
        assert stream is not None
        await stream.start(200, [(b"content-type", b"application/octet-stream")])
        try:
            while True:
                await stream.write(b"f" * PIECE)
        except ConnectionError:
            outcome.append("connection error")
            raise
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    async def main() -> None:
        async with serve(flood, write_high_water=HIGH_WATER, write_timeout=0.3) as (server, port):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
            _reader, writer = await asyncio.open_connection(sock=sock)
            writer.write(build("GET", "/"))
            await writer.drain()
            # never read: the server gives up on us and frees the handler
            await eventually(lambda: outcome, message="handler released")
            await eventually(lambda: not server.state.connections, message="connection cut")
            writer.close()

    run(main())
    assert any("event=write_timeout" in r.getMessage() for r in caplog.records)
    assert errors(caplog) == []


def test_websocket_and_stream_writes_share_the_drain_event(run: Any) -> None:
    """send_whole also waits for drain, so big whole answers to slow readers stay bounded."""
    body = b"w" * (8 * 1024 * 1024)

    async def big(request: Request) -> Response:
        return Response(200, body, content_type="application/octet-stream")

    async def main() -> None:
        async with serve(big, write_high_water=HIGH_WATER) as (_, port):
            c = await Client.connect(port)
            r = await c.request("GET", "/")
            assert r.body == body
            c.close()

    run(main())


def test_pipelined_flood_is_bounded_while_a_request_is_handled(run: Any) -> None:
    release = asyncio.Event()

    async def handler(request: Request) -> Response:
        if request.path == "/slow":
            await release.wait()
        return Response.json({"path": request.path})

    async def main() -> None:
        async with serve(handler) as (server, port):
            c = await Client.connect(port)
            await c.send(build("GET", "/slow"))
            conn = await eventually(lambda: next(iter(server.state.connections), None))
            await eventually(lambda: conn.task is not None)
            burst = build("GET", "/next") * 20000  # ~700 KB of pipelined requests
            c.writer.write(burst)
            await eventually(lambda: conn.flow.read_paused, message="reading paused")
            assert conn.wire.buffered < 2 * 1024 * 1024
            release.set()
            first = await c.reply()
            assert first.json()["path"] == "/slow"
            for _ in range(20000):
                assert (await c.reply()).status == 200
            c.close()

    run(main())


def test_limits_produce_no_error_logs(run: Any, caplog: pytest.LogCaptureFixture) -> None:
    capture(caplog)

    async def main() -> None:
        async with serve(echo, max_header_bytes=1024, max_body_bytes=10, header_timeout=0.2) as (
            _,
            port,
        ):
            c = await Client.connect(port)
            assert (await c.request("POST", "/", body=b"x" * 11)).status == 413
            c = await Client.connect(port)
            assert (await c.request("GET", "/", headers={"X": "y" * 2000})).status == 431
            c = await Client.connect(port)
            await c.send(b"GET / HTTP/1.1\r\n")
            assert (await c.reply()).status == 408

    run(main())
    assert errors(caplog) == []
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r for r in warnings if "shutdown_cut" not in r.getMessage()] == []


def test_body_of_many_tiny_chunks_is_reassembled(run: Any) -> None:
    body = bytes(range(256)) * 4  # 1024 one-byte chunks: within the free allowance

    async def handler(request: Request) -> Response:
        return Response.json({"same": request.body == body, "size": len(request.body)})

    async def main() -> None:
        async with serve(handler, max_body_bytes=len(body)) as (_, port):
            c = await Client.connect(port)
            framed = b"".join(b"1\r\n" + body[i : i + 1] + b"\r\n" for i in range(len(body)))
            await c.send(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
            await c.send(framed + b"0\r\n\r\n")
            assert (await c.reply()).json() == {"same": True, "size": len(body)}
            c.close()

    run(main())
