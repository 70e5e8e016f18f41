"""The agent's service in-process against a real router: pause/resume and the tray's states."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.cli import run_service
from agent.config import load_config
from agent.service import AgentService
from agent.state import DEGRADED, OFFLINE, ONLINE
from routercore.testing.fakenode import ThreadedFakeNode, run_in_thread
from routercore.testing.processes import free_port, url_ok
from tests.support.agents import Proc, get_json, post_json, router_proc
from tests.support.polling import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def router(tmp_path: Path) -> Iterator[Proc]:
    port = free_port()
    proc = router_proc(port, tmp_path / "r.db", tmp_path / "router.log").start()
    proc.url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: url_ok(proc.url + "/healthz"), timeout=30, message="router")
        yield proc
    finally:
        proc.stop(signal.SIGKILL)


@pytest.fixture
def runtime() -> Iterator[ThreadedFakeNode]:
    node = run_in_thread(models=["alpha"])
    yield node
    node.close()


@pytest.fixture
def service(router: Proc, runtime: ThreadedFakeNode, tmp_path: Path) -> Iterator[AgentService]:
    cfg = load_config(
        {
            "router_url": router.url,
            "runtime_url": runtime.url,
            "node_name": "svc",
            "runtime_poll_interval": "0.3",
            "install_dir": str(tmp_path / "rt"),
        },
        {"XDG_CONFIG_HOME": str(tmp_path)},
    )
    svc = AgentService(cfg, env={})
    thread = threading.Thread(target=run_service, args=(svc,), daemon=True)
    thread.start()
    yield svc
    svc.request_stop()
    thread.join(30)
    assert not thread.is_alive()


def node(router: Proc) -> dict[str, object] | None:
    found = [a for a in get_json(router.url + "/api/agents")[1] if a["machine_name"] == "svc"]
    return found[0] if found else None


def generate(router: Proc) -> int:
    body = {"model": "alpha", "prompt": "x", "stream": False}
    return post_json(router.url + "/api/generate", body)[0]


def test_pause_stops_traffic_and_resume_restores_it(
    service: AgentService, router: Proc, runtime: ThreadedFakeNode
) -> None:
    wait_until(lambda: service.state.snapshot.status == ONLINE, message="online state")
    wait_until(lambda: (n := node(router)) and n["runtime_up"] is True, message="listed up")
    assert generate(router) == 200
    served = get_json(runtime.url + "/_fake/stats")[1]["requests_total"]

    service.set_paused(True)
    assert service.state.snapshot.status == DEGRADED
    wait_until(lambda: (n := node(router)) and n["runtime_up"] is False, message="listed paused")
    assert generate(router) != 200
    assert get_json(runtime.url + "/_fake/stats")[1]["requests_total"] == served

    service.set_paused(False)
    wait_until(lambda: (n := node(router)) and n["runtime_up"] is True, message="listed resumed")
    assert generate(router) == 200


def test_state_follows_router(service: AgentService, router: Proc) -> None:
    wait_until(lambda: service.state.snapshot.status == ONLINE, message="online state")
    link = service.state.snapshot.routers[0]
    assert link.registered and link.agent_id and link.error is None
    router.stop(signal.SIGKILL)
    wait_until(lambda: service.state.snapshot.status == OFFLINE, message="offline state")
    assert service.state.snapshot.routers[0].error
