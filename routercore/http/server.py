"""HTTP/1.1 server: one asyncio.Protocol per client connection driving an h11 state machine.

The protocol only moves bytes and enforces limits; what to answer is decided by the `Dispatch`
callable (app.py). Handles keep-alive, pipelining (one request at a time, in order),
`Expect: 100-continue`, chunked request bodies, header/body/idle timeouts, a connection cap,
and write flow control (handlers await drain instead of growing the buffer).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus

import h11

from routercore.http.messages import Request, Response, WebSocketAccept

log = logging.getLogger("routercore.http.server")
access_log = logging.getLogger("routercore.access")

Dispatch = Callable[[Request], Awaitable["Response | WebSocketAccept | None"]]
ErrorResponder = Callable[[Request | None, int, str], Response]

SERVER_HEADER = (b"server", b"llm-router")
_MAX_PIPELINED_BUFFER = 256 * 1024


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


def plain_error(_request: Request | None, status: int, message: str) -> Response:
    """Default error body when the app has not said how (before routing is known)."""
    return Response.json({"error": message}, status=status)


class ServerState:
    """What all connections of one server share: limits, the app, the live connection set."""

    def __init__(self, dispatch: Dispatch, limits: ServerLimits, on_error: ErrorResponder) -> None:
        self.dispatch = dispatch
        self.limits = limits
        self.on_error = on_error
        self.connections: set[HTTPConnection] = set()
        self.draining = False


class HTTPConnection(asyncio.Protocol):
    """One client connection. States: reading a head, reading a body, handling, idle."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.limits = state.limits
        self.loop = asyncio.get_running_loop()
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_header_bytes)
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None
        self.request_head: h11.Request | None = None
        self.body_parts: list[bytes] = []
        self.body_size = 0
        self.writable = asyncio.Event()
        self.writable.set()
        self.closed = False
        self.reading_paused = False
        self.bytes_seen_this_cycle = False
        self.upgraded: Callable[[bytes], None] | None = None
        self.on_lost: list[Callable[[], None]] = []

    # -- asyncio callbacks -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if peer else ""
        transport.set_write_buffer_limits(high=self.limits.write_high_water)
        if len(self.state.connections) >= self.limits.max_connections or self.state.draining:
            log.warning("event=connection_refused reason=max_connections peer=%s", self.peer)
            resp = self.state.on_error(None, 503, "too many connections; try again later")
            self._write_raw_response(resp, close=True)
            transport.close()
            self.closed = True
            return
        self.state.connections.add(self)
        self._set_timer(self.limits.header_timeout, self._on_head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upgraded is not None and not self.closed:
            self.upgraded(b"")
        self.closed = True
        self.state.connections.discard(self)
        self._cancel_timer()
        self.writable.set()
        if self.task is not None and not self.task.done() and self.upgraded is None:
            # The client is gone: stop working for it (the proxy closes its upstream).
            self.task.cancel()
        callbacks, self.on_lost = self.on_lost, []
        for cb in callbacks:
            try:
                cb()
            except Exception:  # noqa: BLE001 - a callback must not break teardown
                log.exception("event=on_lost_callback_failed")

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def eof_received(self) -> bool | None:
        if self.upgraded is not None:
            self.upgraded(b"")
            return None
        if self.task is not None:
            # The client half-closed while we work on its request: treat it as gone.
            return None
        self.conn.receive_data(b"")
        self._process()
        return None

    def data_received(self, data: bytes) -> None:
        if self.upgraded is not None:
            self.upgraded(data)
            return
        if not self.bytes_seen_this_cycle and self.request_head is None and self.task is None:
            self.bytes_seen_this_cycle = True
            self._set_timer(self.limits.header_timeout, self._on_head_timeout)
        try:
            self.conn.receive_data(data)
        except RuntimeError:
            # Data after the connection was marked closed: ignore, the transport is closing.
            return
        if self.task is not None:
            # Pipelined bytes while a response is in flight: h11 buffers them; bound the buffer.
            if len(self.conn.trailing_data[0]) > _MAX_PIPELINED_BUFFER and not self.reading_paused:
                self.transport.pause_reading()  # type: ignore[union-attr]
                self.reading_paused = True
            return
        self._process()

    # -- request reading ---------------------------------------------------------------------

    def _process(self) -> None:
        """Pull h11 events until a whole request is read, more data is needed, or an error."""
        while not self.closed and self.task is None:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as exc:
                self._protocol_error(exc)
                return
            if event is h11.NEED_DATA:
                return
            if event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                if not self._on_head(event):
                    return
            elif isinstance(event, h11.Data):
                self.body_size += len(event.data)
                if self.body_size > self.limits.max_body_bytes:
                    self._reject_body_too_large()
                    return
                self.body_parts.append(event.data)
                self._set_timer(self.limits.body_timeout, self._on_body_timeout)
            elif isinstance(event, h11.EndOfMessage):
                self._start_handler()
                return
            elif isinstance(event, h11.ConnectionClosed):
                self._close()
                return

    def _on_head(self, event: h11.Request) -> bool:
        self.request_head = event
        self.body_parts = []
        self.body_size = 0
        length = _content_length(event.headers)
        if length is not None and length > self.limits.max_body_bytes:
            self._reject_body_too_large()
            return False
        if self.state.draining:
            self.conn_keep_alive_off()
        if self.conn.they_are_waiting_for_100_continue:
            self._send(h11.InformationalResponse(status_code=100, headers=[]))
        self._set_timer(self.limits.body_timeout, self._on_body_timeout)
        return True

    def conn_keep_alive_off(self) -> None:
        # h11 closes after this cycle when our response carries Connection: close.
        self._force_close = True

    _force_close = False

    def _start_handler(self) -> None:
        head = self.request_head
        assert head is not None
        self._cancel_timer()
        body = b"".join(self.body_parts)
        self.body_parts = []
        try:
            target = head.target.decode("ascii")
        except UnicodeDecodeError:
            target = head.target.decode("latin-1")
        request = Request(
            method=head.method.decode("ascii", "replace"),
            target=target,
            headers=list(head.headers),
            body=body,
            peer=self.peer,
        )
        self.task = self.loop.create_task(self._run(request))

    # -- handling ----------------------------------------------------------------------------

    async def _run(self, request: Request) -> None:
        started = time.perf_counter()
        stream = _Stream(self, request)
        request.stream = stream
        outcome: Response | WebSocketAccept | None
        try:
            outcome = await self.state.dispatch(request)
        except asyncio.CancelledError:
            stream.abort()
            raise
        except Exception:  # noqa: BLE001 - never a traceback to a client
            log.exception("event=handler_crashed method=%s path=%s", request.method, request.path)
            outcome = self.state.on_error(request, 500, "internal server error")
        try:
            if isinstance(outcome, WebSocketAccept):
                await self._upgrade(request, outcome)
                return
            if isinstance(outcome, Response):
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
        finally:
            self._log_access(request, stream, started)
            self.task = None
        if not self.closed:
            self._next_cycle()

    async def _upgrade(self, request: Request, accept: WebSocketAccept) -> None:
        from routercore.http.websocket import WebSocket

        ws = WebSocket(self, request)
        self.upgraded = ws.feed
        trailing, _ = self.conn.trailing_data
        self._cancel_timer()
        if self.reading_paused and self.transport is not None:
            self.transport.resume_reading()
        await ws.accept(trailing)
        try:
            await accept.session(ws)
        finally:
            ws.close()
            self._close()

    def _next_cycle(self) -> None:
        if self.conn.our_state is h11.MUST_CLOSE or self.conn.their_state is h11.MUST_CLOSE:
            self._close()
            return
        try:
            self.conn.start_next_cycle()
        except h11.LocalProtocolError:
            self._close()
            return
        self.request_head = None
        self.bytes_seen_this_cycle = bool(self.conn.trailing_data[0])
        if self.state.draining:
            self._close()
            return
        if self.reading_paused and self.transport is not None:
            self.transport.resume_reading()
            self.reading_paused = False
        if self.bytes_seen_this_cycle:
            self._set_timer(self.limits.header_timeout, self._on_head_timeout)
        else:
            self._set_timer(self.limits.idle_timeout, self._on_idle_timeout)
        self._process()

    # -- errors, timeouts --------------------------------------------------------------------

    def _protocol_error(self, exc: h11.RemoteProtocolError) -> None:
        status = exc.error_status_hint or 400
        if "exceeds" in str(exc) or "too long" in str(exc).lower():
            status = 431
        log.info("event=bad_request peer=%s status=%s reason=%r", self.peer, status, str(exc))
        self._error_and_close(status, f"malformed HTTP request: {exc}")

    def _reject_body_too_large(self) -> None:
        log.info("event=body_too_large peer=%s limit=%s", self.peer, self.limits.max_body_bytes)
        req = self._partial_request()
        msg = f"request body exceeds the limit of {self.limits.max_body_bytes} bytes"
        self._error_and_close(413, msg, req)

    def _partial_request(self) -> Request | None:
        head = self.request_head
        if head is None:
            return None
        return Request(head.method.decode("ascii", "replace"), head.target.decode("latin-1"),
                       list(head.headers), b"", self.peer)

    def _error_and_close(self, status: int, message: str, request: Request | None = None) -> None:
        resp = self.state.on_error(request, status, message)
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            try:
                headers = _response_headers(resp, close=True)
                self._send(h11.Response(status_code=resp.status, headers=headers, reason=_reason(resp.status).encode()))
                self._send(h11.Data(data=resp.body))
                self._send(h11.EndOfMessage())
            except h11.LocalProtocolError:
                self._write_raw_response(resp, close=True)
        if request is not None:
            access_log.info("%s %s %s 0 - peer=%s", request.method, request.path, status, self.peer)
        self._close()

    def _on_head_timeout(self) -> None:
        if self.task is not None or self.closed:
            return
        if self.bytes_seen_this_cycle or self.request_head is not None:
            log.info("event=header_timeout peer=%s", self.peer)
            self._error_and_close(408, "timed out reading the request")
        else:
            self._close()

    def _on_body_timeout(self) -> None:
        if self.task is None and not self.closed:
            log.info("event=body_timeout peer=%s", self.peer)
            self._error_and_close(408, "timed out reading the request body", self._partial_request())

    def _on_idle_timeout(self) -> None:
        if self.task is None and not self.closed and not self.bytes_seen_this_cycle:
            self._close()

    def _set_timer(self, delay: float, callback: Callable[[], None]) -> None:
        self._cancel_timer()
        self.timer = self.loop.call_later(delay, callback)

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    # -- output ------------------------------------------------------------------------------

    def _send(self, event: h11._events.Event) -> None:
        data = self.conn.send(event)
        if data and self.transport is not None and not self.closed:
            self.transport.write(data)

    def _write_raw_response(self, resp: Response, *, close: bool) -> None:
        """For answers outside an h11 cycle (connection refused at the cap)."""
        if self.transport is None:
            return
        lines = [f"HTTP/1.1 {resp.status} {_reason(resp.status)}".encode()]
        for name, value in _response_headers(resp, close=close):
            lines.append(name + b": " + value)
        self.transport.write(b"\r\n".join(lines) + b"\r\n\r\n" + resp.body)

    def _close(self) -> None:
        if not self.closed:
            self.closed = True
            self._cancel_timer()
            if self.transport is not None:
                self.transport.close()

    def abort(self) -> None:
        self.closed = True
        self._cancel_timer()
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
        """Close at once when idle; otherwise after the response in flight."""
        if self.task is None:
            self._close()
        else:
            self._force_close = True


class _Stream:
    """The ResponseStream handed to handlers: writes through h11 with drain-awaiting writes."""

    def __init__(self, conn: HTTPConnection, request: Request) -> None:
        self.c = conn
        self.request = request
        self.started = False
        self.finished = False
        self.aborted = False
        self.status = 0
        self.node = ""

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
        self.c._send(h11.Response(status_code=status, headers=out, reason=_reason(status).encode()))

    async def write(self, data: bytes) -> None:
        if self.c.closed:
            raise ConnectionResetError("client disconnected")
        if data:
            self.c._send(h11.Data(data=data))
        if not self.c.writable.is_set():
            await self.c.writable.wait()
            if self.c.closed:
                raise ConnectionResetError("client disconnected")

    async def end(self) -> None:
        if self.c.closed:
            raise ConnectionResetError("client disconnected")
        self.finished = True
        self.c._send(h11.EndOfMessage())

    def abort(self) -> None:
        """Cut the connection: the only honest signal once a response is half sent."""
        self.aborted = True
        self.c.abort()

    async def send_whole(self, resp: Response) -> None:
        if self.c.closed:
            return
        headers = _response_headers(resp, close=self.c._force_close)
        self.status = resp.status
        for name, value in resp.headers:
            if name.lower() == "x-router-node":
                self.node = value
        self.started = True
        self.c._send(h11.Response(status_code=resp.status, headers=headers, reason=_reason(resp.status).encode()))
        if resp.body and self.request.method != "HEAD":
            self.c._send(h11.Data(data=resp.body))
        self.finished = True
        self.c._send(h11.EndOfMessage())
        if not self.c.writable.is_set():
            await self.c.writable.wait()


def _response_headers(resp: Response, *, close: bool) -> list[tuple[bytes, bytes]]:
    headers = [SERVER_HEADER, (b"content-type", resp.content_type.encode("latin-1"))]
    headers.append((b"content-length", str(len(resp.body)).encode()))
    for name, value in resp.headers:
        headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    if close:
        headers.append((b"connection", b"close"))
    return headers


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class HTTPServer:
    """Binds a listening socket and tracks connections for graceful shutdown."""

    def __init__(self, dispatch: Dispatch, limits: ServerLimits, on_error: ErrorResponder = plain_error):
        self.state = ServerState(dispatch, limits, on_error)
        self.server: asyncio.base_events.Server | None = None

    async def start(self, host: str, port: int, *, sock: object | None = None) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        if sock is not None:
            self.server = await loop.create_server(lambda: HTTPConnection(self.state), sock=sock)  # type: ignore[arg-type]
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
        while self.state.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        left = list(self.state.connections)
        if left:
            log.warning("event=shutdown_cut connections=%d", len(left))
        for conn in left:
            if conn.task is not None:
                conn.task.cancel()
            conn.abort()
