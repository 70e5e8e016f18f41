"""HealthMonitor (routercore/health.py) on a fake clock: the probe schedule of unreachable nodes
(first probe after `probe_interval`, doubling after each failure up to `probe_max_interval`),
heartbeat timeouts for unreachable nodes as well, and the monitor's own loop driving heartbeats
and circuit breakers. Probes go to real sockets on loopback (a closed port, a tiny server)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from routercore.balancer import make_balancer
from routercore.breaker import HALF_OPEN, OPEN
from routercore.config import RouterConfig
from routercore.health import HealthMonitor
from routercore.node import OFFLINE, ONLINE, UNREACHABLE, Node, NodeMetrics
from routercore.registry import NodeRegistry
from tests.support.polling import eventually
from tests.support.registry_fakes import Clock, MemoryNodeStore
from tests.support.runtimes import answering


def closed_port() -> int:
    """A loopback port nothing listens on (connecting to it is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def setup(
    clock: Clock, port: int, *, probe_interval: float = 5, probe_max_interval: float = 30
) -> tuple[NodeRegistry, Any, HealthMonitor, Node]:
    balancer: Any = make_balancer("round_robin", "python")
    registry = NodeRegistry(
        MemoryNodeStore(), balancer, breaker_failures=2, breaker_backoff=5, clock=clock
    )
    monitor = HealthMonitor(
        registry,
        RouterConfig(
            heartbeat_timeout=30,
            heartbeat_interval=10,
            probe_interval=probe_interval,
            probe_max_interval=probe_max_interval,
            connect_timeout=2,
        ),
        clock=clock,
    )
    node, _, _ = registry.register(
        machine_name="a", ip_address="127.0.0.1", runtime_port=port, details={"models": ["m"]}
    )
    return registry, balancer, monitor, node


async def run_due_probes(monitor: HealthMonitor) -> int:
    """Starts the probes that are due and waits for them; returns how many ran."""
    monitor.start_due_probes()
    started = len(monitor.tasks)
    await asyncio.gather(*monitor.tasks)
    return started


async def test_probes_of_an_unreachable_node_back_off_doubling_up_to_the_cap() -> None:
    clock = Clock()
    registry, balancer, monitor, node = setup(clock, closed_port())
    registry.mark_unreachable(node.id, "stream cut")
    assert monitor.probes[node.id] == (clock.now + 5, 5)
    clock.now += 4.9
    assert await run_due_probes(monitor) == 0  # not due yet
    assert monitor.next_check_in(node) == pytest.approx(0.1)
    waits = []
    for _ in range(5):
        due, _backoff = monitor.probes[node.id]
        clock.now = due
        assert await run_due_probes(monitor) == 1
        waits.append(monitor.probes[node.id][0] - clock.now)
        assert monitor.next_check_in(node) == waits[-1]
    assert waits == [10, 20, 30, 30, 30]
    assert node.status == UNREACHABLE and node.unreachable_reason == "connect refused"
    assert balancer.pick("m") is None
    assert monitor.describe(node)["next_check_in_secs"] == 30
    assert monitor.retry_after("m") == 30


async def test_a_scheduled_probe_that_is_answered_ends_the_schedule() -> None:
    server, port = await answering("503 Loading")
    clock = Clock()
    registry, balancer, monitor, node = setup(clock, port, probe_interval=2, probe_max_interval=8)
    try:
        registry.mark_unreachable(node.id, "connect refused")
        clock.now += 2
        assert await run_due_probes(monitor) == 1
        assert node.status == ONLINE and node.reachable and balancer.pick("m") == node.id
        assert node.id not in monitor.probes and monitor.next_check_in(node) is None
        clock.now += 100
        assert await run_due_probes(monitor) == 0  # nothing left to probe
    finally:
        server.close()
        await server.wait_closed()


async def test_an_unreachable_node_that_falls_silent_goes_offline_and_is_not_probed() -> None:
    clock = Clock()
    registry, balancer, monitor, node = setup(clock, closed_port())
    registry.mark_unreachable(node.id, "connect refused")
    clock.now += 29
    monitor.check_heartbeats()
    assert node.status == UNREACHABLE
    clock.now += 2  # 31 s without a heartbeat
    monitor.check_heartbeats()
    assert node.status == OFFLINE and balancer.pick("m") is None
    assert node.id not in monitor.probes
    assert await run_due_probes(monitor) == 0
    health = monitor.describe(node)
    assert health["reason"] == "offline: no heartbeat" and not health["in_rotation"]
    assert monitor.retry_after("m") == 10  # the next heartbeat may bring it back


async def test_the_monitor_loop_marks_silence_and_gives_due_breakers_their_trial() -> None:
    clock = Clock()
    registry, balancer, monitor, node = setup(clock, closed_port())
    quiet, _, _ = registry.register(
        machine_name="b", ip_address="127.0.0.1", runtime_port=1, details={"models": ["q"]}
    )
    loop_task = asyncio.create_task(monitor.run())
    try:
        registry.request_failed(node.id, "node answered 500")
        registry.request_failed(node.id, "node answered 500")
        brk = registry.breakers[node.id]
        assert brk.state == OPEN and balancer.pick("m") is None
        clock.now += 5
        await eventually(lambda: brk.state == HALF_OPEN)
        assert node.id in registry.half_open and balancer.pick("m") == node.id
        registry.start_trial(node.id)
        registry.request_failed(node.id, "node answered 500")  # the trial failed
        assert brk.state == OPEN and balancer.pick("m") is None
        assert monitor.next_check_in(node) == 10  # the breaker's backoff doubled
        clock.now += 10
        await eventually(lambda: brk.state == HALF_OPEN)
        registry.start_trial(node.id)
        registry.request_succeeded(node.id)
        assert balancer.pick("m") == node.id
        # Both nodes were registered at the start; only `a` keeps beating.
        registry.heartbeat(node, NodeMetrics(), ["m"], True)
        clock.now += 16
        await eventually(lambda: quiet.status == OFFLINE)
        assert node.status == ONLINE
    finally:
        loop_task.cancel()
        await asyncio.gather(loop_task, return_exceptions=True)
