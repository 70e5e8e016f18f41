"""The agent against a real router (`python -m routercore serve`) with a fake node as its runtime.

Router, runtime and agent are separate processes on free ports, so they can be killed and
restarted; every process is stopped at teardown.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import signal
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import apsw
import psutil
import pytest

from routercore.testing.processes import agent_cmd, fakenode_cmd, free_port, url_ok
from tests.support.agents import Proc, delete, get_json, post_json, router_proc, xvfb_display
from tests.support.netservers import FileServer
from tests.support.polling import wait_until
from tests.support.routers import ADMIN_TOKEN

pytestmark = pytest.mark.slow


class Cluster:
    """Starts routers, fake runtimes and agents; stops them all (agents first) at the end."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[Proc] = []
        self.extra_pids: list[int] = []
        self.env = {"XDG_CONFIG_HOME": str(tmp / "cfg"), "XDG_DATA_HOME": str(tmp / "data")}

    def _log(self, name: str) -> Path:
        return self.tmp / f"{name}-{len(self.procs)}.log"

    def router(self, port: int | None = None, db: str = "router.db", **env: str) -> Proc:
        port = port or free_port()
        proc = router_proc(port, self.tmp / db, self._log("router"))
        proc.env.update(env)
        proc.url = f"http://127.0.0.1:{port}"
        self.procs.append(proc.start())
        wait_until(lambda: self._ready(proc, "/healthz"), timeout=30, message="router ready")
        return proc

    def runtime(self, port: int | None = None, models: str = "alpha,beta") -> Proc:
        port = port or free_port()
        proc = Proc(fakenode_cmd(port, models), self._log("fakenode"))
        proc.url = f"http://127.0.0.1:{port}"
        self.procs.append(proc.start())
        wait_until(lambda: self._ready(proc, "/api/tags"), timeout=30, message="fake runtime")
        return proc

    def agent(self, *args: str, **env: str) -> Proc:
        proc = Proc(agent_cmd(*args), self._log("agent"), {**self.env, **env})
        self.procs.append(proc.start())
        return proc

    @staticmethod
    def _ready(proc: Proc, path: str) -> bool:
        if not proc.alive():
            raise RuntimeError(f"process exited early:\n{proc.log()}")
        return url_ok(proc.url + path)

    def close(self) -> None:
        agents = [p for p in self.procs if "agent" in p.cmd]
        for p in agents:
            p.stop(signal.SIGTERM)
        for p in self.procs:
            p.stop(signal.SIGKILL)
        for pid in self.extra_pids:
            if psutil.pid_exists(pid):
                psutil.Process(pid).kill()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    yield c
    c.close()


def agents(router: Proc) -> list[dict[str, Any]]:
    status, body = get_json(router.url + "/api/agents")
    assert status == 200, body
    return list(body)


def node_named(router: Proc, name: str) -> Callable[[], dict[str, Any] | None]:
    def find() -> dict[str, Any] | None:
        for a in agents(router):
            if a["machine_name"] == name:
                return a
        return None

    return find


def online(router: Proc, name: str, **expect: Any) -> Callable[[], dict[str, Any] | None]:
    """Predicate: the node is online and every `expect` field has the given value."""
    find = node_named(router, name)

    def check() -> dict[str, Any] | None:
        a = find()
        if a is None or a["status"] != "online":
            return None
        return a if all(a.get(k) == v for k, v in expect.items()) else None

    return check


def generate(router: Proc, model: str = "alpha") -> tuple[int, Any]:
    body = {"model": model, "prompt": "hi", "stream": False}
    return post_json(router.url + "/api/generate", body)


def runtime_requests(runtime: Proc) -> int:
    return int(get_json(runtime.url + "/_fake/stats")[1]["requests"].get("/api/generate", 0))


