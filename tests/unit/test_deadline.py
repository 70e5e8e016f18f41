"""Deadline: one deadline on one lazily re-armed timer handle (http/deadline.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from routercore.http.deadline import Deadline


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_deadline_fires_once_and_not_before_its_time() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        fired: list[float] = []
        deadline = Deadline(loop)
        at = loop.time() + 0.02
        deadline.set(0.02, lambda: fired.append(loop.time()))
        assert deadline.armed
        while not fired:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.03)
        assert len(fired) == 1 and fired[0] >= at
        assert not deadline.armed

    run(main())


def test_a_cancelled_deadline_never_fires() -> None:
    async def main() -> None:
        fired: list[str] = []
        deadline = Deadline(asyncio.get_running_loop())
        deadline.set(0.01, lambda: fired.append("x"))
        deadline.cancel()
        await asyncio.sleep(0.05)
        assert fired == [] and not deadline.armed

    run(main())


def test_a_later_deadline_replaces_an_earlier_one_without_a_new_handle() -> None:
    """The keep-alive case: set and cancel per request, one timer handle for all of them."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        handles = 0
        call_at = loop.call_at

        def counting_call_at(when: float, callback: Any, *args: Any, **kw: Any) -> Any:
            nonlocal handles
            handles += 1
            return call_at(when, callback, *args, **kw)

        loop.call_at = counting_call_at  # type: ignore[method-assign]
        fired: list[str] = []
        deadline = Deadline(loop)
        for i in range(100):
            deadline.set(30.0 + i * 0.001, lambda: fired.append("stale"))
            deadline.cancel()
        assert handles == 1
        at = loop.time() + 0.05
        deadline.set(0.01, lambda: fired.append("early"))  # earlier than the armed handle
        deadline.set(0.05, lambda: fired.append(f"late {loop.time() >= at}"))
        while not fired:
            await asyncio.sleep(0.005)
        assert fired == ["late True"]
        deadline.stop()

    run(main())


def test_stop_leaves_no_handle_behind() -> None:
    async def main() -> None:
        deadline = Deadline(asyncio.get_running_loop())
        deadline.set(60.0, lambda: None)
        deadline.stop()
        assert deadline._handle is None and not deadline.armed

    run(main())


def test_a_deadline_due_now_on_uvloop() -> None:
    """uvloop answers call_at for a time already due with a plain Handle (no when()): a
    later set must still work (it used to raise AttributeError)."""
    import uvloop

    async def main() -> None:
        loop = asyncio.get_running_loop()
        fired: list[str] = []
        deadline = Deadline(loop)
        deadline.set(0.0, lambda: fired.append("now"))
        deadline.set(-1.0, lambda: fired.append("past"))
        deadline.set(0.01, lambda: fired.append("later"))
        while not fired:
            await asyncio.sleep(0.005)
        assert fired == ["later"]

    uvloop.run(main())
