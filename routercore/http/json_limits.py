"""Parsing a request body as JSON with bounds on what it may build.

A 32 MiB body of `[],[],...` is eleven million lists: ~1 GiB of Python objects and seconds
of parsing and garbage collection on the event loop, all to read `model` and `stream`. The
router refuses, before parsing, bodies that would build more than MAX_CONTAINERS arrays and
objects or MAX_VALUES values. Nesting is bounded by orjson itself (1024 levels).

The count is done with bytes methods (C loops over the body, no Python per element): commas
and brackets bound the values from above; only when that rough count is over a bound are the
strings (which may hold any number of commas and brackets) removed with one regex and the
count made again. A body smaller than 2 * MAX_CONTAINERS bytes cannot exceed either bound
and is parsed at once, so ordinary requests pay nothing.
"""

from __future__ import annotations

import gc
import re
from typing import Any

import orjson

from routercore.errors import ClientError

MAX_CONTAINERS = 100_000
MAX_VALUES = 1_000_000
# Large bodies are parsed with the cyclic collector paused: the parse builds only acyclic
# containers, and collector passes over them are most of what a big parse costs.
_PAUSE_GC_BYTES = 1024 * 1024
# A JSON string: quote, then runs of plain characters and escapes, then quote.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)


def loads(body: bytes) -> Any:
    """orjson.loads within the bounds; ClientError (400) when the body is over them."""
    if len(body) > 2 * MAX_CONTAINERS:
        check_shape(body)
    if len(body) > _PAUSE_GC_BYTES and gc.isenabled():
        gc.disable()
        try:
            return orjson.loads(body)
        finally:
            gc.enable()
    return orjson.loads(body)


def check_shape(body: bytes) -> None:
    """Raise ClientError when `body` holds more containers or values than allowed."""
    containers, values = _count(body)
    if containers <= MAX_CONTAINERS and values <= MAX_VALUES:
        return
    # Strings are values too: more of them than MAX_VALUES settles it without the regex.
    quotes = body.count(b'"')
    if quotes // 2 > MAX_VALUES and (quotes - body.count(b'\\"')) // 2 > MAX_VALUES:
        _refuse_values()
    containers, values = _count(_STRING.sub(b"", body))
    if containers > MAX_CONTAINERS:
        raise ClientError(
            f"request body has more than {MAX_CONTAINERS} JSON arrays and objects",
            code="json_too_complex",
        )
    if values > MAX_VALUES:
        _refuse_values()


def _count(text: bytes) -> tuple[int, int]:
    """Upper bounds of (containers, values) in JSON text without strings inside."""
    containers = text.count(b"[") + text.count(b"{")
    return containers, containers + text.count(b",") + 1


def _refuse_values() -> None:
    raise ClientError(
        f"request body has more than {MAX_VALUES} JSON values", code="json_too_complex"
    )
