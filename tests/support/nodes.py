"""A node's registration and heartbeat as its agent sends them, for the API tests."""

from __future__ import annotations

from typing import Any

from tests.support.routers import http

REGISTRATION = {
    "machine_name": "gpu-box",
    "runtime_port": 11434,
    "runtime_version": "0.5.7",
    "agent_version": "0.1.0",
    "gpu_devices": [{"model": "RTX 4090", "count": 1, "memory_bytes": 25769803776}],
    "models": ["llama3", "qwen2"],
    "system": {
        "os": "Windows 11",
        "cpu_model": "Ryzen",
        "cpu_count": 16,
        "memory_bytes": 68719476736,
    },
}


def register(
    router: Any, body: dict[str, Any] | None = None, token: str | None = None
) -> tuple[int, dict[str, str], Any]:
    """POST a registration (REGISTRATION unless `body`) to `router`."""
    payload = REGISTRATION if body is None else body
    return http("POST", router.url + "/api/agents/register", payload, token=token)


def beat(router: Any, agent_id: str, token: str, **fields: Any) -> tuple[int, dict[str, str], Any]:
    """POST a heartbeat of a healthy, idle node; `fields` override its values."""
    body = {
        "agent_id": agent_id,
        "cpu_usage": 12.5,
        "memory_usage": 40.0,
        "gpu_usage": None,
        "gpu_memory_usage": None,
        "active_requests": 0,
        "models": ["llama3"],
        "runtime_up": True,
        **fields,
    }
    return http("POST", router.url + "/api/health", body, token=token)
