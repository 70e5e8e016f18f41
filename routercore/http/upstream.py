"""Client side of the proxy: keep-alive connection pools per node, and a pull-style body reader
that pauses the node's socket while the consumer is not reading. The bytes are parsed by the
sans-IO `response_parser.ResponseParser`; this module owns the sockets, timers and back-pressure.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from dataclasses import dataclass
from typing import Any

import orjson

from routercore.http.deadline import Deadline
from routercore.http.response_parser import END, Event, ProtocolError, ResponseHead, ResponseParser

log = logging.getLogger("routercore.http.upstream")

# Bytes buffered from a node before its socket stops being read (until the client drains).
_READ_HIGH_WATER = 64 * 1024
_READ_LOW_WATER = 16 * 1024


class UpstreamConnectError(ConnectionError):
    """Could not open a connection to the node (refused, unreachable, connect timeout)."""


class UpstreamBrokenError(ConnectionError):
    """The node closed, reset or sent something that is not HTTP."""


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection to a node. Not shared: one request at a time."""

    def __init__(self, key: tuple[str, int]) -> None:
        self.key = key
        self.parser = ResponseParser()
        self.transport: asyncio.Transport | None = None
        self.events: deque[Event] = deque()
        self.buffered = 0
        self.error: Exception | None = None
        self.waiter: asyncio.Future[None] | None = None
        # The wait for the node's next bytes: one deadline, kept armed across requests.
        self.deadline: Deadline | None = None
        self.closed = False
        self.paused = False
        self.reused = False
        self.got_bytes = False
        self.pool: UpstreamPool | None = None

    # -- asyncio callbacks -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.error is None:
            try:
                self._add(self.parser.feed_eof())
            except ProtocolError:
                self.error = UpstreamBrokenError(f"node closed the connection ({exc or 'EOF'})")
        self._wake()

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        if self.error is not None:
            return
        try:
            events = self.parser.feed(data)
        except ProtocolError as exc:
            # The cause tells a node that is not HTTP from one that closed (health probes).
            self.error = UpstreamBrokenError(f"node sent invalid HTTP: {exc}")
            self.error.__cause__ = exc
            self._wake()
            return
        if events:
            self._add(events)
            if self.buffered > _READ_HIGH_WATER and not self.paused and self.transport:
                self.transport.pause_reading()
                self.paused = True
            self._wake()

    def eof_received(self) -> bool | None:
        return None

    # -- events ------------------------------------------------------------------------------

    def _add(self, events: list[Event]) -> None:
        for event in events:
            if type(event) is bytes:
                self.buffered += len(event)
        self.events.extend(events)

    def _on_timeout(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(TimeoutError())

    def _stop_timer(self) -> None:
        if self.deadline is not None:
            self.deadline.stop()

    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def _next(self, timeout: float) -> Event:
        events = self.events
        while not events:
            if self.error is not None:
                raise self.error
            if self.closed:
                raise UpstreamBrokenError("node closed the connection")
            loop = asyncio.get_running_loop()
            self.waiter = loop.create_future()
            deadline = self.deadline
            if deadline is None:
                deadline = self.deadline = Deadline(loop)
            deadline.set(timeout, self._on_timeout)
            try:
                await self.waiter
            finally:
                self.waiter = None
                deadline.cancel()
        event = events.popleft()
        if type(event) is bytes:
            self._taken(event)
        return event

    def _taken(self, piece: bytes) -> None:
        """A body piece left the buffer: read the node again once the buffer runs low."""
        self.buffered -= len(piece)
        if self.paused and self.buffered < _READ_LOW_WATER and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    # -- request/response --------------------------------------------------------------------

    def send_request(
        self, method: str, target: str, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> None:
        """Write the request in one go; a body without a content-length header gets one."""
        if self.closed or self.transport is None or self.transport.is_closing():
            raise UpstreamBrokenError("connection to the node is closed")
        parts = [f"{method} {target} HTTP/1.1\r\n".encode("latin-1")]
        has_length = False
        for name, value in headers:
            if name == b"content-length":
                has_length = True
            parts += (name, b": ", value, b"\r\n")
        if body and not has_length:
            parts.append(b"content-length: %d\r\n" % len(body))
        parts.append(b"\r\n")
        if body:
            parts.append(body)
        self.parser.head_request = method == "HEAD"
        try:
            self.transport.write(b"".join(parts))
        except RuntimeError as exc:  # uvloop: the transport closed under us
            raise UpstreamBrokenError(f"cannot write to the node: {exc}") from None

    async def read_head(self, timeout: float) -> ResponseHead:
        event = await self._next(timeout)
        if type(event) is not ResponseHead:
            raise UpstreamBrokenError("node sent a body before a response head")
        return event

    async def read_body(self, timeout: float) -> bytes | None:
        """Next body piece as the node sent it, or None at the end of the response."""
        events = self.events
        if events:  # fast path: no coroutine machinery beyond this frame
            event = events[0]
            if type(event) is bytes:
                events.popleft()
                self._taken(event)
                return event
            if event is END:
                events.popleft()
                return None
        event = await self._next(timeout)
        if type(event) is bytes:
            return event
        if event is END:
            return None
        raise UpstreamBrokenError("unexpected event in response body")

    def reusable(self) -> bool:
        if self.closed or self.error is not None or self.events:
            return False
        parser = self.parser
        if not parser.done or not parser.reusable:
            return False
        self.parser = ResponseParser()
        self.buffered = 0
        self.got_bytes = False
        return True

    def close(self) -> None:
        if self.pool is not None:
            self.pool.active.discard(self)
        self._stop_timer()
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Cut the connection at once: the node sees a reset and stops generating."""
        if self.pool is not None:
            self.pool.active.discard(self)
        self._stop_timer()
        self.closed = True
        if self.error is None:
            self.error = UpstreamBrokenError("aborted")
        if self.transport is not None:
            self.transport.abort()
        self._wake()


@dataclass(slots=True)
class UpstreamRequest:
    """What to send a node (or a provider, or the relay's runtime): where, and the request;
    a body without a content-length header gets one. Not frozen: one is built per proxied
    request, and a frozen dataclass's __init__ costs four times more (nothing changes it)."""

    host: str
    port: int
    method: str
    target: str
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""


class UpstreamPool:
    """Idle keep-alive connections per (host, port), at most `max_idle` each."""

    def __init__(self, *, connect_timeout: float, max_idle: int) -> None:
        self.connect_timeout = connect_timeout
        self.max_idle = max_idle
        self.idle: dict[tuple[str, int], list[UpstreamConnection]] = {}
        self.active: set[UpstreamConnection] = set()
        self.opened = 0

    async def acquire(
        self, host: str, port: int, *, fresh: bool = False, tls: ssl.SSLContext | None = None
    ) -> UpstreamConnection:
        """An idle connection to host:port, or a new one (TLS with `tls`, for providers)."""
        key = (host, port) if tls is None else (f"tls:{host}", port)
        if not fresh:
            conn = self._take_idle(key)
            if conn is not None:
                return conn
        loop = asyncio.get_running_loop()
        try:
            _, proto = await asyncio.wait_for(
                loop.create_connection(
                    lambda: self._new(key),
                    host,
                    port,
                    ssl=tls,
                    server_hostname=host if tls is not None else None,
                ),
                self.connect_timeout,
            )
        except TimeoutError:
            raise UpstreamConnectError(f"connect timeout after {self.connect_timeout:g}s") from None
        except ConnectionRefusedError:
            raise UpstreamConnectError("connect refused") from None
        except ssl.SSLError as exc:
            raise UpstreamConnectError(f"TLS failed: {exc.reason or exc}") from None
        except OSError as exc:
            raise UpstreamConnectError(f"connect failed: {exc.strerror or exc}") from None
        self.opened += 1
        self.active.add(proto)
        return proto

    async def request(
        self,
        req: UpstreamRequest,
        *,
        timeout: float,
        fresh: bool = False,
        tls: ssl.SSLContext | None = None,
    ) -> tuple[UpstreamConnection, ResponseHead]:
        """Send a request and wait for the answer's head (at most `timeout`); the caller reads
        the body and releases or aborts the connection. A pooled connection the node closed
        while it sat idle gets one silent retry on a new one: nothing was lost with it.

        Raises UpstreamConnectError (not connected), UpstreamBrokenError or TimeoutError;
        on any failure or cancellation the connection is cut.
        """
        while True:
            # An idle connection without a coroutine: the common case on a busy router.
            conn = None if fresh or tls is not None else self._take_idle((req.host, req.port))
            if conn is None:
                conn = await self.acquire(req.host, req.port, fresh=fresh, tls=tls)
            try:
                conn.send_request(req.method, req.target, req.headers, req.body)
                return conn, await conn.read_head(timeout)
            except UpstreamBrokenError:
                conn.abort()
                if conn.reused and not conn.got_bytes and not fresh:
                    fresh = True  # the node closed an idle keep-alive socket: not a failure
                    continue
                raise
            except BaseException:
                conn.abort()
                raise

    async def fetch(
        self, req: UpstreamRequest, *, timeout: float, max_body: int | None, fresh: bool = False
    ) -> tuple[ResponseHead, bytes]:
        """`request` plus the whole body, for the router's own questions to a node (fan-out
        GETs, probes, a runtime's API), not for relaying: a ConnectionError past `max_body`
        bytes; `max_body=None` asks for the head only (the body is not read, the connection
        is closed). `fresh` opens a new connection and closes it afterwards, for rare requests
        where an idle one would only go stale; otherwise a cleanly ended answer leaves its
        connection to the pool. Raises what `request` raises; cuts the connection on failure.
        """
        conn, head = await self.request(req, timeout=timeout, fresh=fresh)
        pieces: list[bytes] = []
        try:
            if max_body is not None:
                size = 0
                while (piece := await conn.read_body(timeout)) is not None:
                    pieces.append(piece)
                    size += len(piece)
                    if size > max_body:
                        raise ConnectionError("answer too large")
        except BaseException:
            conn.abort()
            raise
        if fresh or max_body is None:
            conn.close()
        else:
            self.release(conn)
        return head, b"".join(pieces)

    async def get_json(self, req: UpstreamRequest, *, timeout: float, max_body: int) -> Any:
        """A small JSON document: the parsed body of a 200 answer, None for any other status.
        Raises what `fetch` raises, and orjson.JSONDecodeError for a body not JSON."""
        head, body = await self.fetch(req, timeout=timeout, max_body=max_body)
        if head.status_code != 200:
            return None
        return orjson.loads(body)

    def _take_idle(self, key: tuple[str, int]) -> UpstreamConnection | None:
        """The most recently used idle connection to `key` still open and silent, or None."""
        idle = self.idle.get(key)
        while idle:
            conn = idle.pop()
            if not conn.closed and not conn.got_bytes:
                conn.reused = True
                self.active.add(conn)
                return conn
            conn.close()
        return None

    def _new(self, key: tuple[str, int]) -> UpstreamConnection:
        conn = UpstreamConnection(key)
        conn.pool = self
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        """Keep the connection for the next request if its response ended cleanly."""
        self.active.discard(conn)
        if not conn.reusable():
            conn.close()
            return
        idle = self.idle.setdefault(conn.key, [])
        if len(idle) >= self.max_idle:
            conn.close()
            return
        idle.append(conn)

    def drop(self, host: str, port: int) -> None:
        for conn in self.idle.pop((host, port), []):
            conn.close()

    def close(self) -> None:
        for conns in self.idle.values():
            for conn in conns:
                conn.close()
        self.idle.clear()

    def idle_count(self) -> int:
        return sum(len(c) for c in self.idle.values())
