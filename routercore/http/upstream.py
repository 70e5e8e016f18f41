"""Client side of the proxy: keep-alive connection pools per node, h11 response parsing, and
a pull-style body reader that pauses the node's socket while the consumer is not reading."""

from __future__ import annotations

import asyncio
import logging
from collections import deque

import h11

log = logging.getLogger("routercore.http.upstream")

# Bytes buffered from a node before its socket stops being read (until the client drains).
_READ_HIGH_WATER = 64 * 1024
_READ_LOW_WATER = 16 * 1024

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"te",
        b"trailer",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)


class UpstreamConnectError(ConnectionError):
    """Could not open a connection to the node (refused, unreachable, connect timeout)."""


class UpstreamBrokenError(ConnectionError):
    """The node closed, reset or sent something that is not HTTP."""


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection to a node. Not shared: one request at a time."""

    def __init__(self, key: tuple[str, int]) -> None:
        self.key = key
        self.conn = h11.Connection(h11.CLIENT)
        self.transport: asyncio.Transport | None = None
        self.events: deque[h11.Response | h11.Data | h11.EndOfMessage] = deque()
        self.buffered = 0
        self.error: Exception | None = None
        self.waiter: asyncio.Future[None] | None = None
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
                self.conn.receive_data(b"")
                self._pump()
            except Exception:
                pass
            if self.error is None and not self._complete():
                self.error = UpstreamBrokenError(f"node closed the connection ({exc or 'EOF'})")
        self._wake()

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self.conn.receive_data(data)
        except RuntimeError:
            return
        self._pump()
        if self.buffered > _READ_HIGH_WATER and not self.paused and self.transport is not None:
            self.transport.pause_reading()
            self.paused = True
        self._wake()

    def eof_received(self) -> bool | None:
        return None

    # -- parsing -----------------------------------------------------------------------------

    def _pump(self) -> None:
        while self.error is None:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as exc:
                self.error = UpstreamBrokenError(f"node sent invalid HTTP: {exc}")
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.Data):
                self.buffered += len(event.data)
            if isinstance(event, h11.Response | h11.Data | h11.EndOfMessage):
                self.events.append(event)
                if isinstance(event, h11.EndOfMessage):
                    return
            elif isinstance(event, h11.ConnectionClosed):
                return

    def _complete(self) -> bool:
        return bool(self.events) and isinstance(self.events[-1], h11.EndOfMessage)

    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def _next(self, timeout: float) -> h11.Response | h11.Data | h11.EndOfMessage:
        while not self.events:
            if self.error is not None:
                raise self.error
            if self.closed:
                raise UpstreamBrokenError("node closed the connection")
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self.waiter, timeout)
            finally:
                self.waiter = None
        event = self.events.popleft()
        if isinstance(event, h11.Data):
            self.buffered -= len(event.data)
            if self.paused and self.buffered < _READ_LOW_WATER and self.transport is not None:
                self.paused = False
                self.transport.resume_reading()
        return event

    # -- request/response --------------------------------------------------------------------

    def send_request(
        self, method: str, target: str, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> None:
        assert self.transport is not None
        data = self.conn.send(h11.Request(method=method, target=target, headers=headers))
        data += self.conn.send(h11.Data(data=body)) if body else b""
        data += self.conn.send(h11.EndOfMessage())
        self.transport.write(data)

    async def read_head(self, timeout: float) -> h11.Response:
        event = await self._next(timeout)
        if not isinstance(event, h11.Response):
            raise UpstreamBrokenError("node sent a body before a response head")
        return event

    async def read_body(self, timeout: float) -> bytes | None:
        """Next body piece as the node sent it, or None at the end of the response."""
        event = await self._next(timeout)
        if isinstance(event, h11.Data):
            return bytes(event.data)
        if isinstance(event, h11.EndOfMessage):
            return None
        raise UpstreamBrokenError("unexpected event in response body")

    def reusable(self) -> bool:
        if self.closed or self.error is not None:
            return False
        if self.conn.our_state is not h11.DONE or self.conn.their_state is not h11.DONE:
            return False
        try:
            self.conn.start_next_cycle()
        except h11.LocalProtocolError:
            return False
        self.events.clear()
        self.buffered = 0
        self.got_bytes = False
        return True

    def close(self) -> None:
        if self.pool is not None:
            self.pool.active.discard(self)
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Cut the connection at once: the node sees a reset and stops generating."""
        if self.pool is not None:
            self.pool.active.discard(self)
        self.closed = True
        if self.error is None:
            self.error = UpstreamBrokenError("aborted")
        if self.transport is not None:
            self.transport.abort()
        self._wake()


class UpstreamPool:
    """Idle keep-alive connections per (host, port), at most `max_idle` each."""

    def __init__(self, *, connect_timeout: float, max_idle: int) -> None:
        self.connect_timeout = connect_timeout
        self.max_idle = max_idle
        self.idle: dict[tuple[str, int], list[UpstreamConnection]] = {}
        self.active: set[UpstreamConnection] = set()
        self.opened = 0

    async def acquire(self, host: str, port: int, *, fresh: bool = False) -> UpstreamConnection:
        key = (host, port)
        idle = self.idle.get(key)
        while idle and not fresh:
            conn = idle.pop()
            if not conn.closed and not conn.got_bytes:
                conn.reused = True
                self.active.add(conn)
                return conn
            conn.close()
        loop = asyncio.get_running_loop()
        try:
            _, proto = await asyncio.wait_for(
                loop.create_connection(lambda: self._new(key), host, port), self.connect_timeout
            )
        except TimeoutError:
            raise UpstreamConnectError(
                f"connect to {host}:{port} timed out after {self.connect_timeout}s"
            ) from None
        except OSError as exc:
            raise UpstreamConnectError(
                f"connect to {host}:{port} failed: {exc.strerror or exc}"
            ) from None
        self.opened += 1
        self.active.add(proto)
        return proto

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