def test_node_online_with_metrics_and_models_then_clean_stop(cluster: Cluster) -> None:
    router = cluster.router()
    runtime = cluster.runtime()
    agent = cluster.agent("--router", router.url, "--runtime-url", runtime.url, "--name", "n1")
    node = wait_until(online(router, "n1", runtime_up=True), message="node online")
    assert sorted(node["models"]) == ["alpha", "beta"]
    assert node["runtime_port"] == int(runtime.url.rsplit(":", 1)[1])
    assert node["ip_address"] == "127.0.0.1"
    assert node["runtime_version"] and node["agent_version"]
    assert node["runtime_kind"] == "ollama"  # the agent detected it and said so
    assert node["system"]["cpu_count"] >= 1 and node["system"]["memory_bytes"] > 0
    node = wait_until(
        lambda: (n := node_named(router, "n1")()) and n["metrics"]["cpu_usage"] is not None and n,
        message="metrics",
    )
    m = node["metrics"]
    assert 0 <= m["cpu_usage"] <= 100 and 0 < m["memory_usage"] <= 100
    assert m["gpu_usage"] is None and m["gpu_memory_usage"] is None  # no nvidia-smi here

    status, _ = generate(router)
    assert status == 200
    assert runtime_requests(runtime) == 1

    assert agent.stop(signal.SIGTERM) == 0
    assert "agent_stopped" in agent.log()
    assert runtime.alive()  # the agent did not start it, so it does not stop it


def test_waits_for_router_with_backoff(cluster: Cluster) -> None:
    port = free_port()
    runtime = cluster.runtime()
    agent = cluster.agent(
        "--router",
        f"http://127.0.0.1:{port}",
        "--runtime-url",
        runtime.url,
        "--name",
        "early",
    )
    wait_until(lambda: agent.log().count("router_problem") >= 2, message="register retries")
    router = cluster.router(port=port)
    wait_until(online(router, "early", runtime_up=True), message="registered once router is up")


def test_router_restart_with_empty_db_reregisters(cluster: Cluster) -> None:
    port = free_port()
    router = cluster.router(port=port, db="first.db")
    runtime = cluster.runtime()
    cluster.agent("--router", router.url, "--runtime-url", runtime.url, "--name", "phoenix")
    first = wait_until(online(router, "phoenix"), message="first registration")

    # Same DB after a crash: the node is known; the agent comes back on its own. (The row is
    # committed by the store's writer thread a moment after the 201; kill only once it is.)
    def stored() -> bool:
        db = apsw.Connection(str(cluster.tmp / "first.db"))
        try:
            row = db.execute("SELECT 1 FROM nodes WHERE id = ?", (first["id"],)).fetchone()
        finally:
            db.close()
        return row is not None

    wait_until(stored, message="registration committed")
    router.stop(signal.SIGKILL)
    router = cluster.router(port=port, db="first.db")
    again = wait_until(online(router, "phoenix", runtime_up=True), message="back after restart")
    assert again["id"] == first["id"]

    # The DB replaced by an empty one: heartbeats get 404 and the agent registers anew.
    router.stop(signal.SIGTERM)
    router = cluster.router(port=port, db="empty.db")
    fresh = wait_until(online(router, "phoenix", runtime_up=True), message="re-registered")
    assert sorted(fresh["models"]) == ["alpha", "beta"]
    assert generate(router)[0] == 200


def test_heartbeat_404_triggers_reregistration(cluster: Cluster) -> None:
    router = cluster.router()
    runtime = cluster.runtime()
    cluster.agent("--router", router.url, "--runtime-url", runtime.url, "--name", "deleted")
    node = wait_until(online(router, "deleted"), message="online")
    assert delete(router.url + f"/api/agents/{node['id']}", token=ADMIN_TOKEN) == 204
    back = wait_until(online(router, "deleted"), message="registered again after delete")
    assert back["id"] != node["id"]


def test_runtime_killed_then_back(cluster: Cluster) -> None:
    router = cluster.router()
    port = free_port()
    runtime = cluster.runtime(port=port)
    cluster.agent(
        "--router", router.url, "--runtime-url", runtime.url, "--name", "rt",
        LLM_AGENT_RUNTIME_POLL_INTERVAL="0.3",
    )  # fmt: skip
    wait_until(online(router, "rt", runtime_up=True), message="online")
    assert generate(router)[0] == 200

    runtime.kill()
    node = wait_until(
        lambda: (n := node_named(router, "rt")()) and n["runtime_up"] is False and n,
        message="runtime_up false",
    )
    assert node["status"] == "online"  # the agent itself still heartbeats
    status, _ = generate(router)
    assert status != 200

    runtime = cluster.runtime(port=port)
    wait_until(online(router, "rt", runtime_up=True), message="runtime back")
    assert generate(router)[0] == 200
    assert runtime_requests(runtime) == 1


