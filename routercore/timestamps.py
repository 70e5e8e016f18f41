"""RFC 3339 UTC timestamps, the one way the router writes and reads them.

Everything the router stores or answers carries times as `2026-01-02T03:04:05.678Z`: node
records, request history, API keys, deployments (milliseconds); Ollama's `created_at`
(microseconds, as Ollama writes it); `expires_at` (whole seconds). The store compares these
strings in SQL, so a column keeps one precision; `digits` is that choice, made by the caller.

The date-and-time part is formatted once per second and reused: this runs once per proxied
request and once per streamed line.
"""

from __future__ import annotations

import calendar
import time

MILLIS = 3
MICROS = 6
_SECONDS_FORMAT = "%Y-%m-%dT%H:%M:%S"

_second_text: tuple[int, str] = (-1, "")  # (a Unix second, its formatted date and time)
_SCALE = (1, 10, 100, 1000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000, 1_000_000_000)


def rfc3339(ts: float, digits: int = MILLIS) -> str:
    """Unix time `ts` as RFC 3339 UTC with `digits` (0 to 9) fraction digits, truncated.

    One function with the cached second inlined and one %-format (`%0*d` takes the width):
    this runs once per proxied request and once per streamed line."""
    global _second_text
    second = int(ts)
    cached = _second_text  # one read: another thread may replace the tuple meanwhile
    if cached[0] != second:
        cached = (second, time.strftime(_SECONDS_FORMAT, time.gmtime(second)))
        _second_text = cached
    if digits == 0:
        return cached[1] + "Z"
    return "%s.%0*dZ" % (cached[1], digits, int((ts - second) * _SCALE[digits]))  # noqa: UP031


def now_rfc3339(digits: int = MILLIS) -> str:
    """UTC now, as `rfc3339`."""
    return rfc3339(time.time(), digits)


def rfc3339_seconds(text: str) -> int:
    """The Unix second of a UTC timestamp this router wrote (the fraction and the `Z` are
    ignored). ValueError when `text` does not start with a date and time."""
    return calendar.timegm(time.strptime(text[:19], _SECONDS_FORMAT))
