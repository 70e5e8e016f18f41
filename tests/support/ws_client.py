"""A WebSocket client for server tests: wsproto over asyncio streams."""

from __future__ import annotations

import asyncio

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Event, TextMessage
from wsproto.events import Request as WSRequest


class WSClient:
    """A wsproto client over asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.pending: list[Event] = []

    @classmethod
    async def connect(cls, port: int, path: str = "/ws") -> WSClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        c = cls(reader, writer)
        c.send(WSRequest(host="127.0.0.1", target=path))
        event = await c.next_event()
        assert isinstance(event, AcceptConnection), event
        return c

    def send(self, event: Event) -> None:
        self.writer.write(self.ws.send(event))

    async def next_event(self, timeout: float = 5.0) -> Event | None:
        """The next event, or None once the server closed the TCP connection."""
        while not self.pending:
            try:
                data = await asyncio.wait_for(self.reader.read(65536), timeout)
            except ConnectionError:
                data = b""
            if not data:
                return None
            self.ws.receive_data(data)
            self.pending.extend(self.ws.events())
        return self.pending.pop(0)

    async def text(self) -> str:
        """One whole text message (wsproto hands big ones over in pieces)."""
        parts = []
        while True:
            event = await self.next_event()
            assert isinstance(event, TextMessage), event
            parts.append(event.data)
            if event.message_finished:
                return "".join(parts)
