"""Pull, show and delete through the router on several nodes (real router, fake Ollama nodes)."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import ollama
import pytest

from tests.support.nodes import REGISTRATION
from tests.support.polling import wait_until
from tests.support.routers import ADMIN_TOKEN, http


def add_node(router: Any, fake: Any, name: str, kind: str | None = "ollama") -> str:
    """Register `fake` by hand (no heartbeats): only the router's own doing changes its models."""
    body = {**REGISTRATION, "machine_name": name, "runtime_port": fake.port}
    body["models"] = list(fake.snapshot()["settings"]["models"])
    if kind is not None:
        body["runtime_kind"] = kind
    status, _, answer = http("POST", router.url + "/api/agents/register", body)
    assert status == 201
    return str(answer["agent_id"])


def stream_lines(url: str, body: dict[str, Any], token: str = ADMIN_TOKEN) -> Iterator[dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    req.add_header("content-type", "application/json")
    req.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.headers["content-type"] == "application/x-ndjson"
        for raw in resp:
            yield json.loads(raw)


def serves(router: Any, model: str) -> bool:
    return bool(router.call(lambda: router.service.balancer.serves(model)))


def test_pull_streams_every_nodes_progress_and_routes_at_once(router, fake_nodes):
    a, b = fake_nodes(models=["base"]), fake_nodes(models=["base"])
    ids = {add_node(router, a, "a"), add_node(router, b, "b")}
    assert not serves(router, "new:1b")
    lines = list(stream_lines(router.url + "/api/pull", {"model": "new:1b"}))
    assert lines[-1] == {"status": "success"}
    assert all(line["node"] in ids for line in lines[:-1])
    for node_id in ids:
        mine = [line for line in lines if line.get("node") == node_id]
        assert mine[0]["status"] == "pulling manifest" and mine[-1]["status"] == "success"
        layers = [line for line in mine if "total" in line]
        assert layers and layers[-1]["completed"] == layers[-1]["total"]
        assert layers[0]["digest"].startswith("sha256:")
    # No heartbeat ever came (the nodes were registered by hand): routed at once.
    assert serves(router, "new:1b")
    status, headers, body = http(
        "POST", router.url + "/api/generate", {"model": "new:1b", "prompt": "hi", "stream": False}
    )
    assert status == 200 and body["done"] and headers["x-router-node"] in ids
    assert "new:1b" in a.snapshot()["settings"]["models"]


def test_pull_with_the_official_client_and_stream_false(router, fake_nodes):
    node = fake_nodes(models=["base"])
    node_id = add_node(router, node, "a")
    client = ollama.Client(host=router.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    progress = list(client.pull("m2", stream=True))
    assert progress[0].status == "pulling manifest" and progress[-1].status == "success"
    answer = http(
        "POST", router.url + "/api/pull", {"model": "m3", "stream": False}, token=ADMIN_TOKEN
    )
    assert answer[0] == 200
    assert answer[2] == {"status": "success", "nodes": [{"node": node_id, "status": "success"}]}
    assert client.pull("m3", stream=False).status == "success"  # everyone has it: nothing to do


def test_a_node_that_dies_mid_pull_gets_an_error_line_the_others_succeed(router, fake_nodes):
    dying = fake_nodes(models=["base"], token_delay=0.2)
    healthy = fake_nodes(models=["base"])
    dying_id, healthy_id = add_node(router, dying, "dying"), add_node(router, healthy, "healthy")
    lines = []
    for line in stream_lines(router.url + "/api/pull", {"model": "big:7b"}):
        lines.append(line)
        if line.get("node") == dying_id and "total" in line:
            dying.close()  # the node goes away in the middle of its download
    errors = [line for line in lines if line.get("node") == dying_id and "error" in line]
    assert len(errors) == 1 and "dying" in errors[0]["error"]
    assert [line for line in lines if line.get("node") == healthy_id][-1]["status"] == "success"
    final = lines[-1]
    assert set(final) == {"error", "failed_nodes", "nodes"}
    assert final["failed_nodes"] == [dying_id] and dying_id in final["error"]
    assert "1 of 2" in final["error"]
    # The healthy node serves it; the dead one was never added.
    agents = {a["id"]: a for a in router.agents()}
    assert "big:7b" in agents[healthy_id]["models"]
    assert "big:7b" not in agents[dying_id]["models"]


def test_openai_nodes_answer_501_per_node(router, fake_nodes):
    llama = fake_nodes(models=["m"], api="openai")
    ollama_node = fake_nodes(models=["m"])
    llama_id = add_node(router, llama, "llama", kind="openai")
    ollama_id = add_node(router, ollama_node, "oll")
    body = {"model": "x", "nodes": [llama_id, ollama_id]}
    lines = list(stream_lines(router.url + "/api/pull", body))
    bad = [line for line in lines if line.get("node") == llama_id]
    assert bad == [
        {"node": llama_id, "error": bad[0]["error"], "status_code": 501},
    ]
    assert "OpenAI-only" in bad[0]["error"] and "llama" in bad[0]["error"]
    assert lines[-1]["failed_nodes"] == [llama_id]
    status, _, answer = http(
        "POST",
        router.url + "/api/pull",
        {"model": "y", "nodes": [llama_id], "stream": False},
        token=ADMIN_TOKEN,
    )
    assert status == 501 and answer["failed_nodes"] == [llama_id]
    # The default picks only Ollama nodes: the llama.cpp node is not even tried.
    status, _, answer = http(
        "POST", router.url + "/api/pull", {"model": "z", "stream": False}, token=ADMIN_TOKEN
    )
    assert status == 200 and [n["node"] for n in answer["nodes"]] == [ollama_id]
    assert llama.snapshot()["requests"].get("/api/pull") is None


def test_pull_refusals(router, fake_nodes):
    url = router.url + "/api/pull"
    assert http("POST", url, {"model": "m"})[0] == 401
    status, _, body = http("POST", url, {"model": "m"}, token=ADMIN_TOKEN)
    assert status == 503 and "Ollama" in body["error"]  # no node at all
    assert http("POST", url, {"stream": False}, token=ADMIN_TOKEN)[0] == 400
    status, _, body = http("POST", url, {"model": "m", "nodes": ["nope"]}, token=ADMIN_TOKEN)
    assert status == 404 and "nope" in body["error"]
    assert http("POST", url, {"model": "m", "nodes": "x"}, token=ADMIN_TOKEN)[0] == 400


def test_show_goes_to_a_node_that_has_the_model(router, fake_nodes):
    holder = fake_nodes(models=["llama3"])
    add_node(router, fake_nodes(models=["other"]), "without")
    holder_id = add_node(router, holder, "with")
    client = ollama.Client(host=router.url)
    shown = client.show("llama3")
    assert shown.modelinfo and shown.modelinfo["general.parameter_count"] == 1_000_000_000
    status, headers, _ = http("POST", router.url + "/api/show", {"model": "llama3"})
    assert status == 200 and headers["x-router-node"] == holder_id


def test_delete_removes_the_model_everywhere_and_from_routing_at_once(router, fake_nodes):
    a, b = fake_nodes(models=["keep", "gone"]), fake_nodes(models=["keep", "gone"])
    c = fake_nodes(models=["keep"])
    ids = [add_node(router, n, name) for n, name in ((a, "a"), (b, "b"), (c, "c"))]
    assert serves(router, "gone")
    assert http("DELETE", router.url + "/api/delete", {"model": "gone"})[0] == 401
    client = ollama.Client(host=router.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert client.delete("gone").status == "success"
    assert not serves(router, "gone")
    gen = {"model": "gone", "prompt": "x", "stream": False}
    assert http("POST", router.url + "/api/generate", gen)[0] == 404
    for node in (a, b):
        assert node.snapshot()["settings"]["models"] == ["keep"]
    assert c.snapshot()["requests"].get("/api/delete") is None  # it never had it
    agents = {x["id"]: x["models"] for x in router.agents()}
    assert agents == {ids[0]: ["keep"], ids[1]: ["keep"], ids[2]: ["keep"]}
    with pytest.raises(ollama.ResponseError) as missing:
        client.delete("gone")
    assert missing.value.status_code == 404


def test_a_heartbeat_sent_before_the_node_saw_the_delete_does_not_bring_it_back(router, fake_nodes):
    node = fake_nodes(models=["keep", "gone"])
    body = {
        **REGISTRATION,
        "machine_name": "n",
        "runtime_port": node.port,
        "runtime_kind": "ollama",
    }
    body["models"] = ["keep", "gone"]
    _, _, reg = http("POST", router.url + "/api/agents/register", body)
    http("DELETE", router.url + "/api/delete", {"model": "gone"}, token=ADMIN_TOKEN)
    stale = {"agent_id": reg["agent_id"], "models": ["keep", "gone"], "runtime_up": True}
    assert http("POST", router.url + "/api/health", stale, token=reg["agent_token"])[0] == 200
    assert not serves(router, "gone")
    fresh = {**stale, "models": ["keep"]}
    http("POST", router.url + "/api/health", fresh, token=reg["agent_token"])
    wait_until(lambda: not serves(router, "gone"))
