"""Writing one answer onto a connection: the response stream handlers get, and the framing.

`ResponseWriter` is the `ResponseStream` of messages.py: it frames through the connection's
sans-IO wire and awaits the shared flow control instead of growing the transport's buffer.
It sees its connection only through `ResponseChannel`, the few things a response needs, so
the connection's own state stays its own. The helpers below also serve the answers the
connection sends outside a handler (errors before the body, the 503 at the connection cap).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from http import HTTPStatus
from typing import Protocol

import h11

from routercore.http.flow import FlowControl
from routercore.http.messages import Request, Response
from routercore.http.wire import ServerWire

SERVER_HEADER = (b"server", b"llm-router")
NO_BODY_STATUSES = frozenset({204, 304})


class ResponseChannel(Protocol):
    """What a response needs from its connection."""

    wire: ServerWire
    flow: FlowControl
    loop: asyncio.AbstractEventLoop
    # The connection ends after this answer (shutdown, or a failed upgrade): say so in it.
    close_after_response: bool

    @property
    def closed(self) -> bool: ...

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def abort(self) -> None: ...

    def on_lost(self, callback: Callable[[], None]) -> None: ...


class ResponseWriter:
    """The ResponseStream handed to handlers: framed by the wire, drain-awaiting writes.

    The head is held back until the first body piece or the end, so a small answer leaves in
    one write (one system call); a handler that starts and then waits gets its head sent at
    the end of the current loop iteration.
    """

    def __init__(self, conn: ResponseChannel, request: Request) -> None:
        self.c = conn
        self.head_request = request.method == "HEAD"
        # For its cors_origin, which the app sets while handling. The request holds this writer
        # too: RequestCycle.run unlinks the pair when done, so it is freed on the spot instead
        # of being left for the cyclic garbage collector.
        self.request = request
        self.started = False
        self.head_sent = False
        self.finished = False
        self.aborted = False
        self.status = 0
        self.node = ""
        self.no_body = self.head_request
        self._held = b""  # the framed head, not written yet

    @property
    def client_gone(self) -> bool:
        return self.c.closed

    def on_client_gone(self, callback: Callable[[], None]) -> None:
        if self.c.closed:
            callback()
        else:
            self.c.on_lost(callback)

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        if self.c.closed:
            raise ConnectionResetError("client disconnected")
        self.started = True
        self.status = status
        out = [SERVER_HEADER]
        for name, value in headers:
            if name == b"x-router-node":
                self.node = value.decode("latin-1")
            out.append((name, value))
        if self.c.close_after_response:
            out.append((b"connection", b"close"))
        if self.request.cors_origin:
            out.extend(cors_headers(self.request.cors_origin))
        self.no_body = self.no_body or status in NO_BODY_STATUSES
        self._held = self.c.wire.send_head(status, out, reason(status))
        self.head_sent = True
        self.c.loop.call_soon(self._release_head)

    def _release_head(self) -> None:
        if self._held:
            held, self._held = self._held, b""
            self.c.write(held)

    async def write(self, data: bytes) -> None:
        c = self.c
        if c.closed:
            raise ConnectionResetError("client disconnected")
        if data and not self.no_body:
            framed = c.wire.send_data(data)
            if self._held:
                framed = self._held + framed
                self._held = b""
            c.write(framed)
        if c.flow.write_paused:  # the hot path skips the extra coroutine
            await c.drain()

    async def end(self) -> None:
        if self.c.closed:
            raise ConnectionResetError("client disconnected")
        self.finished = True
        tail = self.c.wire.send_end()
        if self._held:
            tail = self._held + tail
            self._held = b""
        self.c.write(tail)

    def abort(self) -> None:
        """Cut the connection: the only honest signal once a response is half sent."""
        self.aborted = True
        self._held = b""
        self.c.abort()

    async def send_whole(self, resp: Response) -> None:
        c = self.c
        if c.closed:
            return
        no_body = resp.status in NO_BODY_STATUSES
        headers = response_headers(resp, close=c.close_after_response)
        if self.request.cors_origin:
            headers.extend(cors_headers(self.request.cors_origin))
        self.status = resp.status
        for name, value in resp.headers:
            if name.lower() == "x-router-node":
                self.node = value
        self.started = True
        wire = c.wire
        out = wire.send_head(resp.status, headers, reason(resp.status))
        self.head_sent = True
        if resp.body and not self.head_request and not no_body:
            out += wire.send_data(resp.body)
        self.finished = True
        c.write(out + wire.send_end())
        await c.drain()


def cors_headers(origin: str) -> list[tuple[bytes, bytes]]:
    """What lets a browser page at an allow-listed origin read the answer."""
    return [
        (b"access-control-allow-origin", origin.encode("latin-1")),
        (b"access-control-expose-headers", b"x-router-node, retry-after"),
        (b"vary", b"origin"),
    ]


def response_headers(resp: Response, *, close: bool) -> list[tuple[bytes, bytes]]:
    headers = [SERVER_HEADER, (b"content-type", resp.content_type.encode("latin-1"))]
    if resp.status not in NO_BODY_STATUSES:
        headers.append((b"content-length", str(len(resp.body)).encode()))
    for name, value in resp.headers:
        headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    if close:
        headers.append((b"connection", b"close"))
    return headers


def closing_answer(wire: ServerWire, resp: Response, request: Request | None) -> bytes:
    """A whole answer with `Connection: close`, for errors before any handler ran; raw when
    h11 will not frame it."""
    try:
        headers = response_headers(resp, close=True)
        if request is not None and request.cors_origin:
            headers.extend(cors_headers(request.cors_origin))
        out = wire.send_head(resp.status, headers, reason(resp.status))
        if request is None or request.method != "HEAD":
            out += wire.send_data(resp.body)
        return out + wire.send_end()
    except h11.LocalProtocolError:
        return raw_response(resp)


def raw_response(resp: Response) -> bytes:
    """A whole answer framed without the wire, for outside an HTTP cycle (the connection cap)."""
    lines = [b"HTTP/1.1 %d %s" % (resp.status, reason(resp.status))]
    for name, value in response_headers(resp, close=True):
        lines.append(name + b": " + value)
    return b"\r\n".join(lines) + b"\r\n\r\n" + resp.body


def reason(status: int) -> bytes:
    phrase = _REASONS.get(status)
    if phrase is None:
        try:
            phrase = HTTPStatus(status).phrase.encode()
        except ValueError:
            phrase = b"Unknown"
    return phrase


_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
