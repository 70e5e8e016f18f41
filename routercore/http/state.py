"""What every connection of one server shares: the limits, the app's callables, the live set.

Apart from the listener (server.py) so that a connection (connection.py) can depend on it
without depending on the server that creates connections: the modules depend one way only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from routercore.http.access_log import AccessLog
from routercore.http.messages import Request, Response, WebSocketAccept

Dispatch = Callable[[Request], Awaitable["Response | WebSocketAccept | None"]]
ErrorResponder = Callable[[Request | None, int, str], Response]
# Decides from the head alone (body still empty) whether a request with a body may send it:
# None to read the body, or the refusal to answer at once.
HeadCheck = Callable[[Request], "Response | None"]


@dataclass(frozen=True)
class ServerLimits:
    max_header_bytes: int = 64 * 1024
    max_body_bytes: int = 32 * 1024 * 1024
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    idle_timeout: float = 75.0
    max_connections: int = 10000
    write_high_water: int = 256 * 1024
    access_log: bool = True
    # A client that takes nothing from a full write buffer for this long is cut (slow-read).
    write_timeout: float = 60.0
    # Plain requests skip h11 (wire.py); False sends every request through h11.
    fast_path: bool = True
    # The whole body must arrive within this (body_timeout alone bounds only each pause).
    body_deadline: float = 120.0
    # Body bytes held by all connections together; past it new bodies get 503.
    max_inflight_body_bytes: int = 256 * 1024 * 1024
    # Connections at once from one client address; 0: no cap.
    max_connections_per_address: int = 0


def plain_error(_request: Request | None, status: int, message: str) -> Response:
    """Default error body when the app has not said how (before routing is known)."""
    return Response.json({"error": message}, status=status)


class LiveConnection(Protocol):
    """What the server does to a connection it tracks: stop it gently, or cut it."""

    def shutdown(self) -> None: ...

    def abort(self) -> None: ...


class ServerState:
    """What all connections of one server share: limits, the app, the live connection set."""

    def __init__(
        self,
        dispatch: Dispatch,
        limits: ServerLimits,
        on_error: ErrorResponder,
        head_check: HeadCheck | None = None,
    ) -> None:
        self.dispatch = dispatch
        self.limits = limits
        self.on_error = on_error
        self.head_check = head_check
        self.access_log = AccessLog(limits.access_log)
        self.connections: set[LiveConnection] = set()
        self.per_address: dict[str, int] = {}
        self.body_bytes = 0  # request body bytes held by all connections
        # Handler tasks outlive their connection at times (a WebSocket session notices the
        # close only at its next receive): shutdown waits for these, not just the connections.
        self.tasks: set[asyncio.Task[None]] = set()
        self.draining = False
