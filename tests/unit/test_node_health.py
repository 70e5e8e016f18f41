"""Node health without sockets: the circuit breaker, and the registry's two sources of truth
(heartbeats keep liveness; only the router's probe clears `unreachable`), on a fake clock."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from routercore.balancer import make_balancer
from routercore.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from routercore.config import RouterConfig
from routercore.health import HealthMonitor, probe_runtime
from routercore.http.upstream import UpstreamPool
from routercore.node import OFFLINE, ONLINE, UNREACHABLE, Node, NodeMetrics
from routercore.registry import NodeRegistry
from tests.support.registry_fakes import Clock, MemoryNodeStore
from tests.support.runtimes import answering

# -- the breaker ---------------------------------------------------------------------------------


def test_breaker_opens_after_threshold_consecutive_failures() -> None:
    clock = Clock()
    brk = CircuitBreaker(threshold=3, backoff=5, max_backoff=60, clock=clock)
    assert not brk.failure() and not brk.failure()
    assert brk.state == CLOSED and brk.admits
    assert brk.failure()
    assert brk.state == OPEN and not brk.admits
    assert brk.seconds_to_trial() == 5


def test_a_success_resets_the_count() -> None:
    brk = CircuitBreaker(threshold=3, backoff=5, max_backoff=60, clock=Clock())
    for _ in range(10):
        brk.failure()
        brk.failure()
        brk.success()
    assert brk.state == CLOSED and brk.failures == 0


def test_half_open_lets_one_trial_through_and_its_verdict_decides() -> None:
    clock = Clock()
    brk = CircuitBreaker(threshold=1, backoff=5, max_backoff=60, clock=clock)
    brk.failure()
    assert not brk.due()
    clock.now += 5
    assert brk.due() and brk.state == HALF_OPEN and brk.admits
    brk.start_trial()
    assert not brk.admits  # nobody else while the trial runs
    brk.failure()  # the trial failed: open again, twice as long
    assert brk.state == OPEN and brk.seconds_to_trial() == 10
    clock.now += 10
    assert brk.due()
    brk.start_trial()
    brk.abandon_trial()  # the client left: no verdict, another request may try
    assert brk.admits
    brk.start_trial()
    assert brk.success()
    assert brk.state == CLOSED and brk.admits and brk.backoff == 5


def test_backoff_is_capped() -> None:
    clock = Clock()
    brk = CircuitBreaker(threshold=1, backoff=5, max_backoff=12, clock=clock)
    brk.failure()
    for _ in range(5):
        clock.now += 100
        brk.due()
        brk.start_trial()
        brk.failure()
    assert brk.seconds_to_trial() == 12


def test_threshold_zero_never_opens() -> None:
    brk = CircuitBreaker(threshold=0, backoff=5, max_backoff=60, clock=Clock())
    for _ in range(100):
        assert not brk.failure()
    assert brk.admits


# -- the registry --------------------------------------------------------------------------------


def make_registry(clock: Clock, failures: int = 2) -> tuple[NodeRegistry, Any]:
    balancer = make_balancer("round_robin", "python")
    registry = NodeRegistry(
        MemoryNodeStore(), balancer, breaker_failures=failures, breaker_backoff=5, clock=clock
    )
    return registry, balancer


def make_monitor(registry: NodeRegistry, clock: Clock, **config: Any) -> HealthMonitor:
    """A monitor with a 30 s heartbeat timeout and probes every 5 s backing off to 60 s."""
    timings = RouterConfig(
        heartbeat_timeout=30, probe_interval=5, probe_max_interval=60, connect_timeout=1, **config
    )
    return HealthMonitor(registry, timings, clock=clock)


def register(registry: NodeRegistry, name: str = "a", models: tuple[str, ...] = ("m",)) -> Node:
    node, _, _ = registry.register(
        machine_name=name, ip_address="127.0.0.1", runtime_port=1, details={"models": list(models)}
    )
    return node


def test_heartbeat_does_not_revive_an_unreachable_node() -> None:
    registry, balancer = make_registry(Clock())
    node = register(registry)
    registry.mark_unreachable(node.id, "connect refused")
    registry.heartbeat(node, NodeMetrics(), ["m"], True)
    assert node.status == UNREACHABLE and balancer.pick("m") is None
    registry.mark_reachable(node.id)  # the probe answered
    assert node.status == ONLINE and balancer.pick("m") == node.id


def test_reachability_outlives_an_offline_spell_and_a_registration() -> None:
    registry, balancer = make_registry(Clock())
    probed: list[tuple[str, str]] = []
    registry.prober = lambda node_id, why: probed.append((node_id, why))
    node = register(registry)
    registry.mark_unreachable(node.id, "connect refused")
    registry.mark_offline(node.id, "no heartbeat")
    assert node.status == OFFLINE
    registry.heartbeat(node, NodeMetrics(), ["m"], True)
    assert node.status == UNREACHABLE  # alive again, still not reachable
    register(registry)  # the agent restarts: an immediate probe, no revival
    assert node.status == UNREACHABLE and balancer.pick("m") is None
    assert probed == [
        (node.id, "its agent reports the runtime up"),
        (node.id, "its agent registered again"),
    ]


def test_breaker_takes_a_failing_node_out_and_a_trial_brings_it_back() -> None:
    clock = Clock()
    registry, balancer = make_registry(clock, failures=2)
    node = register(registry)
    registry.request_failed(node.id, "node answered 500")
    assert balancer.pick("m") == node.id  # one failure: still in rotation
    registry.request_failed(node.id, "node answered 500")
    assert node.status == ONLINE and balancer.pick("m") is None
    clock.now += 5
    registry.check_breakers()
    assert node.id in registry.half_open and balancer.pick("m") == node.id
    registry.start_trial(node.id)
    assert balancer.pick("m") is None  # the trial is the only request it gets
    registry.request_succeeded(node.id)
    assert balancer.pick("m") == node.id and registry.breakers[node.id].state == CLOSED


def test_lists_model_counts_any_enabled_node_whatever_its_state() -> None:
    registry, _ = make_registry(Clock())
    node = register(registry, models=("m",))
    registry.mark_offline(node.id, "gone")
    assert registry.lists_model("m")
    registry.update(node, {"enabled": False})
    assert not registry.lists_model("m")
    assert not registry.lists_model("other")


# -- the health monitor's answers ------------------------------------------------------------------


def test_describe_and_retry_after_say_why_and_when() -> None:
    clock = Clock()
    registry, _ = make_registry(clock, failures=1)
    monitor = make_monitor(registry, clock, heartbeat_interval=10)
    a = register(registry, "a")
    b = register(registry, "b")
    assert monitor.describe(a) == {
        "in_rotation": True,
        "reason": None,
        "breaker": {"state": "closed", "consecutive_failures": 0},
        "next_check_in_secs": None,
    }
    registry.mark_unreachable(a.id, "connect refused")
    registry.request_failed(b.id, "node answered 500")
    clock.now += 2
    da, db = monitor.describe(a), monitor.describe(b)
    assert da["reason"] == "unreachable: connect refused" and da["next_check_in_secs"] == 3
    assert db["reason"] == "breaker open: 1 failures" and db["next_check_in_secs"] == 3
    assert not da["in_rotation"] and not db["in_rotation"]
    assert monitor.retry_after("m") == 3
    registry.mark_offline(a.id, "silent")
    registry.mark_offline(b.id, "silent")
    assert monitor.retry_after("m") == 10  # offline: the next heartbeat may bring it back


def test_heartbeat_timeout_marks_offline() -> None:
    clock = Clock()
    registry, _ = make_registry(clock)
    monitor = make_monitor(registry, clock)
    node = register(registry)
    clock.now += 29
    monitor.check_heartbeats()
    assert node.status == ONLINE
    clock.now += 2
    monitor.check_heartbeats()
    assert node.status == OFFLINE


async def test_probe_runtime_names_the_failure() -> None:
    pool = UpstreamPool(connect_timeout=1.0, max_idle=0)
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    assert await probe_runtime(pool, "127.0.0.1", port, 1.0) == "closed without an HTTP answer"
    server.close()
    await server.wait_closed()
    assert await probe_runtime(pool, "127.0.0.1", port, 1.0) == "connect refused"

    server, port = await answering("404 Not Found")
    assert await probe_runtime(pool, "127.0.0.1", port, 1.0) is None  # any HTTP status: up
    server.close()
    await server.wait_closed()

    async def not_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await writer.drain()

    server = await asyncio.start_server(not_http, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    assert await probe_runtime(pool, "127.0.0.1", port, 1.0) == "not an HTTP answer"
    server.close()
    await server.wait_closed()

    async def malformed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nx a: b\r\n\r\n")  # HTTP, with a field name it may not use
        await writer.drain()

    server = await asyncio.start_server(malformed, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    assert await probe_runtime(pool, "127.0.0.1", port, 1.0) is None  # up; requests get a 502
    server.close()
    await server.wait_closed()
    assert pool.active == set() and pool.idle_count() == 0  # every probe's connection closed


async def test_a_suspect_node_is_probed_at_once_and_marked_only_if_the_probe_fails() -> None:
    clock = Clock()
    registry, balancer = make_registry(clock)
    monitor = make_monitor(registry, clock)

    server, port = await answering("200 OK")
    node, _, _ = registry.register(
        machine_name="a", ip_address="127.0.0.1", runtime_port=port, details={"models": ["m"]}
    )
    registry.suspect(node.id, "stream cut")
    await asyncio.gather(*monitor.tasks)
    assert node.status == ONLINE and balancer.pick("m") == node.id
    server.close()
    await server.wait_closed()
    registry.suspect(node.id, "stream cut")
    await asyncio.gather(*monitor.tasks)
    assert node.status == UNREACHABLE and node.unreachable_reason == "connect refused"


@pytest.mark.parametrize("failures", [1, 3])
def test_breaker_setting_reaches_the_registry(failures: int) -> None:
    registry, balancer = make_registry(Clock(), failures=failures)
    node = register(registry)
    for _ in range(failures - 1):
        registry.request_failed(node.id, "x")
    assert balancer.pick("m") == node.id
    registry.request_failed(node.id, "x")
    assert balancer.pick("m") is None


def test_a_runtime_down_heartbeat_keeps_the_models_and_an_up_one_asks_for_a_probe() -> None:
    registry, _ = make_registry(Clock())
    probed: list[str] = []
    registry.prober = lambda node_id, why: probed.append(why)
    node = register(registry, models=("m",))
    registry.mark_unreachable(node.id, "connect refused")
    registry.heartbeat(node, NodeMetrics(), [], False)  # the agent: runtime down, no models
    assert node.models == ["m"] and registry.lists_model("m")  # unavailable, not unknown
    assert probed == []
    registry.heartbeat(node, NodeMetrics(), ["m"], True)
    assert probed == ["its agent reports the runtime up"]
    assert node.status == UNREACHABLE  # the probe decides, not the heartbeat
    registry.heartbeat(node, NodeMetrics(), [], True)  # up, and really no models now
    assert node.models == []
