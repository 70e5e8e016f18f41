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
from typing import TYPE_CHECKING

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

from routercore.http.messages import Request

if TYPE_CHECKING:
    from routercore.http.server import HTTPConnection

log = logging.getLogger("routercore.http.websocket")

_MAX_MESSAGE = 1024 * 1024
_MAX_QUEUED = 64
CONTROL_RATE = 10.0
CONTROL_BURST = 50


def is_upgrade(request: Request) -> bool:
    upgrade = (request.header(b"upgrade") or "").lower()
    return request.method == "GET" and upgrade == "websocket"


class WebSocket:
    """A server-side WebSocket: `send_text`, `receive` (None once closed), `close`."""

    def __init__(self, conn: HTTPConnection, request: Request) -> None:
        self.conn = conn
        self.request = request
        self.ws = WSConnection(ConnectionType.SERVER)
        # Unbounded queue, bounded by flow control: past _MAX_QUEUED unread messages the
        # transport stops reading (TCP pushes back on the client) until the session catches up.
        self.inbox: asyncio.Queue[str | None] = asyncio.Queue()
        self.reading_paused = False
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
                transport = self.conn.transport
                if self.inbox.qsize() >= _MAX_QUEUED and not self.reading_paused and transport:
                    transport.pause_reading()
                    self.reading_paused = True
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
        transport = self.conn.transport
        if transport is None:
            return
        if transport.get_write_buffer_size() >= self.conn.limits.write_high_water:
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
        transport = self.conn.transport
        if self.reading_paused and self.inbox.qsize() <= _MAX_QUEUED // 2 and transport:
            self.reading_paused = False
            if not self.conn.closed:
                transport.resume_reading()
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
            self.conn._close()

    def _write(self, data: bytes) -> None:
        if data and self.conn.transport is not None and not self.conn.closed:
            self.conn.transport.write(data)
