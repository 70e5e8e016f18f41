"""Deployments: placement by free memory, "all" follows new nodes, lost replicas are placed
again, and the desired state survives a router restart (real routers, fake nodes, SQLite)."""

from __future__ import annotations

from typing import Any

from tests.support.polling import wait_until
from tests.support.routers import ADMIN_TOKEN, http

SIZE_1B_Q4 = int(1_000_000_000 * 4.5 / 8 * 1.1)  # the fake node's /api/show: 1B params, Q4_0


def deploy(router: Any, **body: Any) -> tuple[int, Any]:
    status, _, answer = http("POST", router.url + "/api/models/deploy", body, token=ADMIN_TOKEN)
    return status, answer


def deployments(router: Any) -> dict[str, dict[str, Any]]:
    listed = http("GET", router.url + "/api/models/deployments")[2]
    return {d["model"]: d for d in listed}


def states(router: Any, model: str) -> dict[str, str]:
    d = deployments(router).get(model)
    return {n["agent_id"]: n["state"] for n in d["nodes"]} if d else {}


def node_with(router: Any, name: str, **settings: Any) -> Any:
    """Wait until the router shows node `name` with every given metric."""

    def check() -> Any:
        for a in router.agents():
            metrics = a["metrics"]
            if (
                a["machine_name"] == name
                and a["status"] == "online"
                and all(metrics.get(k) == v for k, v in settings.items())
            ):
                return a
        return None

    return wait_until(check, message=f"node {name} with {settings}")


def start_node(router: Any, fake_nodes: Any, name: str, models: list[str], memory: float) -> Any:
    node = fake_nodes(register=router.url, name=name, models=models)
    node.configure(memory_usage=memory)
    return node, node_with(router, name, memory_usage=memory)["id"]


def test_one_replica_goes_to_the_node_with_more_free_memory(router, fake_nodes):
    busy, busy_id = start_node(router, fake_nodes, "busy", ["base"], 80.0)
    idle, idle_id = start_node(router, fake_nodes, "idle", ["base"], 20.0)
    status, answer = deploy(router, model="new:1b", replicas=1)
    assert status == 201 and answer["model"] == "new:1b" and answer["replicas"] == 1
    assert [n["agent_id"] for n in answer["nodes"]] == [idle_id]
    wait_until(lambda: states(router, "new:1b") == {idle_id: "ready"}, message="ready on idle")
    d = deployments(router)["new:1b"]
    assert d["nodes"][0]["progress"] == 100.0 and d["nodes"][0]["error"] is None
    assert "new:1b" in idle.snapshot()["settings"]["models"]
    assert "new:1b" not in busy.snapshot()["settings"]["models"]
    assert busy_id not in states(router, "new:1b")


def test_nodes_that_cannot_fit_the_model_are_skipped(router, fake_nodes):
    # The size comes from the /api/show of a node that has the model already.
    _, holder_id = start_node(router, fake_nodes, "holder", ["m"], 99.999)
    full, _ = start_node(router, fake_nodes, "full", ["base"], 99.999)
    _, roomy_id = start_node(router, fake_nodes, "roomy", ["base"], 30.0)
    status, answer = deploy(router, model="m", replicas=3)
    assert status == 201 and answer["size_bytes"] == SIZE_1B_Q4
    wait_until(lambda: states(router, "m") == {holder_id: "ready", roomy_id: "ready"})
    assert full.snapshot()["requests"].get("/api/pull") is None
    # Nobody has 10 TB free: placed nowhere, and said so by an empty node list.
    status, answer = deploy(router, model="huge", replicas=1, min_memory_gb=10_000)
    assert status == 201 and answer["nodes"] == []


def test_all_follows_nodes_that_join_later(router, fake_nodes):
    _, first_id = start_node(router, fake_nodes, "first", ["base"], 10.0)
    assert deploy(router, model="everywhere", replicas="all")[0] == 201
    wait_until(lambda: states(router, "everywhere") == {first_id: "ready"})
    later, later_id = start_node(router, fake_nodes, "later", ["base"], 10.0)
    wait_until(
        lambda: states(router, "everywhere") == {first_id: "ready", later_id: "ready"},
        message="the late node has it too",
    )
    assert "everywhere" in later.snapshot()["settings"]["models"]


