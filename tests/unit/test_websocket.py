"""WebSocket sessions over real sockets, with a wsproto client, on asyncio and uvloop."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.events import Request as WSRequest

from routercore.http.messages import Request, Response, WebSocketAccept
from routercore.http.websocket import WebSocket, is_upgrade
from tests.support.http_client import Client, build
from tests.support.http_server import LOOPS, capture, errors, make_runner, run_fixture, serve
from tests.support.polling import eventually
from tests.support.ws_client import WSClient

run = run_fixture(LOOPS)


def ws_app(session: Any) -> Any:
    """A dispatch that upgrades /ws and answers plain JSON elsewhere."""

    async def dispatch(request: Request) -> Response | WebSocketAccept:
        if request.path == "/ws":
            if not is_upgrade(request):
                return Response.json({"error": "upgrade required"}, status=426)
            return WebSocketAccept(session)
        return Response.json({"path": request.path})

    return dispatch


async def echo_session(ws: WebSocket) -> None:
    while (text := await ws.receive()) is not None:
        await ws.send_text("echo:" + text)


def test_upgrade_and_echo_text(run: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="routercore.access")

    async def main() -> None:
        async with serve(ws_app(echo_session)) as (_, port):
            c = await WSClient.connect(port)
            for word in ("hello", "wörld ✓", "x" * 100_000):
                c.send(TextMessage(data=word))
                assert await c.text() == "echo:" + word
            c.send(BytesMessage(data=b"bytes too"))
            assert await c.text() == "echo:bytes too"
            c.send(CloseConnection(code=1000))
            event = await c.next_event()
            assert isinstance(event, CloseConnection)
            assert await c.next_event() is None

    run(main())
    lines = [r.getMessage() for r in caplog.records if r.name == "routercore.access"]
    assert len(lines) == 1
    assert lines[0].startswith("GET /ws 101 ")


def test_fragmented_message_is_reassembled(run: Any) -> None:
    async def main() -> None:
        async with serve(ws_app(echo_session)) as (_, port):
            c = await WSClient.connect(port)
            c.send(TextMessage(data="part1-", message_finished=False))
            c.send(TextMessage(data="part2", message_finished=True))
            assert await c.text() == "echo:part1-part2"
            c.send(CloseConnection(code=1000))

    run(main())


def test_binary_message_split_inside_a_character_is_decoded_whole(run: Any) -> None:
    async def main() -> None:
        async with serve(ws_app(echo_session)) as (_, port):
            c = await WSClient.connect(port)
            data = "é✓".encode()
            c.send(BytesMessage(data=data[:1], message_finished=False))
            c.send(BytesMessage(data=data[1:4], message_finished=False))
            c.send(BytesMessage(data=data[4:], message_finished=True))
            assert await c.text() == "echo:é✓"

    run(main())


def test_ping_gets_pong(run: Any) -> None:
    async def main() -> None:
        async with serve(ws_app(echo_session)) as (_, port):
            c = await WSClient.connect(port)
            c.send(Ping(payload=b"are you there"))
            event = await c.next_event()
            assert isinstance(event, Pong)
            assert event.payload == b"are you there"
            c.send(TextMessage(data="still open"))
            assert await c.text() == "echo:still open"

    run(main())


def test_client_close_handshake_ends_the_session(run: Any) -> None:
    ended: list[str | None] = []

    async def session(ws: WebSocket) -> None:
        ended.append(await ws.receive())
        ended.append(await ws.receive())  # stays None after the close

    async def main() -> None:
        async with serve(ws_app(session)) as (server, port):
            c = await WSClient.connect(port)
            c.send(CloseConnection(code=1000, reason="bye"))
            event = await c.next_event()
            assert isinstance(event, CloseConnection)
            assert event.code == 1000
            assert await c.next_event() is None
            await eventually(lambda: not server.state.connections)

    run(main())
    assert ended == [None, None]


def test_server_close_sends_a_close_frame(run: Any) -> None:
    async def session(ws: WebSocket) -> None:
        await ws.send_text("goodbye")
        ws.close(4000)

    async def main() -> None:
        async with serve(ws_app(session)) as (_, port):
            c = await WSClient.connect(port)
            assert await c.text() == "goodbye"
            event = await c.next_event()
            assert isinstance(event, CloseConnection)
            assert event.code == 4000

    run(main())


def test_client_vanishing_gives_none_from_receive(run: Any) -> None:
    got: list[str | None] = []
    done = asyncio.Event()

    async def session(ws: WebSocket) -> None:
        got.append(await ws.receive())
        got.append(await ws.receive())
        done.set()

    async def main() -> None:
        async with serve(ws_app(session)) as (server, port):
            c = await WSClient.connect(port)
            c.send(TextMessage(data="one"))
            await eventually(lambda: got == ["one"])
            c.writer.transport.abort()  # no close frame, no FIN: just gone
            await asyncio.wait_for(done.wait(), 5)
            await eventually(lambda: not server.state.connections)

    run(main())
    assert got == ["one", None]


def test_client_eof_without_close_frame_gives_none(run: Any) -> None:
    got: list[str | None] = []

    async def session(ws: WebSocket) -> None:
        got.append(await ws.receive())

    async def main() -> None:
        async with serve(ws_app(session)) as (_, port):
            c = await WSClient.connect(port)
            c.writer.write_eof()
            await eventually(lambda: got == [None])

    run(main())


def test_sending_to_a_vanished_client_raises_connection_error(run: Any) -> None:
    outcome: list[str] = []

    async def session(ws: WebSocket) -> None:
        await eventually(lambda: ws.closed or ws.conn.closed)
        try:
            await ws.send_text("anyone?")
        except ConnectionError:
            outcome.append("raised")

    async def main() -> None:
        async with serve(ws_app(session)) as (_, port):
            c = await WSClient.connect(port)
            c.writer.transport.abort()
            await eventually(lambda: outcome == ["raised"])

    run(main())


def test_session_crash_is_logged_and_closes_with_1011(
    run: Any, caplog: pytest.LogCaptureFixture
) -> None:
    capture(caplog)

    async def session(ws: WebSocket) -> None:
        raise RuntimeError("session bug")

    async def main() -> None:
        async with serve(ws_app(session)) as (_, port):
            c = await WSClient.connect(port)
            event = await c.next_event()
            assert isinstance(event, CloseConnection)
            assert event.code == 1011

    run(main())
    crashes = [r for r in caplog.records if "event=ws_session_crashed" in r.getMessage()]
    assert len(crashes) == 1
    assert not [r for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.ERROR]


def test_accept_for_a_request_that_is_not_an_upgrade_gets_400(
    run: Any, caplog: pytest.LogCaptureFixture
) -> None:
    capture(caplog)

    async def dispatch(request: Request) -> WebSocketAccept:
        return WebSocketAccept(echo_session)  # careless: accepts without checking

    async def main() -> None:
        async with serve(dispatch) as (_, port):
            c = await Client.connect(port)
            r = await c.request("GET", "/ws")
            assert r.status == 400
            assert "error" in r.json()
            assert await c.closed()
            c = await Client.connect(port)
            upgrade = {"Upgrade": "websocket", "Connection": "Upgrade"}
            await c.send(build("GET", "/ws", headers=upgrade))
            r = await c.reply()
            assert r.status == 400
            assert await c.closed()

    run(main())
    assert errors(caplog) == []


def test_plain_request_on_the_ws_path_gets_the_handlers_answer(run: Any) -> None:
    async def main() -> None:
        async with serve(ws_app(echo_session)) as (_, port):
            c = await Client.connect(port)
            r = await c.request("GET", "/ws")
            assert r.status == 426
            assert (await c.request("GET", "/other")).json() == {"path": "/other"}
            c.close()

    run(main())


# What the client sends -> the close code the server answers with.
CLOSING_MISTAKES: dict[str, tuple[Callable[[WSClient], None], int]] = {
    # an unmasked client frame is a protocol error
    "protocol violation 1002": (lambda c: c.writer.write(b"\x81\x05hello"), 1002),
    "message over the size cap 1009": (
        lambda c: c.send(TextMessage(data="m" * (1024 * 1024 + 10))),
        1009,
    ),
}


@pytest.mark.parametrize(
    ("mistake", "code"), list(CLOSING_MISTAKES.values()), ids=list(CLOSING_MISTAKES)
)
def test_client_mistake_closes_with_its_code(
    run: Any, mistake: Callable[[WSClient], None], code: int
) -> None:
    async def main() -> None:
        async with serve(ws_app(echo_session)) as (_, port):
            c = await WSClient.connect(port)
            mistake(c)
            event = await c.next_event()
            assert isinstance(event, CloseConnection)
            assert event.code == code

    run(main())


def test_shutdown_closes_websockets_at_once_with_1001(run: Any) -> None:
    async def main() -> None:
        async with serve(ws_app(echo_session)) as (server, port):
            c = await WSClient.connect(port)
            c.send(TextMessage(data="hi"))
            assert await c.text() == "echo:hi"
            stopping = asyncio.create_task(server.shutdown(30))
            event = await c.next_event()
            assert isinstance(event, CloseConnection)
            assert event.code == 1001
            await asyncio.wait_for(stopping, 5)  # did not wait for the 30 s grace

    run(main())


def masked_text_frame(text: str) -> bytes:
    """A client text frame built by hand (wsproto will not send before the 101 arrives)."""
    payload = text.encode()
    assert len(payload) < 126
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + masked


def test_frames_sent_with_the_upgrade_request_are_not_lost(run: Any) -> None:
    async def main() -> None:
        async with serve(ws_app(echo_session)) as (_, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            c = WSClient(reader, writer)
            # the upgrade request and a first message in one write
            writer.write(c.ws.send(WSRequest(host="t", target="/ws")) + masked_text_frame("early"))
            event = await c.next_event()
            assert isinstance(event, AcceptConnection)
            assert await c.text() == "echo:early"

    run(main())


def test_shutdown_waits_for_then_cancels_a_session_that_ignores_the_close(run: Any) -> None:
    cancelled = asyncio.Event()

    async def stubborn(ws: WebSocket) -> None:
        try:
            await asyncio.sleep(60)  # never looks at the socket
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def main() -> None:
        async with serve(ws_app(stubborn)) as (server, port):
            c = await WSClient.connect(port)
            await server.shutdown(0.2)
            assert cancelled.is_set()  # shutdown returned only after the session was cut
            event = await c.next_event()
            assert isinstance(event, CloseConnection)
            assert event.code == 1001

    run(main())


def test_real_router_dashboard_feed_over_websocket(router_factory: Any) -> None:
    """The real app's /ws/dashboard upgrades, pushes JSON snapshots and closes cleanly."""
    router = router_factory()

    async def main() -> None:
        c = await WSClient.connect(router.port, "/ws/dashboard")
        snapshot = json.loads(await c.text())
        assert isinstance(snapshot, dict)
        c.send(Ping(payload=b"p"))
        c.send(CloseConnection(code=1000))
        seen: list[Event] = []
        while (event := await c.next_event()) is not None:
            seen.append(event)
        assert any(isinstance(e, CloseConnection) for e in seen)
        await eventually(lambda: router.call(lambda: not router.service.server.state.connections))

    make_runner("asyncio")(main())


