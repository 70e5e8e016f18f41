"""A per-node circuit breaker: consecutive failed requests take a node out of rotation.

A node that answers every request with an HTTP error is up (so it is not `unreachable`), but it
is no use to anyone. After `threshold` consecutive failed requests the breaker opens: no request
is sent there for a backoff; then exactly one trial request is let through (half-open). Its
success closes the breaker; its failure opens it again for twice the backoff. Any success in
between resets the count, so one client's poisoned request cannot take a node out.

Sans-IO: no timers, no I/O. The caller passes a clock and asks `due()` when to check again.
"""

from __future__ import annotations

import time
from collections.abc import Callable

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self,
        *,
        threshold: int,
        backoff: float,
        max_backoff: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.base_backoff = backoff
        self.max_backoff = max(backoff, max_backoff)
        self.clock = clock
        self.state = CLOSED
        self.failures = 0  # consecutive failed requests
        self.backoff = backoff
        self.retry_at = 0.0  # when an open breaker lets its trial request through
        self.trial_in_flight = False

    @property
    def admits(self) -> bool:
        """May the balancer pick this node now? (closed, or half-open with no trial yet)."""
        return self.state == CLOSED or (self.state == HALF_OPEN and not self.trial_in_flight)

    def success(self) -> bool:
        """A request succeeded. True when that closed an open/half-open breaker."""
        reopened = self.state != CLOSED
        self.state = CLOSED
        self.failures = 0
        self.backoff = self.base_backoff
        self.trial_in_flight = False
        return reopened

    def failure(self) -> bool:
        """A request failed. True when this opened the breaker (it was not open before)."""
        self.failures += 1
        if self.state == HALF_OPEN:
            # The trial failed: out again, for longer.
            self.backoff = min(self.backoff * 2, self.max_backoff)
            self._open()
            return True
        if self.state == CLOSED and self.threshold > 0 and self.failures >= self.threshold:
            self.backoff = self.base_backoff
            self._open()
            return True
        return False

    def start_trial(self) -> None:
        """The one request a half-open breaker lets through was picked."""
        if self.state == HALF_OPEN:
            self.trial_in_flight = True

    def abandon_trial(self) -> None:
        """The trial ended without a verdict (the client left): let another one through."""
        self.trial_in_flight = False

    def due(self) -> bool:
        """An open breaker whose backoff has passed turns half-open. True when it just did."""
        if self.state == OPEN and self.clock() >= self.retry_at:
            self.state = HALF_OPEN
            self.trial_in_flight = False
            return True
        return False

    def seconds_to_trial(self) -> float | None:
        if self.state != OPEN:
            return None
        return max(0.0, self.retry_at - self.clock())

    def _open(self) -> None:
        self.state = OPEN
        self.trial_in_flight = False
        self.retry_at = self.clock() + self.backoff
