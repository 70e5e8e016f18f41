"""The slot queue (routercore.capacity) against the router's real balancer, without sockets.

The registry stands in with only what the queue reads: the half-open set and `start_trial`.
"""

from __future__ import annotations

import asyncio
import struct
import time
from typing import Any

import pytest

from routercore.balancer import make_balancer
from routercore.capacity import SlotQueue
from routercore.config import RouterConfig
from routercore.errors import ModelNotFound, NoCapacity, RouterError
from routercore.prefix import PromptPrefix
from routercore.stats import LiveStats
from tests.support.balancer_ops import add

FAR = 3600.0  # a request deadline that never matters here


class Registry:
    """The two things the queue uses of NodeRegistry: breakers' half-open trials."""

    def __init__(self) -> None:
        self.half_open: set[str] = set()
        self.trials: list[str] = []

    def start_trial(self, node_id: str) -> None:
        self.half_open.discard(node_id)
        self.trials.append(node_id)


def not_servable(model: str) -> RouterError:
    return ModelNotFound(f"model '{model}' is not served by any node")


def make_queue(
    nodes: dict[str, int], *, queue_max: int = 16, queue_timeout: float = 30.0
) -> tuple[SlotQueue, Any, Registry, LiveStats]:
    balancer = make_balancer()
    for node_id, slots in nodes.items():
        add(balancer, node_id, max_concurrency=slots)
    registry = Registry()
    stats = LiveStats()
    cfg = RouterConfig(queue_max=queue_max, queue_timeout=queue_timeout)
    queue = SlotQueue(cfg, registry, balancer, stats, not_servable)  # type: ignore[arg-type]
    return queue, balancer, registry, stats


def deadline(seconds: float = FAR) -> float:
    return time.perf_counter() + seconds


async def release(queue: SlotQueue, balancer: Any, node_id: str) -> None:
    """What the proxy does when a request on `node_id` ends: free the slot, wake the queue."""
    balancer.request_finished(node_id, None)
    queue.drain()
    for _ in range(3):
        await asyncio.sleep(0)  # let the woken waiter resume


async def queued(queue: SlotQueue, count: int) -> None:
    for _ in range(100):
        if len(queue.waiters) == count:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{len(queue.waiters)} waiting, expected {count}")


async def test_a_free_slot_is_taken_at_once() -> None:
    queue, balancer, _, stats = make_queue({"a": 1})
    assert await queue.acquire("m", (), deadline(), None) == ("a", None)
    assert balancer.in_flight("a") == 1
    assert balancer.pick("m") is None  # the only slot is held
    assert not queue.waiters and stats.queued == 0


def test_take_gives_a_free_slot_or_none_and_never_queues() -> None:
    """The proxy's fast path: no coroutine, no waiter; None sends it to `acquire`."""
    queue, balancer, registry, stats = make_queue({"a": 1, "b": 1})
    registry.half_open.add("b")
    prefix = PromptPrefix(hashes=struct.pack("=2Q", 11, 22), anchor=11)
    first = queue.take("m", (), None)
    second = queue.take("m", (), prefix)
    assert first is not None and second is not None
    assert first[1] is None and second[1] is False  # affinity only with a prefix
    assert {first[0], second[0]} == {"a", "b"}
    assert balancer.in_flight("a") == balancer.in_flight("b") == 1
    assert registry.trials == ["b"]  # a half-open node's pick is its trial, as in acquire
    assert queue.take("m", (), None) is None
    assert queue.take("m", (), prefix) is None
    assert queue.take("other", (), None) is None  # not servable: acquire says why
    assert not queue.waiters and stats.queued == 0


async def test_waiters_get_freed_slots_in_arrival_order() -> None:
    queue, balancer, _, stats = make_queue({"a": 1})
    await queue.acquire("m", (), deadline(), None)
    order: list[int] = []

    async def wait(n: int) -> None:
        node_id, _ = await queue.acquire("m", (), deadline(), None)
        order.append(n)
        await release(queue, balancer, node_id)

    tasks = []
    for n in range(4):
        tasks.append(asyncio.create_task(wait(n)))
        await queued(queue, n + 1)
    assert stats.queued == 4
    await release(queue, balancer, "a")
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3]
    assert not queue.waiters and stats.queued == 0 and balancer.in_flight("a") == 0


async def test_a_release_wakes_only_as_many_waiters_as_slots_are_free() -> None:
    queue, balancer, _, _ = make_queue({"a": 1, "b": 1})
    await queue.acquire("m", (), deadline(), None)
    await queue.acquire("m", (), deadline(), None)
    tasks = [asyncio.create_task(queue.acquire("m", (), deadline(), None)) for _ in range(3)]
    await queued(queue, 3)
    await release(queue, balancer, "b")
    assert [t.done() for t in tasks] == [True, False, False]
    assert tasks[0].result() == ("b", None)
    await release(queue, balancer, "a")
    assert [t.done() for t in tasks] == [True, True, False]
    assert tasks[1].result() == ("a", None)
    assert len(queue.waiters) == 1
    tasks[2].cancel()
    with pytest.raises(asyncio.CancelledError):
        await tasks[2]


