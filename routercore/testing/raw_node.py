"""A node that answers with bytes a test wrote by hand: malformed framing, forged header fields,
or no answer at all. The fake node (fakenode.py) speaks correct HTTP through h11 and cannot.

It runs its own event loop in a background thread and records every request head it read.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

Reply = bytes | Callable[[bytes], bytes] | None  # None: read the request, never answer


class RawNode:
    """Listens on 127.0.0.1; every request on a connection gets `reply` (built from the
    request head when it is a function); `close_after` closes the connection after it."""

    def __init__(self, reply: Reply, *, close_after: bool = True) -> None:
        self.reply = reply
        self.close_after = close_after
        self.heads: list[bytes] = []
        self.open_connections = 0
        self.peak_connections = 0
        self._lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.port = 0

        async def start() -> asyncio.Server:
            server = await asyncio.start_server(self._serve, "127.0.0.1", 0, backlog=4096)
            self.port = server.sockets[0].getsockname()[1]
            return server

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.server = self.loop.run_until_complete(start())
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, name="raw-node", daemon=True)
        self.thread.start()
        ready.wait(10)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self.open_connections += 1
            self.peak_connections = max(self.peak_connections, self.open_connections)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        await reader.readexactly(int(line.split(b":", 1)[1]))
                if self.reply is None:
                    await reader.read()  # hold the connection until the router lets go
                    return
                reply = self.reply if isinstance(self.reply, bytes) else self.reply(head)
                writer.write(reply)
                await writer.drain()
                if self.close_after:
                    return
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            return
        finally:
            with self._lock:
                self.open_connections -= 1
            writer.close()

    def requests_to(self, path: str) -> int:
        prefix = f" {path} ".encode()
        return sum(1 for h in list(self.heads) if prefix in h.split(b"\r\n", 1)[0])

    def close(self) -> None:
        async def stop() -> None:
            self.server.close()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
