"""The node management API over a real socket: shapes, status codes, validation, tokens."""

from __future__ import annotations

import uuid

import pytest

from tests.support.nodes import REGISTRATION, beat, register
from tests.support.routers import ADMIN_TOKEN, http

AGENT_FIELDS = {
    "id",
    "machine_name",
    "custom_name",
    "ip_address",
    "runtime_port",
    "runtime_version",
    "agent_version",
    "status",
    "registered_at",
    "last_seen",
    "online_since",
    "gpu_devices",
    "system",
    "models",
    "tags",
    "notes",
    "metrics",
    "stats",
}


def test_healthz(router):
    assert http("GET", router.url + "/healthz")[::2] == (200, {"status": "ok"})


def test_register_then_again_is_idempotent(router):
    status, _, first = register(router)
    assert status == 201
    assert first["status"] == "registered"
    assert uuid.UUID(first["agent_id"])
    assert first["agent_token"] and first["heartbeat_interval_secs"] == 0.5
    status, _, second = register(router)
    assert status == 200 and second["status"] == "updated"
    assert second["agent_id"] == first["agent_id"]
    assert second["agent_token"] != first["agent_token"]
    # The earlier token stopped working; the new one works.
    assert beat(router, first["agent_id"], first["agent_token"])[0] == 401
    assert beat(router, first["agent_id"], second["agent_token"])[0] == 200
    other = register(router, {**REGISTRATION, "runtime_port": 11435})[2]
    assert other["agent_id"] != first["agent_id"]


def test_list_and_get_have_every_contract_field(router):
    reg = register(router)[2]
    beat(router, reg["agent_id"], reg["agent_token"], gpu_usage=55.0, active_requests=2)
    status, _, agents = http("GET", router.url + "/api/agents")
    assert status == 200 and len(agents) == 1
    agent = agents[0]
    assert set(agent) >= AGENT_FIELDS
    assert "agent_token" not in str(agents) and "token_hash" not in agent
    assert agent["status"] == "online" and agent["ip_address"] == "127.0.0.1"
    assert agent["metrics"] == {
        "cpu_usage": 12.5,
        "memory_usage": 40.0,
        "gpu_usage": 55.0,
        "gpu_memory_usage": None,
        "active_requests": 2,
    }
    assert agent["stats"] == {"total_requests": 0, "failed_requests": 0, "avg_latency_ms": None}
    assert agent["gpu_devices"] == REGISTRATION["gpu_devices"]
    assert agent["system"]["cpu_count"] == 16 and agent["models"] == ["llama3"]
    assert agent["registered_at"].endswith("Z") and agent["online_since"].endswith("Z")
    status, _, one = http("GET", f"{router.url}/api/agents/{reg['agent_id']}")
    assert status == 200 and one["id"] == reg["agent_id"]
    status, _, missing = http("GET", f"{router.url}/api/agents/{uuid.uuid4()}")
    assert status == 404 and isinstance(missing["error"], str)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "machine_name"),
        ({"machine_name": ""}, "machine_name"),
        ({"machine_name": 5}, "machine_name"),
        ({"machine_name": "m", "runtime_port": "80"}, "runtime_port"),
        ({"machine_name": "m", "runtime_port": 70000}, "runtime_port"),
        ({"machine_name": "m", "models": "llama3"}, "models"),
        ({"machine_name": "m", "models": [1, 2]}, "models"),
        ({"machine_name": "m", "gpu_devices": {"model": "x"}}, "gpu_devices"),
        ({"machine_name": "m", "system": []}, "system"),
        ({"machine_name": "m", "max_concurrency": -1}, "max_concurrency"),
        ({"machine_name": "m", "ip_address": "not-an-ip"}, "ip_address"),
    ],
)
def test_register_validation_names_the_field(router, body, field):
    status, _, payload = register(router, body)
    assert status == 400
    assert field in payload["error"]


def test_register_rejects_bad_json(router):
    for raw in (b"", b"{", b"[]", b"null"):
        status, _, payload = http("POST", router.url + "/api/agents/register", raw=raw)
        assert status == 400 and isinstance(payload["error"], str)