def test_a_replica_on_a_node_gone_for_good_is_placed_again(router_factory, fake_nodes):
    router = router_factory(heartbeat_interval=0.2, heartbeat_timeout=1.0)
    leaving, leaving_id = start_node(router, fake_nodes, "leaving", ["base"], 10.0)
    _, staying_id = start_node(router, fake_nodes, "staying", ["base"], 60.0)
    deploy(router, model="m", replicas=1)
    wait_until(lambda: states(router, "m") == {leaving_id: "ready"})
    leaving.close()
    # offline after one heartbeat timeout, placed again after one more
    wait_until(lambda: states(router, "m") == {staying_id: "ready"}, timeout=20)


def test_a_deployment_survives_a_router_restart(router_factory, fake_nodes, tmp_path):
    db = str(tmp_path / "deploy.db")
    first = router_factory(db=db)
    status, _ = deploy(first, model="kept", replicas="all", min_memory_gb=0.5)
    assert status == 201
    first.stop()
    second = router_factory(db=db)
    kept = deployments(second)["kept"]
    assert (kept["replicas"], kept["min_memory_gb"], kept["nodes"]) == ("all", 0.5, [])
    _, node_id = start_node(second, fake_nodes, "new", ["base"], 10.0)
    wait_until(lambda: states(second, "kept") == {node_id: "ready"}, message="placed after restart")
    second.stop()
    third = router_factory(db=db)
    assert [n["state"] for n in deployments(third)["kept"]["nodes"]] == ["ready"]


def test_deployment_requests_are_checked(router):
    url = router.url + "/api/models/deploy"
    assert http("POST", url, {"model": "m"})[0] == 401
    for bad in ({"model": "m", "replicas": 0}, {"model": "m", "replicas": "some"},
                {"model": "m", "min_memory_gb": -1}, {"replicas": 1}):  # fmt: skip
        status, _, body = http("POST", url, bad, token=ADMIN_TOKEN)
        assert status == 400 and body["error"], bad
    assert deploy(router, model="m")[0] == 201  # replicas default to 1
    drop = router.url + "/api/models/deployments/m"
    assert http("DELETE", drop)[0] == 401
    assert http("DELETE", drop, token=ADMIN_TOKEN)[0] == 204
    assert http("DELETE", drop, token=ADMIN_TOKEN)[0] == 404
    assert deployments(router) == {}


def test_a_failed_pull_is_shown_with_its_reason_and_placed_elsewhere(router, fake_nodes):
    broken, broken_id = start_node(router, fake_nodes, "broken", ["base"], 10.0)
    _, other_id = start_node(router, fake_nodes, "other", ["base"], 50.0)
    broken.set_fault("garbage", times=1)  # its next answer (the pull) is not HTTP
    deploy(router, model="m", replicas=1)
    wait_until(lambda: states(router, "m") == {broken_id: "failed", other_id: "ready"})
    failed = next(n for n in deployments(router)["m"]["nodes"] if n["agent_id"] == broken_id)
    assert "broken" in failed["error"] and failed["progress"] is None


def test_a_pull_cut_by_a_router_restart_is_started_again_not_failed(
    router_factory, fake_nodes, tmp_path
):
    from routercore.testing.processes import free_port

    db, port = str(tmp_path / "cut.db"), free_port()
    first = router_factory(db=db, port=port)
    slow = fake_nodes(register=first.url, name="slow", models=["base"], token_delay=1.0)
    node_id = node_with(first, "slow")["id"]
    deploy(first, model="m", replicas=1)
    wait_until(lambda: states(first, "m") == {node_id: "pulling"}, message="pulling")
    first.stop()  # cuts the pull
    second = router_factory(db=db, port=port)  # the node's heartbeats reach it on the same port
    wait_until(lambda: states(second, "m") == {node_id: "ready"}, timeout=30, message="ready")
    assert "m" in slow.snapshot()["settings"]["models"]
