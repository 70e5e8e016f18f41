"""Client side of the proxy: keep-alive connection pools per node, a small sans-IO HTTP/1.1
response parser, and a pull-style body reader that pauses the node's socket while the consumer
is not reading.

The parser does only what relaying needs (status, headers, framing); bodies are handed on as
the bytes objects the socket produced whenever framing allows it, never re-parsed or copied.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections import deque

log = logging.getLogger("routercore.http.upstream")

# Bytes buffered from a node before its socket stops being read (until the client drains).
_READ_HIGH_WATER = 64 * 1024
_READ_LOW_WATER = 16 * 1024
MAX_HEAD_BYTES = 64 * 1024
# A field name is a token (RFC 9110); no byte of a head may be a control character other than
# HTAB and the CRLF pairs that end its lines. A node breaking either rule gets a 502 answered
# for it: relaying the field would make the client-side writer refuse the head and drop the
# client connection without an answer.
_FIELD_NAME = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
_CONTROL_BYTE = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # CR and LF: counted
_GOOD_NAMES: set[bytes] = set()  # field names already checked (nodes repeat a few)
_GOOD_NAMES_MAX = 4096

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


class ResponseHead:
    """Status line and headers of a node's response (names lower-case, as sent otherwise)."""

    __slots__ = (
        "chunked",
        "connection_options",
        "content_length",
        "headers",
        "keep_alive",
        "reason",
        "status_code",
    )

    def __init__(
        self,
        status_code: int,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        content_length: int | None,
        chunked: bool,
        keep_alive: bool,
        connection_options: frozenset[bytes] = frozenset(),
    ) -> None:
        self.status_code = status_code
        self.reason = reason
        self.headers = headers
        self.content_length = content_length
        self.chunked = chunked
        self.keep_alive = keep_alive
        # Field names the node's `Connection` lists: hop-by-hop too (RFC 9110 7.6.1).
        self.connection_options = connection_options


class _End:
    """The response is complete (a singleton event)."""

    __slots__ = ()


END = _End()
Event = ResponseHead | bytes | _End

# Parser states.
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILERS, _UNTIL_EOF, _DONE = range(8)


_HTTP1_VERSION_RE = re.compile(rb"HTTP/1\.[0-9]")
_STATUS_CODE_RE = re.compile(rb"[0-9]{3}")
_CHUNK_SIZE_RE = re.compile(rb"[0-9A-Fa-f]{1,16}")


class ProtocolError(Exception):
    """The bytes from the node are not a valid HTTP/1.1 response."""