def test_shutdown_waits_for_a_session_that_outlives_its_connection(run: Any) -> None:
    finished: list[bool] = []

    async def slow_to_notice(ws: WebSocket) -> None:
        assert await ws.receive() is None
        await asyncio.sleep(0.2)  # cleanup after the client left, e.g. a final write to a store
        finished.append(True)

    async def main() -> None:
        async with serve(ws_app(slow_to_notice)) as (server, port):
            c = await WSClient.connect(port)
            c.send(CloseConnection(code=1000))
            await eventually(lambda: not server.state.connections, message="connection gone")
            await server.shutdown(5)
            assert finished == [True]
            assert not server.state.tasks

    run(main())


def test_a_session_that_reads_late_loses_no_messages(run: Any) -> None:
    go = asyncio.Event()
    got: list[str] = []

    async def late_reader(ws: WebSocket) -> None:
        await go.wait()
        while (text := await ws.receive()) is not None:
            got.append(text)
            if len(got) == 500:
                await ws.send_text("all here")

    async def main() -> None:
        async with serve(ws_app(late_reader)) as (server, port):
            c = await WSClient.connect(port)
            for i in range(500):  # 2 MB; no drain: the client's transport buffers what waits
                c.send(TextMessage(data=f"m{i}" + "x" * 4000))
            conn = next(iter(server.state.connections))
            ws = conn.websocket
            assert ws is not None
            await eventually(lambda: conn.flow.read_paused, message="reading paused")
            # bounded: 64 plus what one socket read (<= 256 KiB) held; the rest waits upstream
            assert ws.inbox.qsize() <= 64 + 256 * 1024 // 4000 + 1
            go.set()
            assert await c.text() == "all here"
            assert got == [f"m{i}" + "x" * 4000 for i in range(500)]

    run(main())