def test_several_routers_each_informed(cluster: Cluster) -> None:
    r1, r2 = cluster.router(), cluster.router(db="two.db")
    runtime = cluster.runtime()
    cluster.agent(
        "--router",
        f"{r1.url},{r2.url}",
        "--runtime-url",
        runtime.url,
        "--name",
        "multi",
    )
    wait_until(online(r1, "multi", runtime_up=True), message="online on router 1")
    wait_until(online(r2, "multi", runtime_up=True), message="online on router 2")
    r1.stop(signal.SIGKILL)
    assert generate(r2)[0] == 200
    before = node_named(r2, "multi")()
    assert before is not None
    wait_until(
        lambda: (n := node_named(r2, "multi")()) and n["last_seen"] != before["last_seen"],
        message="router 2 still gets heartbeats",
    )


def test_registration_token(cluster: Cluster) -> None:
    router = cluster.router(LLM_ROUTER_REGISTRATION_TOKEN="let-me-in")
    runtime = cluster.runtime()
    refused = cluster.agent("--router", router.url, "--runtime-url", runtime.url, "--name", "nope")
    wait_until(lambda: "check the registration token" in refused.log(), message="refusal logged")
    assert node_named(router, "nope")() is None
    cluster.agent(
        "--router", router.url, "--runtime-url", runtime.url, "--name", "yes",
        LLM_AGENT_REGISTRATION_TOKEN="let-me-in",
    )  # fmt: skip
    wait_until(online(router, "yes"), message="registered with token")


def test_managed_runtime_started_restarted_and_stopped(cluster: Cluster) -> None:
    router = cluster.router()
    port = free_port()
    command = " ".join(fakenode_cmd(port, "managed"))
    agent = cluster.agent(
        "--router", router.url, "--runtime-url", f"http://127.0.0.1:{port}", "--name", "mgd",
        "--manage-runtime", "--runtime-command", command,
        LLM_AGENT_RUNTIME_POLL_INTERVAL="0.3",
    )  # fmt: skip
    wait_until(online(router, "mgd", runtime_up=True, models=["managed"]), timeout=30, message="up")

    def child() -> psutil.Process | None:
        kids = [
            p for p in psutil.Process(agent.pid).children() if "fakenode" in " ".join(p.cmdline())
        ]
        return kids[0] if kids else None

    first = wait_until(child, message="child runtime")
    cluster.extra_pids.append(first.pid)
    first.kill()
    first.wait(10)
    second = wait_until(
        lambda: (c := child()) and c.pid != first.pid and c, timeout=30, message="restart"
    )
    cluster.extra_pids.append(second.pid)
    assert "runtime_exited" in agent.log()
    wait_until(online(router, "mgd", runtime_up=True), timeout=30, message="up again")

    assert agent.stop(signal.SIGTERM) == 0
    wait_until(
        lambda: not psutil.pid_exists(second.pid) or second.status() == "zombie",
        message="child stopped",
    )
    assert "runtime_stopping" in agent.log()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigint_exits_zero(cluster: Cluster) -> None:
    router = cluster.router()
    runtime = cluster.runtime()
    agent = cluster.agent("--router", router.url, "--runtime-url", runtime.url, "--name", "int")
    wait_until(online(router, "int"), message="online")
    assert agent.stop(signal.SIGINT) == 0