class ResponseParser:
    """Sans-IO: `feed(bytes)` returns the events it completed (head, body pieces, END)."""

    __slots__ = ("_buf", "_left", "head_request", "reusable", "state")

    def __init__(self, *, head_request: bool = False) -> None:
        self.state = _HEAD
        self._buf = b""
        self._left = 0
        self.head_request = head_request
        self.reusable = False  # set at END: keep-alive and no stray bytes

    def feed(self, data: bytes) -> list[Event]:
        out: list[Event] = []
        if self._buf:
            data = self._buf + data
            self._buf = b""
        while data:
            state = self.state
            if state == _LENGTH:
                left = self._left
                if len(data) <= left:
                    out.append(data)
                    self._left = left - len(data)
                    data = b""
                    if self._left == 0:
                        self._end(out)
                else:
                    out.append(data[:left])
                    data = data[left:]
                    self._left = 0
                    self._end(out)
            elif state == _CHUNK_DATA:
                left = self._left
                if len(data) <= left:
                    out.append(data)
                    self._left = left - len(data)
                    data = b""
                    if self._left == 0:
                        self.state = _CHUNK_CRLF
                else:
                    out.append(data[:left])
                    data = data[left:]
                    self.state = _CHUNK_CRLF
            elif state == _CHUNK_CRLF:
                if len(data) < 2:
                    break
                if data[:2] != b"\r\n":
                    raise ProtocolError("missing CRLF after a chunk")
                data = data[2:]
                self.state = _CHUNK_SIZE
            elif state == _CHUNK_SIZE:
                i = data.find(b"\r\n")
                if i < 0:
                    if len(data) > 1024:
                        raise ProtocolError("chunk size line too long")
                    break
                # chunk-size = 1*HEXDIG, then optional BWS ";" extensions (RFC 9112 7.1); int()
                # alone would also take signs, "_", "0x" and surrounding spaces.
                size_text = data[:i].split(b";", 1)[0].rstrip(b" \t")
                if not _CHUNK_SIZE_RE.fullmatch(size_text):
                    raise ProtocolError(f"bad chunk size {size_text[:20]!r}")
                size = int(size_text, 16)
                data = data[i + 2 :]
                if size == 0:
                    self.state = _TRAILERS
                else:
                    self._left = size
                    self.state = _CHUNK_DATA
            elif state == _TRAILERS:
                i = data.find(b"\r\n")
                if i < 0:
                    if len(data) > MAX_HEAD_BYTES:
                        raise ProtocolError("trailers too long")
                    break
                line, data = data[:i], data[i + 2 :]
                if not line:
                    self._end(out)
            elif state == _UNTIL_EOF:
                out.append(data)
                data = b""
            elif state == _HEAD:
                i = data.find(b"\r\n\r\n")
                if i < 0:
                    if len(data) > MAX_HEAD_BYTES:
                        raise ProtocolError("response head too long")
                    break
                head, data = data[:i], data[i + 4 :]
                self._head(head, out)
            else:  # _DONE: bytes after a complete response
                self.reusable = False
                data = b""
        if data:
            self._buf = data
        return out

    def feed_eof(self) -> list[Event]:
        """The node closed: ends a read-until-close body, else it is an error unless done."""
        if self.state == _UNTIL_EOF:
            out: list[Event] = []
            self._end(out)
            self.reusable = False
            return out
        if self.state != _DONE:
            raise ProtocolError("node closed the connection mid-response")
        return []

    @property
    def done(self) -> bool:
        return self.state == _DONE

    def _end(self, out: list[Event]) -> None:
        self.state = _DONE
        out.append(END)

    def _head(self, head: bytes, out: list[Event]) -> None:
        bad = _CONTROL_BYTE.search(head)
        if bad is not None:
            raise ProtocolError(f"control character {bad[0]!r} in the response head")
        crlf = head.count(b"\r\n")
        if head.count(b"\r") != crlf or head.count(b"\n") != crlf:
            raise ProtocolError("bare CR or LF in the response head")
        lines = head.split(b"\r\n")
        status_line = lines[0]
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not _HTTP1_VERSION_RE.fullmatch(parts[0]):
            raise ProtocolError(f"bad status line {status_line[:40]!r}")
        if not _STATUS_CODE_RE.fullmatch(parts[1]):
            raise ProtocolError(f"bad status code {parts[1][:10]!r}")
        status = int(parts[1])
        if status < 100:
            raise ProtocolError(f"bad status code {status}")
        headers: list[tuple[bytes, bytes]] = []
        length: int | None = None
        chunked = False
        keep_alive = parts[0] == b"HTTP/1.1"
        options: frozenset[bytes] = frozenset()
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or (name not in _GOOD_NAMES and not _good_name(name)):
                raise ProtocolError(f"bad header line {line[:40]!r}")
            name = name.lower()
            value = value.strip()
            headers.append((name, value))
            if name == b"content-length":
                if not value.isdigit() or (length is not None and int(value) != length):
                    raise ProtocolError("bad or conflicting content-length")
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = value.lower().rsplit(b",", 1)[-1].strip() == b"chunked"
                if not chunked:
                    raise ProtocolError(f"unsupported transfer-encoding {value[:20]!r}")
            elif name == b"connection":
                tokens = {t.strip() for t in value.lower().split(b",")}
                options |= tokens
                if b"close" in tokens:
                    keep_alive = False
                elif b"keep-alive" in tokens:
                    keep_alive = True
        if 100 <= status < 200:
            if status == 101:
                raise ProtocolError("node switched protocols")
            return  # informational: the real head follows
        if chunked:
            length = None
        out.append(ResponseHead(status, parts[2] if len(parts) > 2 else b"", headers, length,
                                chunked, keep_alive, options))  # fmt: skip
        self.reusable = keep_alive
        if self.head_request or status in (204, 304) or length == 0:
            self._end(out)
        elif chunked:
            self.state = _CHUNK_SIZE
        elif length is not None:
            self._left = length
            self.state = _LENGTH
        else:
            self.reusable = False
            self.state = _UNTIL_EOF


def _good_name(name: bytes) -> bool:
    if _FIELD_NAME.fullmatch(name) is None:
        return False
    if len(_GOOD_NAMES) >= _GOOD_NAMES_MAX:
        _GOOD_NAMES.clear()
    _GOOD_NAMES.add(name)
    return True


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
        self.timer: asyncio.TimerHandle | None = None
        self.deadline = 0.0
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
            self.error = UpstreamBrokenError(f"node sent invalid HTTP: {exc}")
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

    def _on_timer(self) -> None:
        self.timer = None
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        loop = waiter.get_loop()
        if loop.time() < self.deadline:
            self.timer = loop.call_at(self.deadline, self._on_timer)
        else:
            waiter.set_exception(TimeoutError())

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

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
            # One lazily re-armed timer per connection instead of a timer per wait: a wait
            # only moves the deadline; the timer re-arms itself when it fires early.
            self.deadline = loop.time() + timeout
            if self.timer is None or self.timer.when() > self.deadline:
                if self.timer is not None:
                    self.timer.cancel()
                self.timer = loop.call_at(self.deadline, self._on_timer)
            try:
                await self.waiter
            finally:
                self.waiter = None
        event = events.popleft()
        if type(event) is bytes:
            self.buffered -= len(event)
            if self.paused and self.buffered < _READ_LOW_WATER and self.transport is not None:
                self.paused = False
                self.transport.resume_reading()
        return event

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
                self.buffered -= len(event)
                if self.paused and self.buffered < _READ_LOW_WATER and self.transport:
                    self.paused = False
                    self.transport.resume_reading()
                return event
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
        self._cancel_timer()
        self.buffered = 0
        self.got_bytes = False
        return True

    def close(self) -> None:
        if self.pool is not None:
            self.pool.active.discard(self)
        self._cancel_timer()
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Cut the connection at once: the node sees a reset and stops generating."""
        if self.pool is not None:
            self.pool.active.discard(self)
        self._cancel_timer()
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

    async def acquire(
        self, host: str, port: int, *, fresh: bool = False, tls: ssl.SSLContext | None = None
    ) -> UpstreamConnection:
        """An idle connection to host:port, or a new one (TLS with `tls`, for providers)."""
        key = (host, port) if tls is None else (f"tls:{host}", port)
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
