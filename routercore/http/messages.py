"""What handlers see and return: Request, Response, and the streaming / WebSocket outcomes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl

import orjson

from routercore.errors import ClientError
from routercore.http import json_limits

if TYPE_CHECKING:
    from routercore.http.websocket import WebSocket

Headers = list[tuple[bytes, bytes]]


@dataclass(slots=True)
class Request:
    """A complete request: head plus the (bounded) body, read before the handler runs."""

    method: str
    target: str
    headers: Headers
    body: bytes
    peer: str
    path: str = ""
    query_string: str = ""
    params: dict[str, str] = field(default_factory=dict)
    stream: ResponseStream | None = None
    # Set by the app when it admitted the request from its head (route, origin, credentials),
    # so that dispatch does not judge it twice.
    route: Any = None
    # An allow-listed foreign origin: the answer carries the CORS headers that let it be read.
    cors_origin: str = ""

    def __post_init__(self) -> None:
        path, _, query = self.target.partition("?")
        self.path = path
        self.query_string = query

    def header(self, name: bytes) -> str | None:
        """The first header value with this (lower-case) name, decoded as latin-1."""
        for key, value in self.headers:
            if key == name:
                return value.decode("latin-1")
        return None

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(self.query_string, keep_blank_values=True))

    def json(self) -> Any:
        """The body as JSON, or a ClientError (400) that says what is wrong (json_limits bounds
        what a body may build)."""
        if not self.body:
            raise ClientError("request body is empty; expected a JSON object")
        try:
            return json_limits.loads(self.body)
        except orjson.JSONDecodeError as exc:
            raise ClientError(f"request body is not valid JSON: {exc}") from None

    def json_object(self) -> dict[str, Any]:
        data = self.json()
        if not isinstance(data, dict):
            raise ClientError("request body must be a JSON object")
        return data


@dataclass(slots=True)
class Response:
    """A whole response held in memory (small JSON, static files, errors)."""

    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = "application/json"

    @classmethod
    def json(
        cls, data: Any, status: int = 200, headers: list[tuple[str, str]] | None = None
    ) -> Response:
        return cls(status, orjson.dumps(data), headers or [])


@dataclass(slots=True)
class WebSocketAccept:
    """Returned by a handler to upgrade the connection; the server then runs `session`."""

    session: Callable[[WebSocket], Awaitable[None]]


class ResponseStream(Protocol):
    """The server side of one response, for handlers that stream (the proxy)."""

    @property
    def client_gone(self) -> bool: ...

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None: ...

    async def write(self, data: bytes) -> None: ...

    async def end(self) -> None: ...

    def abort(self) -> None: ...

    def on_client_gone(self, callback: Callable[[], None]) -> None: ...
