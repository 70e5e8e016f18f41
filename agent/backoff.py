"""Exponential backoff with full jitter, shared by registration, downloads and runtime restarts."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


def backoff_delay(
    attempt: int,
    *,
    initial: float = 1.0,
    maximum: float = 60.0,
    jitter: float = 0.5,
    rand: random.Random | None = None,
) -> float:
    """Delay before retry number `attempt` (0-based): initial * 2**attempt capped at `maximum`.

    Jitter spreads many agents that lost the same router over time, so they do not all come back
    in the same second: the delay is drawn from [(1 - jitter) * d, d].
    """
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    base = min(maximum, initial * (2.0 ** min(attempt, 62)))
    if jitter <= 0:
        return base
    r = (rand or random).random()
    return base * (1.0 - jitter * r)


@dataclass
class Backoff:
    """A running sequence of backoff delays; `reset()` after a success."""

    initial: float = 1.0
    maximum: float = 60.0
    jitter: float = 0.5
    rand: random.Random | None = None
    attempt: int = field(default=0, init=False)

    def next_delay(self) -> float:
        delay = backoff_delay(
            self.attempt,
            initial=self.initial,
            maximum=self.maximum,
            jitter=self.jitter,
            rand=self.rand,
        )
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
