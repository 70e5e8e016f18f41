"""The connection protocol: one `asyncio.Protocol` per client connection.

Bytes go into the sans-IO `ServerWire` (wire.py) and come out as heads, body pieces and ends.
This decides what happens next on the connection: keep-alive and pipelining (one request at a
time, in order), `Expect: 100-continue`, the header/body/idle timers, errors answered before
any handler runs, closing with a linger. Each whole request goes to a `RequestCycle`
(cycle.py); the verdicts are `head_rules.judge_head` and `RequestBody` (body.py); pausing is
the one `FlowControl` (flow.py) shared with the cycle and, after an upgrade, the WebSocket.

A request with a body is judged from its head first (`HeadCheck`: route, origin, credentials):
a refusal is answered at once and the connection closed, so nobody can make the router read
and hold a body it would refuse. Bodies are bounded per request (size, whole-body deadline,
pieces) and together (`max_inflight_body_bytes`); connections per client address are capped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import h11

from routercore.http.body import RequestBody
from routercore.http.cycle import RequestCycle, request_from_head
from routercore.http.deadline import Deadline
from routercore.http.flow import FlowControl
from routercore.http.head_rules import Refusal, judge_head
from routercore.http.messages import Request, Response
from routercore.http.response import closing_answer, raw_response
from routercore.http.state import ServerState
from routercore.http.websocket import WebSocket
from routercore.http.wire import CLOSED, END, NEED_DATA, PAUSED, Head, ServerWire

# The server's logger, as before the split: log settings and readers need not know the rooms.
log = logging.getLogger("routercore.http.server")

_MAX_PIPELINED_BUFFER = 256 * 1024
# After an error answer we read (and drop) what the client still sends for this long before
# closing, so its kernel does not get a reset that destroys our answer before it is read.
_LINGER_SECONDS = 1.0


class HTTPConnection(asyncio.Protocol):
    """One client connection. States: reading a head, reading a body, handling, idle;
    after an upgrade its input goes to `websocket`."""

    flow: FlowControl  # set in connection_made, before anything can use it

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.limits = state.limits
        self.loop = asyncio.get_running_loop()
        self.wire = ServerWire(self.limits.max_header_bytes, fast=self.limits.fast_path)
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        # One deadline at a time: head, body, idle or linger.
        self.deadline = Deadline(self.loop)
        self.task: asyncio.Task[None] | None = None
        self.request_head: Head | None = None
        self.body = RequestBody(state)
        # The request built at the head (when the head check ran), completed with its body.
        self.pending: Request | None = None
        self.address_counted = False
        self.closed = False
        self.lingering = False
        # True while the head deadline runs: from the connection's start for the first request,
        # from the first byte after an idle pause for later ones. Never re-armed per byte.
        self.head_timer_armed = False
        self.bytes_seen_this_cycle = False
        self.websocket: WebSocket | None = None
        self._on_lost: list[Callable[[], None]] = []
        # Shutdown, draining or a failed upgrade: the answer in flight says `Connection: close`.
        self.close_after_response = False

    # -- asyncio callbacks -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        self.flow = FlowControl(self.transport, self.limits.write_high_water)  # type: ignore[arg-type]
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if peer else ""
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
        self.closed = True
        if self.transport is not None:
            self.transport.write(raw_response(resp))
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.websocket is not None and not self.closed:
            self.websocket.feed(b"")
        self.closed = True
        self.state.connections.discard(self)
        if self.address_counted:
            self.address_counted = False
            left = self.state.per_address.pop(self.peer, 1) - 1
            if left > 0:
                self.state.per_address[self.peer] = left
        if self.task is None:
            self._drop_body()
        self.deadline.stop()
        self.flow.resume_writing()  # wake any writer: its next write sees the close
        if self.task is not None and not self.task.done() and self.websocket is None:
            # The client is gone: stop working for it (the proxy closes its upstream).
            self.task.cancel()
        callbacks, self._on_lost = self._on_lost, []
        for cb in callbacks:
            try:
                cb()
            except Exception:
                log.exception("event=on_lost_callback_failed")

    def pause_writing(self) -> None:
        self.flow.pause_writing()

    def resume_writing(self) -> None:
        self.flow.resume_writing()

    def eof_received(self) -> bool | None:
        if self.websocket is not None:
            self.websocket.feed(b"")
            return None
        if self.lingering or self.closed or self.task is not None:
            # A half-close while we work on its request: treat the client as gone.
            return None
        self.wire.receive_data(b"")
        self._process()
        return None

    def data_received(self, data: bytes) -> None:
        if self.websocket is not None:
            self.websocket.feed(data)
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
            if self.wire.buffered > _MAX_PIPELINED_BUFFER:
                self.flow.pause_reading()
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

    # -- what a cycle and a WebSocket may do (response.ResponseChannel, cycle.CycleChannel,
    # websocket.WebSocketHost) -----------------------------------------------------------------

    def write(self, data: bytes) -> None:
        transport = self.transport
        if data and transport is not None and not self.closed:
            if transport.is_closing():
                # The socket failed under us and connection_lost is on its way: say closed now,
                # so the writer stops instead of relaying the node's answer into nothing.
                self.closed = True
                return
            transport.write(data)

    async def drain(self) -> None:
        """Wait while the transport's buffer is over the high-water mark; cut a stalled reader."""
        if self.flow.write_paused and not await self.flow.wait_writable(self.limits.write_timeout):
            log.info("event=write_timeout peer=%s", self.peer)
            self.abort()
            raise ConnectionResetError("client stopped reading")
        if self.closed and not self.lingering:
            raise ConnectionResetError("client disconnected")

    def on_lost(self, callback: Callable[[], None]) -> None:
        """Call `callback` when the client goes away (at most once)."""
        self._on_lost.append(callback)

    def begin_websocket(self, ws: WebSocket) -> None:
        """From now on the socket's input goes to `ws`; HTTP timers and read pausing end."""
        self.websocket = ws
        self.deadline.stop()
        self.flow.resume_reading()

    def abort(self) -> None:
        self.closed = True
        self.deadline.stop()
        if self.task is None:
            self._drop_body()
        if self.transport is not None:
            self.transport.abort()

    def shutdown(self) -> None:
        """Close at once when idle; otherwise after the request in flight is answered."""
        self.close_after_response = True
        if self.lingering and self.transport is not None:
            self.transport.close()  # already answered with an error: stop draining
        elif self.websocket is not None:
            self.websocket.close(1001)
        elif self.task is None and self.request_head is None and not self.bytes_seen_this_cycle:
            self.close()

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
                self._start_cycle()
                return
            elif event is CLOSED:
                self.close()
                return
            else:
                assert isinstance(event, bytes | bytearray)
                refusal = self.body.add(event)
                if refusal is not None:
                    self._refuse_request(refusal)
                    return
                body_progress = True
        if body_progress and not self.closed and self.task is None:
            # the body timeout is the longest pause between reads: re-arm once per read, but
            # never past the whole body's deadline
            delay = self.limits.body_timeout
            if self.body.deadline_at:
                left = self.body.deadline_at - self.loop.time()
                if left < delay:
                    delay = max(left, 0.0)
            self.deadline.set(delay, self._on_body_timeout)

    def _on_head(self, event: Head) -> bool:
        self.request_head = event
        self.head_timer_armed = False
        self.body.reset()
        verdict = judge_head(
            event,
            max_header_bytes=self.limits.max_header_bytes,
            max_body_bytes=self.limits.max_body_bytes,
            fast_path=self.wire.fast,
        )
        if type(verdict) is Refusal:
            self._refuse_request(verdict)
            return False
        assert type(verdict) is tuple
        length, chunked = verdict
        self.pending = None
        self.body.chunked = chunked
        if (length or chunked) and not self._admit_body(event, length or 0):
            return False
        if self.state.draining:
            self.close_after_response = True
        if self.wire.waiting_for_100_continue:
            self.write(self.wire.send_continue())
        return True

    def _admit_body(self, head: Head, length: int) -> bool:
        """Before a body is read: room for it, and the app's verdict on the head alone."""
        state = self.state
        no_room = self.body.room_for(length)
        if no_room is not None:
            self._refuse_request(no_room)
            return False
        if state.head_check is not None:
            request = request_from_head(head, b"", self.peer)
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
        self.body.deadline_at = self.loop.time() + self.limits.body_deadline
        return True

    # -- cycles ------------------------------------------------------------------------------

    def _start_cycle(self) -> None:
        head = self.request_head
        assert head is not None
        self.deadline.cancel()
        body = self.body.take()
        request = self.pending
        if request is None:
            request = request_from_head(head, body, self.peer)
        else:
            request.body = body
            self.pending = None
        cycle = RequestCycle(self, self.state, request)
        self.task = task = self.loop.create_task(cycle.run())
        self.state.tasks.add(task)
        task.add_done_callback(self.state.tasks.discard)

    def cycle_done(self, *, completed: bool) -> None:
        self.task = None
        self.body.release()
        if completed and not self.closed:
            self._next_cycle()

    def _next_cycle(self) -> None:
        if not self.wire.start_next_cycle():
            self.close()
            return
        self.request_head = None
        if self.state.draining:
            self.close()
            return
        if self.flow.read_paused:
            self.flow.resume_reading()
        self.bytes_seen_this_cycle = bool(self.wire.buffered)
        if self.bytes_seen_this_cycle:
            self._arm_head_timer()
        else:
            self.head_timer_armed = False
            self.deadline.set(self.limits.idle_timeout, self._on_idle_timeout)
        self._process()

    # -- errors, timeouts --------------------------------------------------------------------

    def _protocol_error(self, exc: h11.RemoteProtocolError) -> None:
        status = exc.error_status_hint or 400
        log.info("event=bad_request peer=%s status=%s reason=%r", self.peer, status, str(exc))
        self._error_and_close(status, f"malformed HTTP request: {exc}")

    def _refuse_request(self, refusal: Refusal) -> None:
        """Answer a refusal from the head or body rules, with `Connection: close`."""
        level = logging.WARNING if refusal.server_full else logging.INFO
        log.log(level, "event=%s peer=%s %s", refusal.event, self.peer, refusal.detail)
        request = self._partial_request()
        resp = self.state.on_error(request, refusal.status, refusal.message)
        if refusal.server_full:
            resp.headers.append(("retry-after", "1"))
        self._answer_and_close(resp, request)

    def _partial_request(self) -> Request | None:
        head = self.request_head
        return None if head is None else request_from_head(head, b"", self.peer)

    def _error_and_close(self, status: int, message: str) -> None:
        """Answer `status` with `Connection: close`, then close (after a short linger)."""
        request = self._partial_request()
        self._answer_and_close(self.state.on_error(request, status, message), request)

    def _answer_and_close(self, resp: Response, request: Request | None) -> None:
        if self.wire.can_start_response:
            self.write(closing_answer(self.wire, resp, request))
        if request is not None:
            self.state.access_log.record(
                request.method, request.path, resp.status, None, node="", peer=self.peer
            )
        self.close(linger=True)

    def _arm_head_timer(self) -> None:
        self.head_timer_armed = True
        self.deadline.set(self.limits.header_timeout, self._on_head_timeout)

    def _on_head_timeout(self) -> None:
        if self.task is not None or self.closed:
            return
        if not self.bytes_seen_this_cycle and self.request_head is None:
            self.close()  # connected and never said anything: nobody to answer
            return
        log.info("event=header_timeout peer=%s", self.peer)
        self._error_and_close(408, "timed out reading the request head")

    def _on_body_timeout(self) -> None:
        if self.task is None and not self.closed:
            whole = bool(self.body.deadline_at) and self.loop.time() >= self.body.deadline_at
            log.info(
                "event=body_timeout peer=%s reason=%s received=%d",
                self.peer,
                "deadline" if whole else "pause",
                self.body.size,
            )
            self._error_and_close(408, "timed out reading the request body")

    def _on_idle_timeout(self) -> None:
        if self.task is None and not self.closed and not self.head_timer_armed:
            self.close()

    # -- closing -----------------------------------------------------------------------------

    def _drop_body(self) -> None:
        """The request being read will never be handled: free it and its body's share."""
        self.pending = None
        self.body.drop()

    def close(self, *, linger: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        self.deadline.stop()
        if self.task is None:
            self._drop_body()
        transport = self.transport
        if transport is None:
            return
        if linger and transport.can_write_eof():
            # Half-close and drain the client's unread bytes for a moment: closing a socket with
            # unread input sends a reset, which can destroy the answer before the client reads it.
            self.lingering = True
            self.flow.resume_reading()
            transport.write_eof()
            self.deadline.set(_LINGER_SECONDS, transport.close)
        else:
            transport.close()
