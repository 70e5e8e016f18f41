"""The fake node's HTTP/1.1 transport: one asyncio.Protocol + h11 state machine per client.

Fast path: a reply with no delays is written straight from `data_received` (one write, or
64 KiB batches for long streams), no task; if the client stops reading, the rest moves to a
task that waits for the drain. Delayed replies always run in a task, which the connection
cancels when the client goes away: that is how the node "stops generating" on cancellation.
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from typing import Protocol, cast

import h11

from routercore.testing.fake_api import INFERENCE_PATHS, TEXT, FakeAPI, Reply, error_reply
from routercore.testing.fake_state import Faults, Settings, Stats

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024 * 1024
_BATCH_BYTES = 64 * 1024  # a zero-delay stream is written in batches of about this size
_READ_BUFFER_LIMIT = 1024 * 1024  # pause reading while pipelined bytes pile up past this
_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
GARBAGE = b"\x00\xff\xfeSPLAT not-http \x13\x37 garbage\r\n\r\n\x00"


class ServedNode(Protocol):
    """What a connection uses of its node (`fake_runtime.FakeNode`); named here so the
    transport does not import the node that imports it."""

    api: FakeAPI
    api_key: bytes | None
    settings: Settings
    faults: Faults
    stats: Stats
    connections: set[FakeHTTPProtocol]

    def has_stream_delay(self) -> bool: ...
    def control(self, method: str, path: str, body: bytes, conn: FakeHTTPProtocol) -> Reply: ...


class FakeHTTPProtocol(asyncio.Protocol):
    """Serves one client connection for a `FakeNode`."""

    def __init__(self, node: ServedNode) -> None:
        self.node = node
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.busy = False  # a request is being answered; further pipelined ones wait
        self.counted = False  # the request in hand shows in the stats (not a /_fake call)
        self.dropping = False  # we cut the connection on purpose: not a client cancel
        self.task: asyncio.Task[None] | None = None
        self.request: h11.Request | None = None
        self.body: list[bytes] = []
        self.body_size = 0
        self.reading_paused = False
        self.writing_paused = False
        self.drain: asyncio.Future[None] | None = None
        self.chunked = True  # the current streamed response uses chunked framing

    # -- asyncio callbacks ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, hence the cast.
        self.transport = cast(asyncio.Transport, transport)
        self.node.connections.add(self)
        stats = self.node.stats
        stats.connections_total += 1
        stats.connections_open += 1

    def data_received(self, data: bytes) -> None:
        self.h11.receive_data(data)
        if not self.busy:
            self._process()
        elif len(self.h11.trailing_data[0]) > _READ_BUFFER_LIMIT and self.transport:
            self.reading_paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        # A client that half-closes is treated as gone, like most servers do.
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.node.connections.discard(self)
        stats = self.node.stats
        stats.connections_open -= 1
        if self.busy and self.counted:
            self.busy = False
            stats.in_flight -= 1
            if self.dropping:
                stats.dropped += 1
            else:
                stats.cancelled += 1
        if self.task is not None:
            self.task.cancel()
        self._wake()

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._wake()

    def _gone(self) -> bool:
        """The client is gone, even if `connection_lost` has not run yet: a write that fails
        (a reset peer) closes the transport at once, drops every later write without a word
        and reports the loss only on a later loop turn. A zero-delay stream never yields in
        between, so without this check it would "send" the rest into nothing and count a
        cancelled answer as completed, where a real runtime stops at its write error."""
        return self.closed or self.transport is None or self.transport.is_closing()

    def _wake(self) -> None:
        if self.drain is not None and not self.drain.done():
            self.drain.set_result(None)
        self.drain = None

    # -- request parsing --------------------------------------------------------------------

    def _process(self) -> None:
        """Pull h11 events until a request is complete (then answer it) or bytes run out."""
        conn = self.h11
        while not self.busy and not self.closed:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                self._fail(exc.error_status_hint, f"bad request: {exc}")
                return
            kind = type(event)
            if kind is h11.Request:
                assert isinstance(event, h11.Request)
                self.request = event
                self.body = []
                self.body_size = 0
                if not self._check_length(event):
                    return
                if conn.they_are_waiting_for_100_continue:
                    continue_ = h11.InformationalResponse(
                        status_code=100, headers=[], reason=b"Continue"
                    )
                    self._write(conn.send(continue_))
            elif kind is h11.Data:
                assert isinstance(event, h11.Data)
                self.body.append(event.data)
                self.body_size += len(event.data)
                if self.body_size > MAX_BODY:
                    self._fail(413, "request body too large")
                    return
            elif kind is h11.EndOfMessage:
                self._dispatch()
            elif event is h11.NEED_DATA:
                if self.reading_paused and self.transport is not None:
                    self.reading_paused = False
                    self.transport.resume_reading()
                return
            elif kind is h11.ConnectionClosed or event is h11.PAUSED:
                if kind is h11.ConnectionClosed and self.transport is not None:
                    self.transport.close()
                return

    def _check_length(self, request: h11.Request) -> bool:
        for name, value in request.headers:
            if name == b"content-length" and int(value) > MAX_BODY:
                self._fail(413, "request body too large")
                return False
        return True

    def _fail(self, status: int, message: str) -> None:
        """Answer a protocol-level error if h11 still lets us, then close."""
        if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            try:
                body = message.encode()
                headers = [*TEXT, (b"connection", b"close")]
                self._send_full(Reply(status, headers, body), head_only=False)
            except h11.LocalProtocolError:
                pass
        if self.transport is not None:
            self.transport.close()
        self.closed = True

    # -- answering --------------------------------------------------------------------------

    def _dispatch(self) -> None:
        request = self.request
        assert request is not None
        node = self.node
        target = request.target
        q = target.find(b"?")
        path = (target if q < 0 else target[:q]).decode("ascii", "replace")
        method = request.method.decode("ascii", "replace")
        body = b"".join(self.body) if len(self.body) != 1 else self.body[0]
        self.body = []
        if path.startswith("/_fake/"):
            self._start(counted=False)  # control calls stay out of the counters
            self._send(node.control(method, path, body, self), head_only=False)
            return
        stats = node.stats
        stats.count_request(path, len(body))
        self._start()
        if node.api_key is not None and (b"authorization", b"Bearer " + node.api_key) not in [
            (k.lower(), v) for k, v in request.headers
        ]:
            # A cloud provider's answer to a missing or wrong key.
            stats.errors += 1
            self._send(error_reply(path, 401, "Incorrect API key provided", "invalid_api_key"))
            return
        faults = node.faults
        drop_after: int | None = None
        if faults.any_request_fault():
            if faults.take("hang"):
                return  # stays busy until the client gives up (counted as cancelled)
            if faults.take("garbage"):
                self._drop(GARBAGE)
                return
            if path in INFERENCE_PATHS and faults.take("status500"):
                stats.errors += 1
                self._send(error_reply(path, 500, "fake fault: status500", "internal_error"))
                return
            if path in INFERENCE_PATHS and faults.take("status429"):
                stats.errors += 1
                reply = error_reply(path, 429, "Rate limit reached", "rate_limit_exceeded")
                reply.headers.append((b"retry-after", b"7"))
                self._send(reply)
                return
            if faults.drop_after is not None and path in INFERENCE_PATHS:
                value = faults.drop_after  # read before take(): its last use clears it
                drop_after = value if faults.take("drop_after") else None
        try:
            reply = node.api.handle(method, path, body)
        except Exception:  # a bug must not kill the connection silently
            log.exception("fakenode handler failed path=%s", path)
            reply = error_reply(path, 500, "fakenode internal error", "internal_error")
        if reply.status >= 400:
            stats.errors += 1
        head_only = method == "HEAD"
        if (
            drop_after is not None
            or reply.delay > 0
            or (reply.chunks is not None and node.has_stream_delay())
        ):
            self.task = asyncio.get_running_loop().create_task(
                self._send_slow(reply, drop_after, head_only)
            )
        else:
            self._send(reply, head_only=head_only)

    def _start(self, counted: bool = True) -> None:
        self.busy = True
        self.counted = counted
        if counted:
            self.node.stats.in_flight += 1

    def _finish(self) -> None:
        """The response is complete: next cycle on keep-alive, or close."""
        self.busy = False
        self.task = None
        if self.counted:
            stats = self.node.stats
            stats.in_flight -= 1
            stats.completed += 1
        conn = self.h11
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        elif self.transport is not None:
            self.closed = True
            self.transport.close()

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def _head(self, reply: Reply, length: int | None) -> bytes:
        headers = reply.headers
        if length is not None:
            headers = [*headers, (b"content-length", b"%d" % length)]
        reason = _REASONS.get(reply.status, b"")
        return self.h11.send(h11.Response(status_code=reply.status, headers=headers, reason=reason))

    def _send_full(self, reply: Reply, head_only: bool) -> None:
        conn = self.h11
        data = self._head(reply, len(reply.body))
        if reply.body and not head_only:
            data += conn.send(h11.Data(data=reply.body))
        data += conn.send(h11.EndOfMessage())
        self._write(data)

    def _send(self, reply: Reply, head_only: bool = False) -> None:
        """Write a reply now. A stream goes out in batches and moves to a task when the
        client's buffer fills (flow control), so a slow reader never balloons our memory."""
        if reply.chunks is None:
            self._send_full(reply, head_only)
            self._finish()
            return
        parts = [self._stream_head(reply)]
        if not head_only:
            size = 0
            frame = self._frame
            chunks = reply.chunks
            for data in chunks:
                framed = frame(data)
                parts.append(framed)
                size += len(framed)
                if size >= _BATCH_BYTES:
                    self._write(b"".join(parts))
                    parts = []
                    size = 0
                    if self._gone():
                        return  # stays busy: connection_lost counts the cancel
                    if self.writing_paused:
                        self.task = asyncio.get_running_loop().create_task(
                            self._send_slow(reply, None, resumed=True)
                        )
                        return
        parts.append(self.h11.send(h11.EndOfMessage()))
        self._write(b"".join(parts))
        self._finish()

    def _stream_head(self, reply: Reply) -> bytes:
        head = self._head(reply, None)
        # h11 picked the framing: chunked for HTTP/1.1, close-delimited for HTTP/1.0.
        self.chunked = b"\r\nTransfer-Encoding: chunked\r\n" in head
        return head

    def _frame(self, data: bytes) -> bytes:
        """Chunk framing by hand: h11's ChunkedWriter does the same, at several times the cost."""
        if self.chunked:
            return b"%x\r\n%b\r\n" % (len(data), data) if data else b""
        return self.h11.send(h11.Data(data=data))

    def _drop(self, data: bytes = b"") -> None:
        """Cut the connection on purpose (a fault), after writing `data`."""
        self.dropping = True
        if self.transport is not None:
            if data:
                self.transport.write(data)
                self.transport.close()  # flushes `data`, then closes
            else:
                self.transport.abort()

    async def _wait_drained(self) -> None:
        if self.writing_paused and not self.closed:
            self.drain = asyncio.get_running_loop().create_future()
            await self.drain

    async def _send_slow(
        self,
        reply: Reply,
        drop_after: int | None,
        head_only: bool = False,
        resumed: bool = False,
    ) -> None:
        """Send with the configured delays, honouring flow control and the drop fault."""
        try:
            await self._send_paced(reply, drop_after, head_only, resumed)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("fakenode stream failed")
            self._drop()
            return
        if not self.busy and not self.closed:
            self._process()  # pipelined requests waiting behind this one

    async def _send_paced(
        self, reply: Reply, drop_after: int | None, head_only: bool, resumed: bool
    ) -> None:
        settings = self.node.settings
        chunks = reply.chunks
        if chunks is None or head_only:
            if reply.delay > 0:
                await asyncio.sleep(reply.delay)
            if drop_after == 0:
                self._drop()
            else:
                self._send(reply, head_only)
            return
        sent = 0
        if resumed:  # head and some chunks already went out from _send
            pending = b""
            await self._wait_drained()
            if self._gone():
                return
        else:
            pending = self._stream_head(reply)  # like Ollama: the head leaves with chunk 1
            if settings.first_token_delay > 0:
                await asyncio.sleep(settings.first_token_delay)
        data = next(chunks, None)
        while data is not None:
            if drop_after is not None and sent >= drop_after:
                break
            self._write(pending + self._frame(data))
            pending = b""
            sent += 1
            await self._wait_drained()
            if self._gone():
                return  # stays busy: connection_lost counts the cancel
            data = next(chunks, None)
            if data is not None and settings.token_delay > 0:
                await asyncio.sleep(settings.token_delay)
        if drop_after is not None and sent >= drop_after:
            if pending:
                self._write(pending)
            self._drop()
            return
        self._write(pending + self.h11.send(h11.EndOfMessage()))
        self._finish()
