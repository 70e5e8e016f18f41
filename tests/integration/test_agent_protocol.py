"""The exact requests the agent sends, seen by a recording stand-in for the router.

The real router is exercised in test_agent_router.py; this one checks wire details the real
router would accept either way: headers, the fields sent and not sent, the 404 path.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agent.cli import run_service
from agent.config import load_config
from agent.service import AgentService
from routercore.testing.fakenode import ThreadedFakeNode, run_in_thread
from tests.support.polling import wait_until

CONTRACT_HEARTBEAT = {
    "agent_id",
    "cpu_usage",
    "memory_usage",
    "gpu_usage",
    "gpu_memory_usage",
    "active_requests",
    "models",
    "runtime_up",
}


class RecordingRouter:
    """Answers register with a fresh token each time; heartbeats 200, or 404 when told to."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.fail_next_heartbeat = threading.Event()
        router = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                call = {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
                router.calls.append(call)
                if self.path == "/api/agents/register":
                    n = sum(c["path"] == self.path for c in router.calls)
                    reply: dict[str, Any] = {
                        "agent_id": "agent-1",
                        "status": "registered",
                        "agent_token": f"token-{n}",
                        "heartbeat_interval_secs": 0.2,
                    }
                    status = 201
                elif self.path == "/api/health":
                    if router.fail_next_heartbeat.is_set():
                        router.fail_next_heartbeat.clear()
                        status, reply = 404, {"error": "unknown agent"}
                    else:
                        status, reply = 200, {"status": "ok"}
                else:
                    status, reply = 404, {"error": "no route"}
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def of(self, path: str) -> list[dict[str, Any]]:
        return [c for c in list(self.calls) if c["path"] == path]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def router() -> Iterator[RecordingRouter]:
    r = RecordingRouter()
    yield r
    r.close()


@pytest.fixture
def runtime() -> Iterator[ThreadedFakeNode]:
    node = run_in_thread(models=["m1", "m2"])
    yield node
    node.close()


@contextlib.contextmanager
def run_agent(tmp_path: Path, **flags: str) -> Iterator[AgentService]:
    cfg = load_config(
        {"install_dir": str(tmp_path / "rt"), **flags}, {"XDG_CONFIG_HOME": str(tmp_path)}
    )
    svc = AgentService(cfg, env={})
    thread = threading.Thread(target=run_service, args=(svc,), daemon=True)
    thread.start()
    try:
        yield svc
    finally:
        svc.request_stop()
        thread.join(30)
        assert not thread.is_alive()


def test_register_and_heartbeat_bodies(
    router: RecordingRouter, runtime: ThreadedFakeNode, tmp_path: Path
) -> None:
    with run_agent(tmp_path, router_url=router.url, runtime_url=runtime.url, node_name="wire"):
        wait_until(lambda: len(router.of("/api/health")) >= 3, message="heartbeats")
    reg = router.of("/api/agents/register")[0]
    assert reg["auth"] is None  # no registration token configured
    body = reg["body"]
    assert body["machine_name"] == "wire"
    assert body["runtime_port"] == runtime.port
    assert sorted(body["models"]) == ["m1", "m2"]
    assert body["gpu_devices"] == [] or all("model" in d for d in body["gpu_devices"])
    assert set(body["system"]) == {"os", "cpu_model", "cpu_count", "memory_bytes"}
    assert "agent_version" in body and "runtime_version" in body
    assert "ip_address" not in body  # the router uses the connection's peer address

    for hb in router.of("/api/health"):
        assert hb["auth"] == "Bearer token-1"
        assert set(hb["body"]) >= CONTRACT_HEARTBEAT
        assert hb["body"]["agent_id"] == "agent-1"
        assert hb["body"]["runtime_up"] is True and hb["body"]["paused"] is False
        assert sorted(hb["body"]["models"]) == ["m1", "m2"]


def test_404_reregisters_and_uses_the_new_token(
    router: RecordingRouter, runtime: ThreadedFakeNode, tmp_path: Path
) -> None:
    with run_agent(tmp_path, router_url=router.url, runtime_url=runtime.url):
        wait_until(lambda: len(router.of("/api/health")) >= 1, message="first heartbeat")
        router.fail_next_heartbeat.set()
        wait_until(lambda: len(router.of("/api/agents/register")) == 2, message="re-register")
        wait_until(
            lambda: router.of("/api/health")[-1]["auth"] == "Bearer token-2", message="new token"
        )


def test_token_and_ip_address_when_configured(
    router: RecordingRouter, runtime: ThreadedFakeNode, tmp_path: Path
) -> None:
    with run_agent(
        tmp_path,
        router_url=router.url,
        runtime_url=runtime.url,
        registration_token="reg-tok",
        ip_address="127.0.0.1",
        max_concurrency="4",
    ):
        wait_until(lambda: router.of("/api/health"), message="heartbeat")
    reg = router.of("/api/agents/register")[0]
    assert reg["auth"] == "Bearer reg-tok"
    assert reg["body"]["ip_address"] == "127.0.0.1"
    assert reg["body"]["max_concurrency"] == 4
    assert router.of("/api/health")[0]["auth"] == "Bearer token-1"  # not the registration token


def test_runtime_down_is_reported(router: RecordingRouter, tmp_path: Path) -> None:
    from routercore.testing.processes import free_port

    with run_agent(tmp_path, router_url=router.url, runtime_url=f"http://127.0.0.1:{free_port()}"):
        wait_until(lambda: router.of("/api/health"), message="heartbeat")
    hb = router.of("/api/health")[0]["body"]
    assert hb["runtime_up"] is False and hb["models"] == []
