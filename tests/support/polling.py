"""Waiting for state with a deadline: `wait_until` in sync code, `eventually` in a coroutine.

Tests check behaviour, never wall-clock time: every wait polls until a deadline that only a
broken behaviour reaches. The sync one is the product's, which the benchmark shares.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

from routercore.testing.processes import wait_until

__all__ = ["eventually", "wait_until"]


async def eventually(
    predicate: Callable[[], Any], timeout: float = 10.0, message: str = "condition"
) -> Any:
    """Poll `predicate` on the running loop until truthy (returning its value); fail after
    `timeout` seconds. `predicate` may be a coroutine function (a probe that does I/O)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {message} (last: {value!r})"
            )
        await asyncio.sleep(0.01)
