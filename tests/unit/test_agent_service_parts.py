"""AgentService pieces that need no network: payloads, pause, memory for the model table."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agent.config import load_config
from agent.metrics import MetricsCollector, parse_nvidia_smi, summarize_gpus
from agent.models import GIB
from agent.runtime import RuntimeStatus
from agent.service import AgentService


def service(tmp_path: Path, gpu_output: str = "", **flags: str) -> AgentService:
    cfg = load_config(flags, {"XDG_CONFIG_HOME": str(tmp_path)})
    collector = MetricsCollector(gpu_query=lambda: summarize_gpus(parse_nvidia_smi(gpu_output)))
    return AgentService(cfg, env={}, collector=collector)


def test_model_memory_prefers_gpu_memory(tmp_path: Path) -> None:
    two_gpus = "1, 1, 24576, RTX\n1, 1, 24576, RTX\n"
    assert service(tmp_path, two_gpus).model_memory_bytes() == 48 * GIB
    no_gpu = service(tmp_path).model_memory_bytes()
    assert no_gpu > 0  # system RAM


def test_pause_reports_runtime_down_but_keeps_models(tmp_path: Path) -> None:
    svc = service(tmp_path)
    svc.runtime = RuntimeStatus(True, "ollama", "1.0", ("a",), ("a",))
    hb = asyncio.run(svc.heartbeat_payload())
    assert hb["runtime_up"] is True and hb["paused"] is False
    svc.set_paused(True)  # no loop running: only the state changes
    hb = asyncio.run(svc.heartbeat_payload())
    assert hb["runtime_up"] is False and hb["paused"] is True and hb["models"] == ["a"]
    assert hb["running_models"] == ["a"] and hb["active_requests"] == 0


def test_registration_payload(tmp_path: Path) -> None:
    svc = service(tmp_path, "5, 100, 1000, T4\n", node_name="box", runtime_url="http://h:8000")
    svc.runtime = RuntimeStatus(True, "openai", None, ("m",), ("m",))
    body = asyncio.run(svc.registration_payload())
    assert body["machine_name"] == "box" and body["runtime_port"] == 8000
    assert body["models"] == ["m"] and body["gpu_devices"][0]["model"] == "T4"
    assert "runtime_version" not in body and "ip_address" not in body
    assert "max_concurrency" not in body


def test_request_stop_before_run_is_not_lost(tmp_path: Path) -> None:
    svc = service(tmp_path, router_url="http://127.0.0.1:9", runtime_url="http://127.0.0.1:9")
    svc.request_stop()
    asyncio.run(asyncio.wait_for(svc.run(), 30))  # returns at once instead of running forever
    assert all(not r.registered for r in svc.state.snapshot.routers)
