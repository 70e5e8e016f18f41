"""HTTP/1.1 server: one asyncio.Protocol per client connection driving a sans-IO `ServerWire`
(wire.py: a fast path for plain requests, h11 for the rest).

The protocol only moves bytes and enforces limits; what to answer is decided by the `Dispatch`
callable (app.py). Handles keep-alive, pipelining (one request at a time, in order),
`Expect: 100-continue`, chunked request bodies, header/body/idle timeouts, a connection cap,
and write flow control (handlers await drain instead of growing the buffer).

A request with a body is judged from its head first (`HeadCheck`: route, origin, credentials):
a refusal is answered at once and the connection closed, so nobody can make the router read
and hold a body it would refuse. Bodies are bounded per request (size, whole-body deadline,
pieces) and together (`max_inflight_body_bytes`); connections per client address are capped.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING

import h11

from routercore.http.messages import Request, Response, WebSocketAccept
from routercore.http.wire import CLOSED, END, NEED_DATA, PAUSED, Head, ServerWire

if TYPE_CHECKING:
    from routercore.http.websocket import WebSocket

log = logging.getLogger("routercore.http.server")
access_log = logging.getLogger("routercore.access")

Dispatch = Callable[[Request], Awaitable["Response | WebSocketAccept | None"]]
ErrorResponder = Callable[[Request | None, int, str], Response]
# Decides from the head alone (body still empty) whether a request with a body may send it:
# None to read the body, or the refusal to answer at once.
HeadCheck = Callable[[Request], "Response | None"]

SERVER_HEADER = (b"server", b"llm-router")
_MAX_PIPELINED_BUFFER = 256 * 1024
# After an error answer we read (and drop) what the client still sends for this long before
# closing, so its kernel does not get a reset that destroys our answer before it is read.
_LINGER_SECONDS = 1.0
_NO_BODY_STATUSES = frozenset({204, 304})
# A chunked body may arrive in this many pieces, plus one per _MIN_PIECE_AVERAGE bytes: each
# chunk costs h11 a few microseconds of Python, so 1-byte chunks would multiply the cost of a
# body by thousands. Honest clients send far larger chunks (and reads are far larger).
_FREE_PIECES = 1024
_MIN_PIECE_AVERAGE = 512


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
        self.connections: set[HTTPConnection] = set()
        self.per_address: dict[str, int] = {}
        self.body_bytes = 0  # request body bytes held by all connections
        # Handler tasks outlive their connection at times (a WebSocket session notices the
        # close only at its next receive): shutdown waits for these, not just the connections.
        self.tasks: set[asyncio.Task[None]] = set()
        self.draining = False


class HTTPConnection(asyncio.Protocol):
    """One client connection. States: reading a head, reading a body, handling, idle."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.limits = state.limits
        self.loop = asyncio.get_running_loop()
        self.wire = ServerWire(self.limits.max_header_bytes, fast=self.limits.fast_path)
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None
        self.request_head: Head | None = None
        # One growing buffer, not a list of pieces: a chunked body of a million 1-byte chunks
        # would otherwise cost ~35 bytes of object overhead per body byte.
        self.body: bytes | bytearray = b""
        self.body_size = 0
        self.body_held = 0  # what this connection counts in state.body_bytes
        self.body_pieces = 0
        self.body_deadline_at = 0.0  # loop time; 0: no body being read
        self.chunked = False
        # The request built at the head (when the head check ran), completed with its body.
        self.pending: Request | None = None
        self.address_counted = False
        self.writable = asyncio.Event()
        self.writable.set()
        self.closed = False
        self.lingering = False
        self.reading_paused = False
        # True while the head deadline runs: from the connection's start for the first request,
        # from the first byte after an idle pause for later ones. Never re-armed per byte.
        self.head_timer_armed = False
        self.bytes_seen_this_cycle = False
        self.upgraded: Callable[[bytes], None] | None = None
        self.websocket: WebSocket | None = None
        self.on_lost: list[Callable[[], None]] = []
        self._force_close = False

    # -- asyncio callbacks -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if peer else ""
        transport.set_write_buffer_limits(high=self.limits.write_high_water)  # type: ignore[attr-defined]
        state = self.state
        if len(state.connections) >= self.limits.max_connections or state.draining:
            self._refuse("draining" if state.draining else "max_connections")
            return
        cap = self.limits.max_connections_per_address
        if cap:
            count = state.per_address.get(self.peer, 0)
            if count >= cap:
                self._refuse("max_connections_per_address")
                return
            state.per_address[self.peer] = count + 1
            self.address_counted = True
        state.connections.add(self)
        self._arm_head_timer()

    def _refuse(self, reason: str) -> None:
        log.warning("event=connection_refused reason=%s peer=%s", reason, self.peer)
        resp = self.state.on_error(None, 503, "too many connections; try again later")
        resp.headers.append(("retry-after", "1"))
        self._write_raw_response(resp)
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upgraded is not None and not self.closed:
            self.upgraded(b"")
        self.closed = True
        self.state.connections.discard(self)
        if self.address_counted:
            self.address_counted = False
            left = self.state.per_address.pop(self.peer, 1) - 1
            if left > 0:
                self.state.per_address[self.peer] = left
        if self.task is None:
            self._drop_body()
        self._cancel_timer()
        self.writable.set()
        if self.task is not None and not self.task.done() and self.upgraded is None:
            # The client is gone: stop working for it (the proxy closes its upstream).
            self.task.cancel()
        callbacks, self.on_lost = self.on_lost, []
        for cb in callbacks:
            try:
                cb()
            except Exception:
                log.exception("event=on_lost_callback_failed")

    def pause_writing(self) -> None:
        self.writable.clear()

    async def drain(self) -> None:
        """Wait while the transport's buffer is over the high-water mark; cut a stalled reader."""
        if not self.writable.is_set():
            try:
                await asyncio.wait_for(self.writable.wait(), self.limits.write_timeout)
            except TimeoutError:
                log.info("event=write_timeout peer=%s", self.peer)
                self.abort()
                raise ConnectionResetError("client stopped reading") from None
        if self.closed and not self.lingering:
            raise ConnectionResetError("client disconnected")

    def resume_writing(self) -> None:
        self.writable.set()

    def eof_received(self) -> bool | None:
        if self.upgraded is not None:
            self.upgraded(b"")
            return None
        if self.lingering or self.closed or self.task is not None:
            # A half-close while we work on its request: treat the client as gone.
            return None
        self.wire.receive_data(b"")
        self._process()
        return None

    def data_received(self, data: bytes) -> None:
        if self.upgraded is not None:
            self.upgraded(data)
            return
        if self.closed:
            return  # lingering after an error answer, or closing: drop it
        try:
            self.wire.receive_data(data)
        except RuntimeError:
            # Data after the peer's EOF: the transport is closing.
            return
        if self.task is not None:
            # Pipelined bytes while a response is in flight: the wire buffers them; bound that.
            if self.wire.buffered > _MAX_PIPELINED_BUFFER and not self.reading_paused:
                self.transport.pause_reading()  # type: ignore[union-attr]
                self.reading_paused = True
            return
        self.bytes_seen_this_cycle = True
        head_deadline_due = not self.head_timer_armed and self.request_head is None
        self._process()
        if (
            head_deadline_due
            and self.request_head is None
            and self.task is None
            and not self.closed
        ):
            # The head is still incomplete: its deadline runs from this first byte. (Armed only
            # now, so a request that arrives whole costs no timer.)
            self._arm_head_timer()

    # -- request reading ---------------------------------------------------------------------

    def _process(self) -> None:
        """Read events; a bug here must cost one connection, not the loop's error handler."""
        try:
            self._pump()
        except Exception:
            log.exception("event=connection_failed peer=%s", self.peer)
            self.abort()

    def _pump(self) -> None:
        """Pull wire events until a whole request is read, more data is needed, or an error."""
        body_progress = False  # body bytes or a new head: the body deadline starts over
        wire = self.wire
        while not self.closed and self.task is None:
            try:
                event = wire.next_event()
            except h11.RemoteProtocolError as exc:
                self._protocol_error(exc)
                return
            if event is NEED_DATA or event is PAUSED:
                break
            if type(event) is Head:
                if not self._on_head(event):
                    return
                body_progress = True
            elif event is END:
                self._start_handler()
                return
            elif event is CLOSED:
                self._close()
                return
            else:
                assert isinstance(event, bytes | bytearray)
                size = len(event)
                self.body_size += size
                if self.body_size > self.limits.max_body_bytes:
                    self._reject_body_too_large()
                    return
                state = self.state
                state.body_bytes += size
                self.body_held += size
                if state.body_bytes > self.limits.max_inflight_body_bytes:
                    self._reject_body_memory_full()
                    return
                if self.chunked:
                    self.body_pieces += 1
                    if self.body_pieces > _FREE_PIECES + self.body_size // _MIN_PIECE_AVERAGE:
                        self._reject_tiny_pieces()
                        return
                if self.body_size == len(event):
                    self.body = event  # the whole body so far: no copy
                else:
                    if type(self.body) is not bytearray:
                        self.body = bytearray(self.body)
                    self.body += event
                body_progress = True
        if body_progress and not self.closed and self.task is None:
            # the body timeout is the longest pause between reads: re-arm once per read, but
            # never past the whole body's deadline
            delay = self.limits.body_timeout
            if self.body_deadline_at:
                left = self.body_deadline_at - self.loop.time()
                if left < delay:
                    delay = max(left, 0.0)
            self._set_timer(delay, self._on_body_timeout)

    def _on_head(self, event: Head) -> bool:
        self.request_head = event
        self.head_timer_armed = False
        self.body = b""
        self.body_size = 0
        # h11 bounds only an *incomplete* head; one that arrives whole in a single read can be
        # larger, so measure it here as well.
        if _head_size(event) > self.limits.max_header_bytes:
            log.info(
                "event=bad_request peer=%s status=431 reason='request head too large'", self.peer
            )
            self._error_and_close(431, "request head is larger than the server accepts")
            return False
        if event.http_version not in (b"1.0", b"1.1"):
            log.info(
                "event=bad_request peer=%s status=505 reason='HTTP version %s'",
                self.peer,
                event.http_version.decode("latin-1"),
            )
            self._error_and_close(505, "only HTTP/1.0 and HTTP/1.1 are supported")
            return False
        names = {name for name, _ in event.headers} if not self.wire.fast else ()
        if b"transfer-encoding" in names and b"content-length" in names:
            # Both framings at once is how request smuggling starts (RFC 9112 6.3): refuse.
            log.info(
                "event=bad_request peer=%s status=400 reason='content-length with "
                "transfer-encoding'",
                self.peer,
            )
            self._error_and_close(
                400, "malformed HTTP request: both Content-Length and Transfer-Encoding"
            )
            return False
        length = event.content_length
        if length is None:
            length = _content_length(event.headers)
        if length is not None and length > self.limits.max_body_bytes:
            self._reject_body_too_large()
            return False
        self.pending = None
        self.body_pieces = 0
        self.body_deadline_at = 0.0
        self.chunked = b"transfer-encoding" in names
        if (length or self.chunked) and not self._admit_body(event, length or 0):
            return False
        if self.state.draining:
            self._force_close = True
        if self.wire.waiting_for_100_continue:
            self._write(self.wire.send_continue())
        return True

    def _admit_body(self, head: Head, length: int) -> bool:
        """Before a body is read: room for it, and the app's verdict on the head alone."""
        state = self.state
        if state.body_bytes + length > self.limits.max_inflight_body_bytes:
            self._reject_body_memory_full()
            return False
        if state.head_check is not None:
            request = _make_request(head, b"", self.peer)
            refusal = state.head_check(request)
            if refusal is not None:
                log.info(
                    "event=refused_before_body peer=%s path=%s status=%s",
                    self.peer,
                    request.path,
                    refusal.status,
                )
                self._answer_and_close(refusal, request)
                return False
            self.pending = request
        self.body_deadline_at = self.loop.time() + self.limits.body_deadline
        return True

    def _start_handler(self) -> None:
        head = self.request_head
        assert head is not None
        self._cancel_timer()
        body = bytes(self.body)
        self.body = b""
        request = self.pending
        if request is None:
            request = _make_request(head, body, self.peer)
        else:
            request.body = body
            self.pending = None
        self.task = task = self.loop.create_task(self._run(request))
        self.state.tasks.add(task)
        task.add_done_callback(self.state.tasks.discard)

    # -- handling ----------------------------------------------------------------------------

    async def _run(self, request: Request) -> None:
        started = time.perf_counter()
        stream = _Stream(self, request)
        request.stream = stream
        try:
            await self._handle(request, stream)
        except asyncio.CancelledError:
            # The client went away, or shutdown cut us: nothing more can reach the client.
            if self.upgraded is None:
                stream.abort()
            if not stream.status:
                stream.status = 499
            raise
        finally:
            self._log_access(request, stream, started)
            self.task = None
            self._release_body()
            request.stream = None  # the pair is a reference cycle: break it here
        if not self.closed:
            self._next_cycle()

    async def _handle(self, request: Request, stream: _Stream) -> None:
        outcome: Response | WebSocketAccept | None
        try:
            outcome = await self.state.dispatch(request)
        except ConnectionError as exc:
            # A write to a client that has gone: not a server fault.
            log.info("event=client_gone path=%s reason=%r", request.path, str(exc))
            stream.abort()
            return
        except Exception:
            log.exception("event=handler_crashed method=%s path=%s", request.method, request.path)
            if stream.started:
                stream.abort()  # half a response is out: cutting is the only honest signal
                return
            outcome = self.state.on_error(request, 500, "internal server error")
        try:
            if isinstance(outcome, WebSocketAccept):
                await self._upgrade(request, stream, outcome)
            elif isinstance(outcome, Response):
                if stream.started:
                    log.error("event=handler_returned_after_streaming path=%s", request.path)
                    stream.abort()
                else:
                    await stream.send_whole(outcome)
            elif not stream.finished and not stream.aborted:
                if stream.started:
                    await stream.end()
                else:
                    await stream.send_whole(self.state.on_error(request, 500, "no response"))
        except ConnectionError:
            stream.abort()
        except Exception:
            # An answer h11 refuses to send (bad header bytes, a 1xx status, ...).
            log.exception("event=response_failed method=%s path=%s", request.method, request.path)
            if stream.head_sent or not self.wire.can_start_response:
                stream.abort()
            else:
                await stream.send_whole(self.state.on_error(request, 500, "internal server error"))

    async def _upgrade(self, request: Request, stream: _Stream, accept: WebSocketAccept) -> None:
        from routercore.http.websocket import WebSocket

        ws = WebSocket(self, request)
        trailing = self.wire.trailing_data()
        try:
            ws.accept_handshake()
        except Exception as exc:
            log.info("event=ws_bad_upgrade peer=%s reason=%r", self.peer, str(exc))
            self._force_close = True
            await stream.send_whole(
                self.state.on_error(request, 400, "not a valid WebSocket upgrade")
            )
            return
        self.upgraded = ws.feed
        self.websocket = ws
        stream.status = 101
        stream.started = stream.finished = True
        self._cancel_timer()
        if self.reading_paused and self.transport is not None:
            self.transport.resume_reading()
            self.reading_paused = False
        if trailing:
            ws.feed(trailing)
        try:
            await accept.session(ws)
        except ConnectionError:
            pass
        except Exception:
            log.exception("event=ws_session_crashed path=%s", request.path)
            ws.close(1011)
        finally:
            ws.close(1001 if self.state.draining else 1000)
            self._close()

    def _next_cycle(self) -> None:
        if not self.wire.start_next_cycle():
            self._close()
            return
        self.request_head = None
        if self.state.draining:
            self._close()
            return
        if self.reading_paused and self.transport is not None:
            self.transport.resume_reading()
            self.reading_paused = False
        self.bytes_seen_this_cycle = bool(self.wire.buffered)
        if self.bytes_seen_this_cycle:
            self._arm_head_timer()
        else:
            self.head_timer_armed = False
            self._set_timer(self.limits.idle_timeout, self._on_idle_timeout)
        self._process()

    # -- errors, timeouts --------------------------------------------------------------------

    def _protocol_error(self, exc: h11.RemoteProtocolError) -> None:
        status = exc.error_status_hint or 400
        log.info("event=bad_request peer=%s status=%s reason=%r", self.peer, status, str(exc))
        self._error_and_close(status, f"malformed HTTP request: {exc}")

    def _reject_body_memory_full(self) -> None:
        log.warning(
            "event=body_memory_full peer=%s held=%d limit=%d",
            self.peer,
            self.state.body_bytes,
            self.limits.max_inflight_body_bytes,
        )
        request = self._partial_request()
        resp = self.state.on_error(request, 503, "the server holds too many request bodies")
        resp.headers.append(("retry-after", "1"))
        self._answer_and_close(resp, request)

    def _reject_tiny_pieces(self) -> None:
        log.info("event=body_too_fragmented peer=%s pieces=%d", self.peer, self.body_pieces)
        self._error_and_close(400, "request body arrives in too many tiny chunks")

    def _reject_body_too_large(self) -> None:
        log.info("event=body_too_large peer=%s limit=%s", self.peer, self.limits.max_body_bytes)
        req = self._partial_request()
        msg = f"request body exceeds the limit of {self.limits.max_body_bytes} bytes"
        self._error_and_close(413, msg, req)

    def _partial_request(self) -> Request | None:
        head = self.request_head
        return None if head is None else _make_request(head, b"", self.peer)

    def _error_and_close(self, status: int, message: str, request: Request | None = None) -> None:
        """Answer `status` with `Connection: close`, then close (after a short linger)."""
        if request is None:
            request = self._partial_request()
        self._answer_and_close(self.state.on_error(request, status, message), request)

    def _answer_and_close(self, resp: Response, request: Request | None) -> None:
        if self.wire.can_start_response:
            wire = self.wire
            try:
                headers = _response_headers(resp, close=True)
                if request is not None and request.cors_origin:
                    headers.extend(cors_headers(request.cors_origin))
                out = wire.send_head(resp.status, headers, _reason(resp.status))
                if request is None or request.method != "HEAD":
                    out += wire.send_data(resp.body)
                self._write(out + wire.send_end())
            except h11.LocalProtocolError:
                self._write_raw_response(resp)
        if request is not None and self.limits.access_log:
            access_log.info(
                "%s %s %s 0.0ms node=- peer=%s",
                request.method,
                request.path,
                resp.status,
                self.peer,
            )
        self._close(linger=True)

    def _arm_head_timer(self) -> None:
        self.head_timer_armed = True
        self._set_timer(self.limits.header_timeout, self._on_head_timeout)

    def _on_head_timeout(self) -> None:
        if self.task is not None or self.closed:
            return
        if not self.bytes_seen_this_cycle and self.request_head is None:
            self._close()  # connected and never said anything: nobody to answer
            return
        log.info("event=header_timeout peer=%s", self.peer)
        self._error_and_close(408, "timed out reading the request head")

    def _on_body_timeout(self) -> None:
        if self.task is None and not self.closed:
            whole = bool(self.body_deadline_at) and self.loop.time() >= self.body_deadline_at
            log.info(
                "event=body_timeout peer=%s reason=%s received=%d",
                self.peer,
                "deadline" if whole else "pause",
                self.body_size,
            )
            self._error_and_close(408, "timed out reading the request body")

    def _on_idle_timeout(self) -> None:
        if self.task is None and not self.closed and not self.head_timer_armed:
            self._close()

    def _set_timer(self, delay: float, callback: Callable[[], None]) -> None:
        self._cancel_timer()
        self.timer = self.loop.call_later(delay, callback)

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    # -- output ------------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if data and self.transport is not None and not self.closed:
            self.transport.write(data)

    def _write_raw_response(self, resp: Response) -> None:
        """For answers outside an h11 cycle (connection refused at the cap)."""
        if self.transport is None:
            return
        lines = [b"HTTP/1.1 %d %s" % (resp.status, _reason(resp.status))]
        for name, value in _response_headers(resp, close=True):
            lines.append(name + b": " + value)
        self.transport.write(b"\r\n".join(lines) + b"\r\n\r\n" + resp.body)

    def _release_body(self) -> None:
        if self.body_held:
            self.state.body_bytes -= self.body_held
            self.body_held = 0

    def _drop_body(self) -> None:
        """The body being read will never be handled: free it and its share of the cap."""
        self.body = b""
        self.pending = None
        self._release_body()

    def _close(self, *, linger: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        self._cancel_timer()
        if self.task is None:
            self._drop_body()
        transport = self.transport
        if transport is None:
            return
        if linger and transport.can_write_eof():
            # Half-close and drain the client's unread bytes for a moment: closing a socket with
            # unread input sends a reset, which can destroy the answer before the client reads it.
            self.lingering = True
            if self.reading_paused:
                transport.resume_reading()
                self.reading_paused = False
            transport.write_eof()
            self.timer = self.loop.call_later(_LINGER_SECONDS, transport.close)
        else:
            transport.close()

    def abort(self) -> None:
        self.closed = True
        self._cancel_timer()
        if self.task is None:
            self._drop_body()
        if self.transport is not None:
            self.transport.abort()

    def _log_access(self, request: Request, stream: _Stream, started: float) -> None:
        if not self.limits.access_log:
            return
        ms = (time.perf_counter() - started) * 1000.0
        access_log.info(
            "%s %s %s %.1fms node=%s peer=%s%s",
            request.method,
            request.path,
            stream.status or "-",
            ms,
            stream.node or "-",
            self.peer,
            " aborted" if stream.aborted else "",
        )

    def shutdown(self) -> None:
        """Close at once when idle; otherwise after the request in flight is answered."""
        self._force_close = True
        if self.lingering and self.transport is not None:
            self.transport.close()  # already answered with an error: stop draining
        elif self.websocket is not None:
            self.websocket.close(1001)
        elif self.task is None and self.request_head is None and not self.bytes_seen_this_cycle:
            self._close()


class _Stream:
    """The ResponseStream handed to handlers: framed by the wire, drain-awaiting writes.

    The head is held back until the first body piece or the end, so a small answer leaves in
    one write (one system call); a handler that starts and then waits gets its head sent at
    the end of the current loop iteration.
    """

    def __init__(self, conn: HTTPConnection, request: Request) -> None:
        self.c = conn
        self.head_request = request.method == "HEAD"
        # For its cors_origin, which the app sets while handling. The request holds this stream
        # too: HTTPConnection._run unlinks the pair when done, so it is freed on the spot
        # instead of being left for the cyclic garbage collector.
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
            self.c.on_lost.append(callback)

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
        if self.c._force_close:
            out.append((b"connection", b"close"))
        if self.request.cors_origin:
            out.extend(cors_headers(self.request.cors_origin))
        self.no_body = self.no_body or status in _NO_BODY_STATUSES
        self._held = self.c.wire.send_head(status, out, _reason(status))
        self.head_sent = True
        self.c.loop.call_soon(self._release_head)

    def _release_head(self) -> None:
        if self._held:
            held, self._held = self._held, b""
            self.c._write(held)

    async def write(self, data: bytes) -> None:
        c = self.c
        if c.closed:
            raise ConnectionResetError("client disconnected")
        if data and not self.no_body:
            framed = c.wire.send_data(data)
            if self._held:
                framed = self._held + framed
                self._held = b""
            c._write(framed)
        if not c.writable.is_set():  # the hot path skips the extra coroutine
            await c.drain()

    async def end(self) -> None:
        if self.c.closed:
            raise ConnectionResetError("client disconnected")
        self.finished = True
        tail = self.c.wire.send_end()
        if self._held:
            tail = self._held + tail
            self._held = b""
        self.c._write(tail)

    def abort(self) -> None:
        """Cut the connection: the only honest signal once a response is half sent."""
        self.aborted = True
        self._held = b""
        self.c.abort()

    async def send_whole(self, resp: Response) -> None:
        c = self.c
        if c.closed:
            return
        no_body = resp.status in _NO_BODY_STATUSES
        headers = _response_headers(resp, close=c._force_close)
        if self.request.cors_origin:
            headers.extend(cors_headers(self.request.cors_origin))
        self.status = resp.status
        for name, value in resp.headers:
            if name.lower() == "x-router-node":
                self.node = value
        self.started = True
        wire = c.wire
        out = wire.send_head(resp.status, headers, _reason(resp.status))
        self.head_sent = True
        if resp.body and not self.head_request and not no_body:
            out += wire.send_data(resp.body)
        self.finished = True
        c._write(out + wire.send_end())
        await c.drain()


def cors_headers(origin: str) -> list[tuple[bytes, bytes]]:
    """What lets a browser page at an allow-listed origin read the answer."""
    return [
        (b"access-control-allow-origin", origin.encode("latin-1")),
        (b"access-control-expose-headers", b"x-router-node, retry-after"),
        (b"vary", b"origin"),
    ]


def _make_request(head: Head, body: bytes, peer: str) -> Request:
    try:
        target = head.target.decode("ascii")
    except UnicodeDecodeError:
        target = head.target.decode("latin-1")
    return Request(
        method=head.method.decode("ascii", "replace"),
        target=target,
        headers=list(head.headers),
        body=body,
        peer=peer,
    )


def _head_size(head: Head) -> int:
    """Bytes of the request line and header lines, as sent (give or take whitespace)."""
    size = len(head.method) + len(head.target) + len(b"  HTTP/1.1\r\n\r\n")
    for name, value in head.headers:
        size += len(name) + len(value) + 4
    return size


def _response_headers(resp: Response, *, close: bool) -> list[tuple[bytes, bytes]]:
    headers = [SERVER_HEADER, (b"content-type", resp.content_type.encode("latin-1"))]
    if resp.status not in _NO_BODY_STATUSES:
        headers.append((b"content-length", str(len(resp.body)).encode()))
    for name, value in resp.headers:
        headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    if close:
        headers.append((b"connection", b"close"))
    return headers


def _content_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _reason(status: int) -> bytes:
    reason = _REASONS.get(status)
    if reason is None:
        try:
            reason = HTTPStatus(status).phrase.encode()
        except ValueError:
            reason = b"Unknown"
    return reason


_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}


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
