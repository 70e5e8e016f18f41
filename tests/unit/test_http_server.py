"""The server over real sockets (server.py): graceful shutdown, many clients at once, and the
real router's app behind it.

Each runs on every server variant, as in test_http_connection.py.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import orjson
import pytest

from routercore.app import error_response
from routercore.http.messages import Request, Response
from routercore.http.server import HTTPServer, ServerLimits
from tests.support.http_client import Client, build
from tests.support.http_server import VARIANTS, echo, run_fixture, serve
from tests.support.polling import eventually, wait_until
from tests.support.routers import join

run = run_fixture(VARIANTS)


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
    wait_until(lambda: node.snapshot()["in_flight"] == 1, message="node generating")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()  # reset: the client is gone mid-stream
    wait_until(lambda: node.snapshot()["cancelled"] >= 1, message="upstream closed by the router")
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
