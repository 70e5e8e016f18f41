"""One deadline on one lazily re-armed timer handle, for objects that set and cancel a
deadline on every request: the client connection (head, body, idle, linger) and the
connection to a node (each wait for the node's answer).

A uvloop timer handle made and cancelled per request costs more than everything else its
owner does with it. Here the handle stays armed: a later deadline only moves the time, the
handle re-arms itself when it fires early, and `cancel` only forgets the callback. `stop`
cancels the handle for real, so that nothing keeps a closed connection alive.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Deadline:
    """Call a callback at a time unless cancelled or set again before (one at a time)."""

    __slots__ = ("_at", "_callback", "_handle", "_handle_at", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        # uvloop hands back a plain Handle, without when(), for a delay that rounds to 0 ms:
        # the time the handle fires is kept here instead.
        self._handle: asyncio.Handle | None = None
        self._handle_at = 0.0
        self._at = 0.0
        self._callback: Callable[[], None] | None = None

    @property
    def armed(self) -> bool:
        """A callback is due (set, not yet fired, cancelled or stopped)."""
        return self._callback is not None

    def set(self, delay: float, callback: Callable[[], None]) -> None:
        """`callback` in `delay` seconds, in place of any earlier deadline."""
        self._at = at = self._loop.time() + delay
        self._callback = callback
        handle = self._handle
        if handle is None or self._handle_at > at:
            if handle is not None:
                handle.cancel()
            self._handle = self._loop.call_at(at, self._fire)
            self._handle_at = at

    def cancel(self) -> None:
        self._callback = None

    def stop(self) -> None:
        """No deadline, and no timer handle left in the loop."""
        self._callback = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        callback = self._callback
        if callback is None:
            return
        if self._loop.time() < self._at:
            self._handle = self._loop.call_at(self._at, self._fire)
            self._handle_at = self._at
            return
        self._callback = None
        callback()
