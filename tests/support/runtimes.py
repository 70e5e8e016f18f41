"""A stand-in runtime for the health probes: it answers one request per connection with a fixed
status and an empty body, then closes (what a probe needs to see "up", nothing more)."""

from __future__ import annotations

import asyncio


async def answering(status: str) -> tuple[asyncio.Server, int]:
    """Start it on 127.0.0.1 in the running loop answering `status` ("404 Not Found"); the
    server (the caller closes it) and its port."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(f"HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    return server, int(server.sockets[0].getsockname()[1])
