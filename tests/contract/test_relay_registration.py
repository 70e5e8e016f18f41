"""Registering a relayed node: `relay_port` + `relay_token` (CONTRACT), validation, what
`GET /api/agents` shows, what the router sends to the relay, and that it survives a restart."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from routercore.http.messages import Request, Response
from routercore.http.server import HTTPServer, ServerLimits
from tests.support.routers import ADMIN_TOKEN, http

TOKEN = "rly_" + "A" * 43


def register(router: Any, **fields: Any) -> tuple[int, Any]:
    body = {"machine_name": "box", "runtime_port": 11434, "models": ["m"], **fields}
    status, _, answer = http("POST", router.url + "/api/agents/register", body)
    return status, answer


def agent(router: Any, agent_id: str) -> dict[str, Any]:
    return http("GET", router.url + "/api/agents/" + agent_id, token=ADMIN_TOKEN)[2]


def test_relay_port_is_null_when_not_relayed(router: Any) -> None:
    status, body = register(router)
    assert status == 201
    node = agent(router, body["agent_id"])
    assert node["relay_port"] is None and "relay_token" not in node


def test_relay_port_shown_token_never(router: Any) -> None:
    status, body = register(router, relay_port=11435, relay_token=TOKEN)
    assert status == 201, body
    assert TOKEN not in json.dumps(body)
    node = agent(router, body["agent_id"])
    assert node["relay_port"] == 11435 and "relay_token" not in node
    listing = http("GET", router.url + "/api/agents", token=ADMIN_TOKEN)[2]
    assert TOKEN not in json.dumps(listing)
    overview = http("GET", router.url + "/api/dashboard/overview", token=ADMIN_TOKEN)[2]
    assert TOKEN not in json.dumps(overview)


def test_registering_again_without_relay_stops_relaying(router: Any) -> None:
    _, first = register(router, relay_port=11435, relay_token=TOKEN)
    status, again = register(router)
    assert status == 200 and again["agent_id"] == first["agent_id"]
    assert agent(router, first["agent_id"])["relay_port"] is None
    assert router.call(lambda: router.service.registry.nodes[first["agent_id"]].relay_token) == ""


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"relay_port": 11435}, "give both or neither"),
        ({"relay_token": TOKEN}, "give both or neither"),
        ({"relay_port": 0, "relay_token": TOKEN}, "relay_port"),
        ({"relay_port": 70000, "relay_token": TOKEN}, "relay_port"),
        ({"relay_port": "11435", "relay_token": TOKEN}, "relay_port"),
        ({"relay_port": 11435, "relay_token": "short"}, "relay_token"),
        ({"relay_port": 11435, "relay_token": TOKEN + "\r\nx-evil: 1"}, "relay_token"),
        ({"relay_port": 11435, "relay_token": TOKEN + " spaced"}, "relay_token"),
        ({"relay_port": 11435, "relay_token": 12345678901234567890}, "relay_token"),
    ],
)
def test_bad_relay_fields_are_400(router: Any, fields: dict[str, Any], message: str) -> None:
    status, body = register(router, **fields)
    assert status == 400, body
    assert message in body["error"]
    assert router.agents() == []


class _Recorder:
    """A tiny server on the router's own HTTP stack standing in for a relay: records heads."""

    def __init__(self) -> None:
        self.seen: list[Request] = []

    async def handle(self, request: Request) -> Response:
        self.seen.append(request)
        if request.path == "/api/generate":
            return Response.json({"model": "m", "response": "ok", "done": True})
        return Response.json({"models": [{"name": "m", "model": "m"}]})


def test_router_sends_the_token_to_the_relay_port_only(router: Any) -> None:
    recorder = _Recorder()
    server = HTTPServer(recorder.handle, ServerLimits(access_log=False))
    _, port = asyncio.run_coroutine_threadsafe(server.start("127.0.0.1", 0), router.loop).result(10)
    try:
        # runtime_port points nowhere: only the relay port can answer.
        status, body = register(router, runtime_port=9, relay_port=port, relay_token=TOKEN)
        assert status == 201, body
        status, _, answer = http(
            "POST",
            router.url + "/api/generate",
            {"model": "m", "prompt": "hi", "stream": False},
            headers={"authorization": "Bearer client-key-never-forwarded"},
        )
        assert status == 200, answer
        status, _, running = http("GET", router.url + "/api/ps")  # fanned out to every node
        assert status == 200 and running["models"][0]["name"] == "m"
        paths = [r.path for r in recorder.seen]
        assert "/api/generate" in paths and "/api/ps" in paths
        for request in recorder.seen:
            assert request.header(b"authorization") == f"Bearer {TOKEN}"
    finally:
        asyncio.run_coroutine_threadsafe(server.shutdown(1.0), router.loop).result(10)


def test_relay_fields_survive_a_restart(router_factory: Any, tmp_path: Any) -> None:
    db = str(tmp_path / "relay.db")
    first = router_factory(db=db)
    _, body = register(first, relay_port=11435, relay_token=TOKEN)
    first.stop()
    second = router_factory(db=db)
    node = second.call(lambda: second.service.registry.nodes[body["agent_id"]])
    assert (node.relay_port, node.relay_token) == (11435, TOKEN)
    assert node.relay_auth == (b"authorization", f"Bearer {TOKEN}".encode())