async def test_a_wait_that_times_out_is_refused_with_retry_after() -> None:
    queue, balancer, _, stats = make_queue({"a": 1}, queue_timeout=0.01)
    await queue.acquire("m", (), deadline(), None)
    with pytest.raises(NoCapacity) as caught:
        await queue.acquire("m", (), deadline(), None)
    assert caught.value.status == 503
    assert caught.value.headers == [("retry-after", "1")]  # never below one second
    assert "all nodes serving 'm' are busy; waited 0.01s in the queue" in caught.value.message
    assert not queue.waiters and stats.queued == 0
    assert balancer.in_flight("a") == 1  # the holder's slot only


async def test_the_wait_ends_at_the_requests_own_deadline() -> None:
    queue, _, _, _ = make_queue({"a": 1}, queue_timeout=30.0)
    await queue.acquire("m", (), deadline(), None)
    with pytest.raises(NoCapacity) as caught:
        await queue.acquire("m", (), time.perf_counter() - 1.0, None)
    assert "waited 0s in the queue" in caught.value.message
    assert caught.value.headers == [("retry-after", "7")]  # a quarter of queue_timeout
    assert not queue.waiters


async def test_a_full_queue_refuses_at_once() -> None:
    queue, balancer, _, stats = make_queue({"a": 1}, queue_max=2)
    await queue.acquire("m", (), deadline(), None)
    tasks = [asyncio.create_task(queue.acquire("m", (), deadline(), None)) for _ in range(2)]
    await queued(queue, 2)
    with pytest.raises(NoCapacity) as caught:
        await queue.acquire("m", (), deadline(), None)
    assert caught.value.message == "all nodes serving 'm' are busy and the queue is full"
    assert caught.value.headers == [("retry-after", "7")]
    assert len(queue.waiters) == 2 and stats.queued == 2  # the two waiting keep their places
    await release(queue, balancer, "a")
    assert tasks[0].done() and not tasks[1].done()
    tasks[1].cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_an_empty_queue_bound_refuses_every_wait() -> None:
    queue, _, _, _ = make_queue({"a": 1}, queue_max=0)
    await queue.acquire("m", (), deadline(), None)
    with pytest.raises(NoCapacity, match="queue is full"):
        await queue.acquire("m", (), deadline(), None)


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    queue, balancer, _, stats = make_queue({"a": 1})
    await queue.acquire("m", (), deadline(), None)
    gone = asyncio.create_task(queue.acquire("m", (), deadline(), None))
    await queued(queue, 1)
    stays = asyncio.create_task(queue.acquire("m", (), deadline(), None))
    await queued(queue, 2)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert len(queue.waiters) == 1 and stats.queued == 1
    await release(queue, balancer, "a")
    assert stays.result() == ("a", None)
    assert balancer.in_flight("a") == 1


async def test_a_slot_handed_to_a_waiter_cancelled_meanwhile_goes_to_the_next() -> None:
    """The slot is given (future set) but the waiter is cancelled before it resumes: the slot
    is released again and the next waiter gets it, instead of leaking."""
    queue, balancer, _, stats = make_queue({"a": 1})
    await queue.acquire("m", (), deadline(), None)
    first = asyncio.create_task(queue.acquire("m", (), deadline(), None))
    await queued(queue, 1)
    second = asyncio.create_task(queue.acquire("m", (), deadline(), None))
    await queued(queue, 2)
    balancer.request_finished("a", None)
    queue.drain()  # hands "a" to `first`, which has not run yet
    assert len(queue.waiters) == 1
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await second == ("a", None)
    assert balancer.in_flight("a") == 1  # one holder, no leaked slot
    assert not queue.waiters and stats.queued == 0


async def test_a_waiter_never_gets_a_node_it_excluded() -> None:
    queue, balancer, _, _ = make_queue({"a": 1, "b": 1})
    await queue.acquire("m", (), deadline(), None)
    await queue.acquire("m", (), deadline(), None)
    task = asyncio.create_task(queue.acquire("m", ("a",), deadline(), None))
    await queued(queue, 1)
    await release(queue, balancer, "a")
    assert not task.done()  # "a" was tried already by this request
    await release(queue, balancer, "b")
    assert task.result() == ("b", None)


async def test_a_model_no_node_serves_is_refused_without_waiting() -> None:
    queue, _, _, _ = make_queue({"a": 1})
    with pytest.raises(ModelNotFound, match="model 'other' is not served by any node"):
        await queue.acquire("other", (), deadline(), None)
    assert not queue.waiters


async def test_a_half_open_node_gets_its_one_trial_request() -> None:
    queue, _, registry, _ = make_queue({"a": 4})
    registry.half_open.add("a")
    await queue.acquire("m", (), deadline(), None)
    assert registry.trials == ["a"] and not registry.half_open
    await queue.acquire("m", (), deadline(), None)
    assert registry.trials == ["a"]  # only the first pick is the trial


async def test_a_prompt_prefix_reports_affinity_also_through_the_queue() -> None:
    queue, balancer, _, _ = make_queue({"a": 1})
    prefix = PromptPrefix(hashes=struct.pack("=2Q", 11, 22), anchor=11)
    node_id, affinity = await queue.acquire("m", (), deadline(), prefix)
    assert node_id == "a" and affinity is False  # nothing recorded yet
    task = asyncio.create_task(queue.acquire("m", (), deadline(), prefix))
    await queued(queue, 1)
    await release(queue, balancer, "a")
    assert task.result() == ("a", True)  # "a" served this prefix before
