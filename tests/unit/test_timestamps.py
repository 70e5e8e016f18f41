"""routercore.timestamps against the standard library's datetime, which it replaces at every
call site (the per-second cache must never hand out another second's text)."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from routercore.timestamps import MICROS, MILLIS, now_rfc3339, rfc3339, rfc3339_seconds


def reference(ts: float, digits: int) -> str:
    """What the replaced formatters wrote: datetime's fields, the fraction truncated."""
    moment = datetime.fromtimestamp(int(ts), UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if digits:
        text += f".{int((ts - int(ts)) * 10**digits):0{digits}d}"
    return text + "Z"


@pytest.mark.parametrize("digits", [0, 1, 2, MILLIS, 4, 5, MICROS, 7, 8, 9])
def test_formats_like_datetime_across_seconds(digits: int) -> None:
    rng = random.Random(digits)
    # Jumping back and forth between seconds exercises the cached date-and-time part.
    stamps = [rng.uniform(0, 4_102_444_800) for _ in range(300)]
    stamps += [1_767_323_045.0, 1_767_323_045.5, 1_767_323_046.25, 1_767_323_045.999]
    for ts in stamps:
        assert rfc3339(ts, digits) == reference(ts, digits)


def test_known_values() -> None:
    ts = 1_767_323_045.678901  # 2026-01-02T03:04:05.678901Z
    assert rfc3339(ts) == "2026-01-02T03:04:05.678Z"
    assert rfc3339(ts, MICROS).startswith("2026-01-02T03:04:05.6789")
    assert rfc3339(ts, 0) == "2026-01-02T03:04:05Z"


def test_parses_what_it_writes() -> None:
    now = now_rfc3339()
    assert rfc3339(rfc3339_seconds(now), 0) == now[:19] + "Z"
    assert rfc3339_seconds("2026-01-02T03:04:05.678901Z") == 1_767_323_045
    with pytest.raises(ValueError):
        rfc3339_seconds("yesterday")
