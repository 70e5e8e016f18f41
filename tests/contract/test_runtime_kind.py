"""`runtime_kind`: what a node's runtime speaks, from its agent or found out by the router."""

from __future__ import annotations

from typing import Any

from tests.support.nodes import REGISTRATION, beat, register
from tests.support.polling import wait_until
from tests.support.routers import ADMIN_TOKEN, http


def agent(router: Any, agent_id: str) -> dict[str, Any]:
    return http("GET", f"{router.url}/api/agents/{agent_id}", token=ADMIN_TOKEN)[2]


def test_registration_carries_the_kind_and_agents_show_it(router):
    status, _, body = register(router, {**REGISTRATION, "runtime_kind": "openai"})
    assert status == 201
    assert agent(router, body["agent_id"])["runtime_kind"] == "openai"
    listed = http("GET", router.url + "/api/agents")[2]
    assert [a["runtime_kind"] for a in listed] == ["openai"]


def test_heartbeat_changes_the_kind(router):
    _, _, body = register(router, {**REGISTRATION, "runtime_kind": "openai"})
    status, _, _ = beat(router, body["agent_id"], body["agent_token"], runtime_kind="ollama")
    assert status == 200
    assert agent(router, body["agent_id"])["runtime_kind"] == "ollama"


def test_an_unknown_kind_is_refused(router):
    status, _, body = register(router, {**REGISTRATION, "runtime_kind": "tgi"})
    assert status == 400 and "runtime_kind" in body["error"]
    _, _, ok = register(router)
    status, _, body = beat(router, ok["agent_id"], ok["agent_token"], runtime_kind=3)
    assert status == 400 and "runtime_kind" in body["error"]


def test_without_a_kind_the_router_asks_the_runtime(router, fake_nodes):
    """GET /api/tags on the runtime: Ollama's JSON answer means `ollama`; the 404 of an
    OpenAI-only server (llama.cpp, vLLM) means `openai`."""
    ollama = fake_nodes(models=["m"], api="both")
    openai_only = fake_nodes(models=["m"], api="openai")
    ids = {}
    for name, node in (("o", ollama), ("v", openai_only)):
        body = {**REGISTRATION, "machine_name": name, "runtime_port": node.port, "models": ["m"]}
        status, _, answer = register(router, body)
        assert status == 201
        ids[name] = answer["agent_id"]
    wait_until(lambda: agent(router, ids["o"])["runtime_kind"] == "ollama", message="ollama")
    wait_until(lambda: agent(router, ids["v"])["runtime_kind"] == "openai", message="openai")
    assert openai_only.snapshot()["requests"].get("/api/tags") == 1


def test_an_unreachable_runtime_stays_unknown_until_it_answers(router, fake_nodes):
    from routercore.testing.processes import free_port

    port = free_port()
    body = {**REGISTRATION, "machine_name": "late", "runtime_port": port}
    _, _, answer = register(router, body)
    # Nothing listens yet: the kind stays unknown (null), the node is still registered.
    wait_until(
        lambda: router.call(lambda: router.service.nodes_api.detecting() == 0), message="done"
    )
    assert agent(router, answer["agent_id"])["runtime_kind"] is None
    fake_nodes(models=["m"], api="openai", port=port)
    beat(router, answer["agent_id"], answer["agent_token"])  # too soon: not asked again yet
    wait_until(lambda: router.call(lambda: router.service.nodes_api.detecting() == 0))
    assert agent(router, answer["agent_id"])["runtime_kind"] is None
    router.call(lambda: setattr(router.service.nodes_api, "retry_kind_after", 0.0))
    beat(router, answer["agent_id"], answer["agent_token"])  # a heartbeat asks again
    wait_until(
        lambda: agent(router, answer["agent_id"])["runtime_kind"] == "openai", message="kind"
    )


def test_fake_nodes_say_their_kind(router, fake_nodes):
    fake_nodes(register=router.url, name="a", api="both")
    fake_nodes(register=router.url, name="b", api="openai")

    def kinds() -> dict[str, str] | None:
        found = {a["machine_name"]: a["runtime_kind"] for a in router.agents()}
        return found if len(found) == 2 else None

    assert wait_until(kinds, message="two nodes") == {"a": "ollama", "b": "openai"}


def test_the_kind_survives_a_router_restart(router_factory, tmp_path):
    db = str(tmp_path / "kind.db")
    first = router_factory(db=db)
    _, _, body = register(first, {**REGISTRATION, "runtime_kind": "openai"})
    first.stop()
    second = router_factory(db=db)
    assert agent(second, body["agent_id"])["runtime_kind"] == "openai"
