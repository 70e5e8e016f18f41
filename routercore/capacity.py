"""Slots on nodes: a free one at once, else a bounded FIFO wait until one is released.

Kept apart from the request path (proxy.py) so the queue's rules (order, bound, timeout,
cancellation) can be tested against a balancer alone, without sockets.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from routercore.errors import NoCapacity, RouterError

if TYPE_CHECKING:
    from routercore.balancer import Balancer
    from routercore.config import RouterConfig
    from routercore.prefix import PromptPrefix
    from routercore.registry import NodeRegistry
    from routercore.stats import LiveStats

# The request path's logger: the queue's lines are part of a request's story.
log = logging.getLogger("routercore.capacity")


@dataclass(eq=False)
class _Waiter:
    model: str
    exclude: tuple[str, ...]
    prefix: PromptPrefix | None
    future: asyncio.Future[tuple[str, bool | None]]


class SlotQueue:
    """Hands out request slots on nodes; when every candidate is full, requests wait here.

    `not_servable(model)` builds the error for a model no node in rotation serves (the proxy
    decides 404 vs 503); the queue only calls it when a wait could never end.
    """

    def __init__(
        self,
        cfg: RouterConfig,
        registry: NodeRegistry,
        balancer: Balancer,
        stats: LiveStats,
        not_servable: Callable[[str], RouterError],
    ) -> None:
        self.cfg = cfg
        self.registry = registry
        self.balancer = balancer
        self.stats = stats
        self.not_servable = not_servable
        self.waiters: deque[_Waiter] = deque()

    def take(
        self, model: str, exclude: tuple[str, ...], prefix: PromptPrefix | None
    ) -> tuple[str, bool | None] | None:
        """A free slot at once, as `acquire` gives it, or None when every candidate is full.

        The common case of a request, kept out of the coroutine: the proxy calls this first
        and awaits `wait` only when it got None."""
        if prefix is None:
            node_id, hit = self.balancer.pick(model, exclude), None
        else:
            node_id, hit = self.balancer.pick_affine(model, prefix.hashes, prefix.anchor, exclude)
        if node_id is None:
            return None
        self._picked(node_id)
        return node_id, hit

    async def acquire(
        self, model: str, exclude: tuple[str, ...], deadline: float, prefix: PromptPrefix | None
    ) -> tuple[str, bool | None]:
        """A slot on a node serving `model` (not in `exclude`): (node id, affinity hit); a
        free one at once (`take`), else after a wait in the queue.

        The caller owns the slot and gives it back with `balancer.request_finished` and then
        `drain()`. Raises NoCapacity (with a Retry-After) when the queue is full or the wait
        times out."""
        picked = self.take(model, exclude, prefix)
        if picked is not None:
            return picked
        return await self.wait(model, exclude, deadline, prefix)

    async def wait(
        self, model: str, exclude: tuple[str, ...], deadline: float, prefix: PromptPrefix | None
    ) -> tuple[str, bool | None]:
        """`acquire` after `take` found every candidate full: a place in the queue."""
        if not self.balancer.serves(model):
            raise self.not_servable(model)
        retry_after = max(1, int(self.cfg.queue_timeout / 4) or 1)
        if len(self.waiters) >= self.cfg.queue_max:
            log.warning("event=queue_full model=%s length=%d", model, len(self.waiters))
            raise NoCapacity(
                f"all nodes serving '{model}' are busy and the queue is full",
                retry_after=retry_after,
            )
        loop = asyncio.get_running_loop()
        waiter = _Waiter(model, exclude, prefix, loop.create_future())
        self.waiters.append(waiter)
        self.stats.queued += 1
        timeout = min(self.cfg.queue_timeout, max(0.0, deadline - time.perf_counter()))
        try:
            await asyncio.wait({waiter.future}, timeout=timeout)
        except asyncio.CancelledError:
            self._abandon(waiter)
            raise
        finally:
            self.stats.queued -= 1
        if waiter.future.done():
            return waiter.future.result()
        self._abandon(waiter)
        log.warning("event=queue_timeout model=%s waited=%.1fs", model, timeout)
        raise NoCapacity(
            f"all nodes serving '{model}' are busy; waited {timeout:g}s in the queue",
            retry_after=retry_after,
        )

    def _picked(self, node_id: str) -> None:
        self.balancer.request_started(node_id)
        if node_id in self.registry.half_open:
            # The one trial request a half-open breaker lets through: nobody else gets the node
            # until it has a verdict.
            self.registry.start_trial(node_id)

    def _abandon(self, waiter: _Waiter) -> None:
        """A waiter that gives up: a slot handed to it in the meantime goes to the next one."""
        try:
            self.waiters.remove(waiter)
        except ValueError:
            pass
        if waiter.future.done() and not waiter.future.cancelled():
            self.balancer.request_finished(waiter.future.result()[0], None)
            self.drain()
        else:
            waiter.future.cancel()

    def drain(self) -> None:
        """Give freed slots to waiting requests, oldest first."""
        if not self.waiters:
            return
        for waiter in list(self.waiters):
            if waiter.future.done():
                self.waiters.remove(waiter)
                continue
            picked = self.take(waiter.model, waiter.exclude, waiter.prefix)
            if picked is not None:
                self.waiters.remove(waiter)
                waiter.future.set_result(picked)