def test_pongs_are_dropped_while_the_client_reads_nothing(run: Any) -> None:
    """A client that pings and never reads cannot grow the write buffer with pongs."""
    sessions: list[WebSocket] = []

    async def flood_target(ws: WebSocket) -> None:
        sessions.append(ws)
        await ws.send_text("x" * (16 * 1024 * 1024))  # fills every buffer on the way
        await ws.receive()

    async def main() -> None:
        async with serve(ws_app(flood_target), write_timeout=30.0) as (server, port):
            c = await WSClient.connect(port)
            ws = (await eventually(lambda: sessions, message="session"))[0]
            conn = next(iter(server.state.connections))
            transport = conn.transport
            assert transport is not None
            high = conn.limits.write_high_water
            await eventually(lambda: transport.get_write_buffer_size() >= high, message="full")
            before = transport.get_write_buffer_size()
            for i in range(20):  # within the control-frame rate
                c.send(Ping(payload=b"%d" % i))
            await eventually(lambda: ws.pongs_dropped == 20, message="20 pongs dropped")
            assert transport.get_write_buffer_size() <= before
            # Reading again: the message arrives whole, with no pong behind it.
            assert len(await c.text()) == 16 * 1024 * 1024
            c.send(Ping(payload=b"now"))
            event = await c.next_event()
            assert isinstance(event, Pong) and event.payload == b"now"

    run(main())


def test_a_ping_flood_closes_with_1008(run: Any) -> None:
    async def main() -> None:
        async with serve(ws_app(echo_session)) as (_, port):
            c = await WSClient.connect(port)
            # 60 pings in one write (so the router reads them all before it closes): the
            # burst allowance is 50.
            c.writer.write(b"".join(c.ws.send(Ping(payload=b"p")) for _ in range(60)))
            events = []
            while (event := await c.next_event()) is not None:
                events.append(event)
            pongs = [e for e in events if isinstance(e, Pong)]
            closes = [e for e in events if isinstance(e, CloseConnection)]
            assert 50 <= len(pongs) < 60
            assert closes and closes[0].code == 1008

    run(main())
