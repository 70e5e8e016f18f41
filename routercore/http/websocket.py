"""WebSocket over a connection h11 has parsed the upgrade request of (wsproto framing).

Control frames are bounded: a client may send pings and pongs at CONTROL_RATE per second
(bursts of CONTROL_BURST); past that the connection is closed (1008). A pong is written only
while the write buffer is under the server's high-water mark, so a client that pings and never
reads cannot grow the router's memory (the pings it is owed are dropped, which RFC 6455
allows: only the most recent ping needs an answer).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    Pong,
    RejectConnection,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from routercore.http.flow import FlowControl

log = logging.getLogger("routercore.http.websocket")

_MAX_MESSAGE = 1024 * 1024
_MAX_QUEUED = 64
CONTROL_RATE = 10.0
CONTROL_BURST = 50


class UpgradeRequest(Protocol):
    """What the WebSocket reads of the request that asked for it (messages.Request is one).

    A Protocol, not an import of messages.py: messages.py names the WebSocket for handlers, so
    importing it back would make a cycle.
    """

    @property
    def method(self) -> str: ...

    @property
    def target(self) -> str: ...

    @property
    def headers(self) -> list[tuple[bytes, bytes]]: ...

    @property
    def peer(self) -> str: ...

    def header(self, name: bytes) -> str | None: ...


class WebSocketHost(Protocol):
    """The connection handle a WebSocket gets: the few things it does with its socket."""

    peer: str
    flow: FlowControl
    loop: asyncio.AbstractEventLoop

    @property
    def closed(self) -> bool: ...

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def close(self) -> None: ...


def is_upgrade(request: UpgradeRequest) -> bool:
    upgrade = (request.header(b"upgrade") or "").lower()
    return request.method == "GET" and upgrade == "websocket"


class WebSocket:
    """A server-side WebSocket: `send_text`, `receive` (None once closed), `close`."""

    def __init__(self, conn: WebSocketHost, request: UpgradeRequest) -> None:
        self.conn = conn
        self.request = request
        self.ws = WSConnection(ConnectionType.SERVER)
        # Unbounded queue, bounded by flow control: past _MAX_QUEUED unread messages the
        # transport stops reading (TCP pushes back on the client) until the session catches up.
        self.inbox: asyncio.Queue[str | None] = asyncio.Queue()
        self.closed = False
        self._text_parts: list[str | bytes] = []
        self._size = 0
        self._control_budget = float(CONTROL_BURST)
        self._control_at = conn.loop.time()
        self.pongs_dropped = 0

    def accept_handshake(self) -> None:
        """Check the upgrade request and send the 101; raises when it is not a valid upgrade."""
        self.ws.initiate_upgrade_connection(self.request.headers, self.request.target)
        self._write(self.ws.send(AcceptConnection()))

    async def accept(self, trailing: bytes) -> None:
        self.accept_handshake()
        if trailing:
            self.feed(trailing)

    def feed(self, data: bytes) -> None:
        """Bytes from the transport (b"" = EOF)."""
        if self.closed:
            return
        try:
            self.ws.receive_data(data if data else None)
            for event in self.ws.events():
                self._on_event(event)
                if self.closed:
                    break
        except (RemoteProtocolError, LocalProtocolError) as exc:
            log.info("event=ws_protocol_error peer=%s reason=%r", self.conn.peer, str(exc))
            self.close(1002)
            self._finish()

    def _on_event(self, event: object) -> None:
        if isinstance(event, Ping | Pong):
            if not self._control_allowed():
                log.info("event=ws_control_flood peer=%s", self.conn.peer)
                self.close(1008)
                return
            if isinstance(event, Ping):
                self._pong(event)
        elif isinstance(event, CloseConnection):
            try:
                self._write(self.ws.send(event.response()))
            except LocalProtocolError:
                pass
            self._finish()
        elif isinstance(event, TextMessage | BytesMessage) and isinstance(event, Message):
            self._size += len(event.data)
            if self._size > _MAX_MESSAGE:
                self.close(1009)
                return
            self._text_parts.append(event.data)
            if event.message_finished:
                if isinstance(event, BytesMessage):
                    # decode once whole: a multi-byte character may straddle two frames
                    raw = b"".join(p for p in self._text_parts if isinstance(p, bytes))
                    text = raw.decode("utf-8", "replace")
                else:
                    text = "".join(p for p in self._text_parts if isinstance(p, str))
                self._text_parts, self._size = [], 0
                self.inbox.put_nowait(text)
                if self.inbox.qsize() >= _MAX_QUEUED:
                    self.conn.flow.pause_reading()
        elif isinstance(event, RejectConnection):
            self._finish()

    def _control_allowed(self) -> bool:
        """A token bucket: CONTROL_RATE per second, CONTROL_BURST at once."""
        now = self.conn.loop.time()
        budget = self._control_budget + (now - self._control_at) * CONTROL_RATE
        self._control_at = now
        if budget < 1.0:
            self._control_budget = budget
            return False
        self._control_budget = min(budget, CONTROL_BURST) - 1.0
        return True

    def _pong(self, ping: Ping) -> None:
        if self.conn.flow.buffer_full():
            if not self.pongs_dropped:
                log.info("event=ws_pongs_dropped peer=%s reason=client_not_reading", self.conn.peer)
            self.pongs_dropped += 1
            return
        self._write(self.ws.send(ping.response()))

    async def send_text(self, text: str) -> None:
        if self.closed or self.conn.closed:
            raise ConnectionResetError("websocket closed")
        self._write(self.ws.send(TextMessage(data=text)))
        await self.conn.drain()

    async def receive(self) -> str | None:
        """The next text message; None once the connection is closed (and stays None)."""
        if self.closed and self.inbox.empty():
            return None
        item = await self.inbox.get()
        flow = self.conn.flow
        if flow.read_paused and self.inbox.qsize() <= _MAX_QUEUED // 2 and not self.conn.closed:
            flow.resume_reading()
        return item

    def close(self, code: int = 1000) -> None:
        if self.closed:
            return
        try:
            self._write(self.ws.send(CloseConnection(code=code)))
        except LocalProtocolError:
            pass
        self._finish()

    def _finish(self) -> None:
        if not self.closed:
            self.closed = True
            self.inbox.put_nowait(None)
            self.conn.close()

    def _write(self, data: bytes) -> None:
        self.conn.write(data)