def test_heartbeat_errors(router):
    reg = register(router)[2]
    assert beat(router, str(uuid.uuid4()), reg["agent_token"])[0] == 404
    status, _headers, payload = beat(router, reg["agent_id"], "wrong")
    assert status == 401 and isinstance(payload["error"], str)
    assert beat(router, reg["agent_id"], None)[0] == 401
    status, _, payload = beat(router, reg["agent_id"], reg["agent_token"], cpu_usage=150)
    assert status == 400 and "cpu_usage" in payload["error"]
    status, _, payload = beat(router, reg["agent_id"], reg["agent_token"], runtime_up="yes")
    assert status == 400 and "runtime_up" in payload["error"]


def test_patch_delete_disconnect_need_admin(router):
    reg = register(router)[2]
    url = f"{router.url}/api/agents/{reg['agent_id']}"
    assert http("PATCH", url, {"custom_name": "x"})[0] == 401
    assert http("PATCH", url, {"custom_name": "x"}, token="nope")[0] == 401
    assert http("DELETE", url)[0] == 401
    assert http("POST", url + "/disconnect")[0] == 401
    status, _, node = http(
        "PATCH",
        url,
        {
            "custom_name": "Big GPU",
            "tags": ["lab", "4090"],
            "notes": "desk",
            "max_concurrency": 4,
            "enabled": False,
        },
        token=ADMIN_TOKEN,
    )
    assert status == 200
    assert (node["custom_name"], node["tags"], node["notes"]) == (
        "Big GPU",
        ["lab", "4090"],
        "desk",
    )
    assert node["max_concurrency"] == 4 and node["enabled"] is False
    status, _, payload = http("PATCH", url, {"colour": "red"}, token=ADMIN_TOKEN)
    assert status == 400 and "colour" in payload["error"]
    status, _, payload = http("PATCH", url, {"enabled": "no"}, token=ADMIN_TOKEN)
    assert status == 400 and "enabled" in payload["error"]


def test_disconnect_keeps_node_offline_until_it_registers_again(router):
    reg = register(router)[2]
    url = f"{router.url}/api/agents/{reg['agent_id']}"
    status, _, node = http("POST", url + "/disconnect", token=ADMIN_TOKEN)
    assert status == 200 and node["status"] == "offline"
    status, _, answer = beat(router, reg["agent_id"], reg["agent_token"])
    assert status == 200 and answer["status"] == "disconnected"
    assert http("GET", url)[2]["status"] == "offline"
    again = register(router)[2]
    assert again["agent_id"] == reg["agent_id"]
    assert http("GET", url)[2]["status"] == "online"


def test_delete_removes_the_node(router):
    reg = register(router)[2]
    url = f"{router.url}/api/agents/{reg['agent_id']}"
    assert http("DELETE", url, token=ADMIN_TOKEN)[0] == 204
    assert http("GET", url)[0] == 404
    assert http("DELETE", url, token=ADMIN_TOKEN)[0] == 404
    assert beat(router, reg["agent_id"], reg["agent_token"])[0] == 404


def test_registration_token(router_factory):
    router = router_factory(registration_token="join-me")
    assert register(router)[0] == 401
    assert register(router, token="wrong")[0] == 401
    assert register(router, token="join-me")[0] == 201


def test_closed_reads(router_factory):
    router = router_factory(open_reads=False)
    assert http("GET", router.url + "/api/agents")[0] == 401
    assert http("GET", router.url + "/api/agents", token=ADMIN_TOKEN)[0] == 200
    assert http("GET", router.url + "/healthz")[0] == 200


def test_foreign_ip_address_is_refused(router_factory):
    router = router_factory()
    status, _, payload = register(router, {**REGISTRATION, "ip_address": "192.0.2.10"})
    assert status == 403 and "ip_address" in payload["error"]
    assert http("GET", router.url + "/api/agents")[2] == []
    allowed = router_factory(allowed_node_addresses="192.0.2.10")
    status, _, _reg = register(allowed, {**REGISTRATION, "ip_address": "192.0.2.10"})
    assert status == 201
    assert http("GET", allowed.url + "/api/agents")[2][0]["ip_address"] == "192.0.2.10"


def test_unknown_route_and_method(router):
    status, _, payload = http("GET", router.url + "/api/nothing")
    assert status == 404 and isinstance(payload["error"], str)
    status, _, payload = http("GET", router.url + "/v1/nothing")
    assert status == 404 and payload["error"]["message"]
    status, headers, _ = http("DELETE", router.url + "/api/agents")
    assert status == 405 and "GET" in headers["allow"]
