"""Exponential backoff with jitter."""

from __future__ import annotations

import random

import pytest

from agent.backoff import Backoff, backoff_delay


def test_doubles_until_cap_without_jitter() -> None:
    delays = [backoff_delay(i, initial=0.5, maximum=4, jitter=0) for i in range(6)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_jitter_stays_within_band() -> None:
    rand = random.Random(7)
    for attempt in range(10):
        base = min(60.0, 2.0**attempt)
        d = backoff_delay(attempt, initial=1, maximum=60, jitter=0.5, rand=rand)
        assert base * 0.5 <= d <= base


def test_jitter_spreads_agents() -> None:
    rand = random.Random(1)
    assert len({round(backoff_delay(3, rand=rand), 6) for _ in range(20)}) > 10


def test_huge_attempt_does_not_overflow() -> None:
    assert backoff_delay(10_000, initial=1, maximum=30, jitter=0) == 30


def test_negative_attempt_rejected() -> None:
    with pytest.raises(ValueError):
        backoff_delay(-1)


def test_sequence_and_reset() -> None:
    b = Backoff(1, 8, jitter=0)
    assert [b.next_delay() for _ in range(5)] == [1, 2, 4, 8, 8]
    b.reset()
    assert b.next_delay() == 1