def test_installs_missing_runtime_then_starts_it(cluster: Cluster, tmp_path: Path) -> None:
    router = cluster.router()
    port = free_port()
    fakenode = " ".join(fakenode_cmd(port, "installed")[1:])
    script = f'#!/bin/sh\nexec "{sys.executable}" {fakenode}\n'
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tf:
        info = tarfile.TarInfo("ollama-dist/bin/ollama")
        info.size, info.mode = len(script), 0o755
        tf.addfile(info, io.BytesIO(script.encode()))
    files = FileServer()
    files.files["/releases/ollama-linux.tgz"] = archive.getvalue()
    files.faults["/releases/ollama-linux.tgz"] = ["503", "reset"]
    try:
        agent = cluster.agent(
            "--router", router.url, "--runtime-url", f"http://127.0.0.1:{port}", "--name", "inst",
            "--manage-runtime", "--install-url", files.url("/releases/ollama-linux.tgz"),
            "--install-sha256", hashlib.sha256(archive.getvalue()).hexdigest(),
            LLM_AGENT_RUNTIME_ARGS="", LLM_AGENT_RUNTIME_POLL_INTERVAL="0.3",
        )  # fmt: skip
        wait_until(
            online(router, "inst", runtime_up=True, models=["installed"]), timeout=60, message="up"
        )
    finally:
        files.close()
    exe = tmp_path / "data" / "llm-router" / "runtime" / "ollama-dist" / "bin" / "ollama"
    assert exe.is_file()
    log = agent.log()
    assert "download_retry" in log and "runtime [" in log and "100%" in log
    kids = psutil.Process(agent.pid).children()
    cluster.extra_pids.extend(k.pid for k in kids)
    assert agent.stop(signal.SIGTERM) == 0
    assert all(not psutil.pid_exists(k.pid) or k.status() == "zombie" for k in kids)


def test_pulls_default_model_chosen_by_memory(cluster: Cluster) -> None:
    router = cluster.router()
    runtime = cluster.runtime(models="alpha")
    cluster.agent(
        "--router", router.url, "--runtime-url", runtime.url, "--name", "pull",
        LLM_AGENT_PULL_DEFAULT_MODEL="true", LLM_AGENT_MODEL_TABLE="1000000=huge:405b,0=tiny:1b",
        LLM_AGENT_RUNTIME_POLL_INTERVAL="0.3",
    )  # fmt: skip
    node = wait_until(
        lambda: (n := node_named(router, "pull")()) and "tiny:1b" in n["models"] and n,
        timeout=30,
        message="default model pulled and reported",
    )
    assert "huge:405b" not in node["models"]


def test_tray_under_a_display_and_headless_without(cluster: Cluster) -> None:
    router = cluster.router()
    runtime = cluster.runtime()

    def agent_with_tray_allowed(name: str, display: str, **env: str) -> Proc:
        proc = Proc(
            [sys.executable, "-m", "agent", "--router", router.url, "--runtime-url", runtime.url,
             "--name", name],
            cluster.tmp / f"{name}-agent.log",
            {**cluster.env, "DISPLAY": display, "WAYLAND_DISPLAY": "", **env},
        ).start()  # fmt: skip
        cluster.procs.append(proc)
        return proc

    headless = agent_with_tray_allowed("hl", "")
    wait_until(online(router, "hl"), message="headless online")
    assert "running_headless" in headless.log()

    # A tray backend that fails when run: the agent goes on headless and still stops cleanly.
    broken = agent_with_tray_allowed("broken", ":0", PYSTRAY_BACKEND="dummy")
    wait_until(online(router, "broken"), message="agent online despite a broken tray")
    assert "tray_failed" in broken.log()
    assert broken.stop(signal.SIGTERM) == 0
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb not installed")
    with xvfb_display() as display:
        proc = agent_with_tray_allowed("tray", display)
        try:
            wait_until(online(router, "tray"), message="tray agent online")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nagent log:\n{proc.log()[-4000:]}") from None
        assert "running_headless" not in proc.log()
        assert proc.stop(signal.SIGTERM) == 0
        assert "agent_stopped" in proc.log()


def test_the_agent_sends_its_log_when_the_router_asks(cluster: Cluster) -> None:
    """GET /api/agents/{id}/logs: the question rides on a heartbeat answer, the real agent
    answers with its log tail in the heartbeat right after."""
    from tests.support.routers import http

    router = cluster.router()
    runtime = cluster.runtime()
    cluster.agent("--router", router.url, "--runtime-url", runtime.url, "--name", "logger")
    node = wait_until(online(router, "logger"), message="node online")
    url = f"{router.url}/api/agents/{node['id']}/logs?lines=50"
    assert http("GET", url)[0] == 401
    status, _, body = http("GET", url, token=ADMIN_TOKEN, timeout=30)
    assert status == 200, body
    assert body["agent_id"] == node["id"]
    assert 0 < len(body["lines"]) <= 50
    registered = [line for line in body["lines"] if "registered router=" in line]
    assert registered and " INFO agent.router_client registered router=" in registered[0]
    assert node["id"] in registered[-1]
