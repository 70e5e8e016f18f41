"""Flow control of one client socket: the one owner of "reading paused" and "writing paused".

Two things pause reading on a client socket: the HTTP connection (pipelined bytes piling up
while a response is in flight) and, after an upgrade, the WebSocket (its inbox full). They never
need it at the same time, but they act on the same transport, so they share one flag here: a
second flag would be a second opinion about the same socket. Writers (the response writer, the
WebSocket) await `wait_writable` instead of growing the transport's buffer; the protocol's
`pause_writing` / `resume_writing` callbacks land in `pause_writing` / `resume_writing` below.
"""

from __future__ import annotations

import asyncio


class FlowControl:
    """Read-paused, write-paused and the drain event of one transport (as in uvicorn)."""

    def __init__(self, transport: asyncio.Transport, high_water: int) -> None:
        self._transport = transport
        self.high_water = high_water
        transport.set_write_buffer_limits(high=high_water)
        self.read_paused = False
        # A plain flag: writers test it on every write (a property would cost a Python call
        # there); only those that must wait get a future.
        self.write_paused = False
        self._waiters: list[asyncio.Future[bool]] = []

    # -- reading -----------------------------------------------------------------------------

    def pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            self._transport.resume_reading()

    # -- writing -----------------------------------------------------------------------------

    def pause_writing(self) -> None:
        """The transport's buffer went over the high-water mark."""
        self.write_paused = True

    def resume_writing(self) -> None:
        """Also called when the connection is lost, so that no writer waits forever."""
        self.write_paused = False
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(True)

    def buffer_full(self) -> bool:
        """What is written now would sit at or over the high-water mark (for optional writes)."""
        return self._transport.get_write_buffer_size() >= self.high_water

    async def wait_writable(self, timeout: float) -> bool:
        """Wait until writing may go on; False when the reader took nothing for `timeout`.

        A future and a timer, not `asyncio.wait_for`: on Python 3.11, wait_for can swallow a
        cancellation that arrives as the inner wait completes, and a handler cancelled because
        its client left must stop.
        """
        if not self.write_paused:
            return True
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiters.append(waiter)
        timer = loop.call_later(timeout, _give_up, waiter)
        try:
            return await waiter
        finally:
            timer.cancel()
            if waiter in self._waiters:
                self._waiters.remove(waiter)


def _give_up(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)
