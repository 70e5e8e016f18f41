"""The HTTP/1.1 server: the listening socket, one `HTTPConnection` per client, graceful shutdown.

The rooms of `routercore.http` (docs/architecture.md has the map): this listener; the shared
state and limits (state.py); the connection protocol (connection.py); one request/response
cycle (cycle.py) and its response writer (response.py); the flow control the connection shares
with its WebSocket (flow.py); the sans-IO parser (wire.py) and the verdicts on a head
(head_rules.py); the access log (access_log.py). What to answer is decided by the `Dispatch`
callable (app.py).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time

from routercore.http.connection import HTTPConnection
from routercore.http.state import (
    Dispatch,
    ErrorResponder,
    HeadCheck,
    ServerLimits,
    ServerState,
    plain_error,
)

# What callers import from here (service.py, agent/relay.py): the listener and its limits.
__all__ = ["HTTPServer", "ServerLimits"]

log = logging.getLogger("routercore.http.server")


class HTTPServer:
    """Binds a listening socket and tracks connections for graceful shutdown."""

    def __init__(
        self,
        dispatch: Dispatch,
        limits: ServerLimits,
        on_error: ErrorResponder = plain_error,
        head_check: HeadCheck | None = None,
    ) -> None:
        self.state = ServerState(dispatch, limits, on_error, head_check)
        self.server: asyncio.base_events.Server | None = None

    async def start(
        self, host: str, port: int, *, sock: socket.socket | None = None
    ) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        if sock is not None:
            self.server = await loop.create_server(lambda: HTTPConnection(self.state), sock=sock)
        else:
            self.server = await loop.create_server(
                lambda: HTTPConnection(self.state), host, port, reuse_address=True, backlog=2048
            )
        addr = self.server.sockets[0].getsockname()
        return str(addr[0]), int(addr[1])

    async def shutdown(self, grace: float) -> None:
        """Stop accepting; let in-flight requests finish within `grace`; cut the rest."""
        self.state.draining = True
        if self.server is not None:
            self.server.close()
        for conn in list(self.state.connections):
            conn.shutdown()
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and (self.state.connections or self.state.tasks):
            await asyncio.sleep(0.02)
        left = list(self.state.connections)
        if left or self.state.tasks:
            log.warning(
                "event=shutdown_cut connections=%d handlers=%d", len(left), len(self.state.tasks)
            )
        for conn in left:
            conn.abort()
        pending = list(self.state.tasks)
        for task in pending:
            task.cancel()
        if pending:
            # Let the cut handlers run their cleanup (accounting) before the caller moves on.
            await asyncio.wait(pending, timeout=1.0)
        # The last access lines are written before the caller moves on (and the process ends).
        await asyncio.to_thread(self.state.access_log.close)
