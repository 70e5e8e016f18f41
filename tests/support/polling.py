"""Waiting for state with a deadline: `wait_until` in sync code, `eventually` in a coroutine.

Tests check behaviour, never wall-clock time: every wait polls until a deadline that only a
broken behaviour reaches. The sync one is the product's, which the benchmark shares.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from routercore.testing.processes import wait_until

__all__ = ["eventually", "wait_until"]


async def eventually(
    predicate: Callable[[], Any], timeout: float = 5.0, message: str = "condition"
) -> Any:
    """Poll `predicate` on the running loop until truthy (returning its value); fail after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {message}")
        await asyncio.sleep(0.01)
