"""Dashboard surface over a real socket: page files, JSON endpoints, the WebSocket feed, auth."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from routercore.api import dashboard
from tests.support.polling import wait_until
from tests.support.routers import ADMIN_TOKEN, RouterThread, http, join
from tests.support.websocket import WSClient

CHAT = {"model": "llama3", "messages": [{"role": "user", "content": "hi"}]}


def chat(router: RouterThread, model: str = "llama3") -> int:
    return http("POST", router.url + "/v1/chat/completions", {**CHAT, "model": model})[0]


def history(router: RouterThread, query: str = "") -> dict[str, Any]:
    status, _, body = http("GET", router.url + "/api/dashboard/request-history" + query)
    assert status == 200, body
    return body


# -- the page ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "ctype", "marker"),
    [
        ("/dashboard", "text/html; charset=utf-8", b"<!doctype html>"),
        ("/dashboard/", "text/html; charset=utf-8", b"<!doctype html>"),
        ("/dashboard/dashboard.js", "text/javascript; charset=utf-8", b"/ws/dashboard"),
        ("/dashboard/dashboard.css", "text/css; charset=utf-8", b":root"),
    ],
)
def test_static_files_have_types_and_revalidate(
    router: RouterThread, path: str, ctype: str, marker: bytes
) -> None:
    status, headers, body = http("GET", router.url + path)
    assert status == 200
    assert headers["content-type"] == ctype
    assert headers["cache-control"] == "no-cache"
    assert headers["x-content-type-options"] == "nosniff"
    assert marker in body
    etag = headers["etag"]
    status, headers, body = http("GET", router.url + path, headers={"if-none-match": etag})
    assert status == 304
    assert not body


def test_page_has_a_strict_csp_and_no_remote_assets(router: RouterThread) -> None:
    headers = http("GET", router.url + "/dashboard")[1]
    csp = headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    for name in ("dashboard.html", "dashboard.css", *dashboard.SCRIPTS):
        text = (dashboard.STATIC_DIR / name).read_text()
        assert "https://" not in text and "http://" not in text.replace("http://www.w3.org", "")


def test_every_module_the_page_imports_is_served_as_javascript(router: RouterThread) -> None:
    """The page loads one ES module; following its imports must reach only served scripts,
    and every script in the package must be reachable (no file shipped and never loaded)."""
    page = http("GET", router.url + "/dashboard")[2]
    assert b'<script type="module" src="/dashboard/dashboard.js"></script>' in page
    seen: set[str] = set()
    todo = ["dashboard.js"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        status, headers, body = http("GET", f"{router.url}/dashboard/{name}")
        assert status == 200, name
        assert headers["content-type"] == "text/javascript; charset=utf-8"
        assert len(body.decode().splitlines()) <= 600, f"{name} is over 600 lines"
        todo += re.findall(r'^import (?:[^"]* from )?"\./([a-z_]+\.js)";$', body.decode(), re.M)
    assert seen == set(dashboard.SCRIPTS)
    assert seen == {p.name for p in dashboard.STATIC_DIR.glob("*.js")}


@pytest.mark.parametrize(
    "path",
    [
        "/dashboard/../service.py",
        "/dashboard/%2e%2e/service.py",
        "/dashboard/dashboard.py",
        "/dashboard/static/dashboard.js",
        "/dashboard//etc/passwd",
        "/dashboard/dashboard.js/x",
    ],
)
def test_only_the_allow_listed_files_are_served(router: RouterThread, path: str) -> None:
    status, _, body = http("GET", router.url + path)
    assert status == 404
    assert b"import" not in json.dumps(body).encode()


# -- JSON --------------------------------------------------------------------------------------


def test_overview_counts_rates_and_latencies(
    router: RouterThread, fake_nodes: Callable[..., Any]
) -> None:
    join(router, fake_nodes, 2)
    assert all(chat(router) == 200 for _ in range(4))
    assert chat(router, "missing-model") == 404
    status, _, o = http("GET", router.url + "/api/dashboard/overview")
    assert status == 200
    assert o["nodes"] == {"total": 2, "online": 2, "offline": 0, "unreachable": 0, "disabled": 0}
    assert o["requests"]["total"] == 5
    assert o["requests"]["ok"] == 4
    assert o["requests"]["errors"] == 1 and o["requests"]["rejected"] == 1
    assert o["success_rate"] == pytest.approx(0.8)
    assert o["rates"]["requests_per_s"] > 0 and o["rates"]["tokens_per_s"] > 0
    assert o["latency_ms"]["p50"] is not None and o["latency_ms"]["p95"] >= o["latency_ms"]["p50"]
    assert o["models"] == ["llama3"]
    assert o["time"].endswith("Z")


def test_snapshot_has_nodes_series_and_picks(
    router: RouterThread, fake_nodes: Callable[..., Any]
) -> None:
    join(router, fake_nodes, 2)
    for _ in range(6):
        assert chat(router) == 200
    status, headers, snap = http("GET", router.url + "/api/dashboard/snapshot")
    assert status == 200 and headers["cache-control"] == "no-store"
    assert snap["type"] == "snapshot"
    assert {n["display_name"] for n in snap["nodes"]} == {"fake-0", "fake-1"}
    row = snap["nodes"][0]
    assert {
        "id",
        "status",
        "metrics",
        "stats",
        "in_flight",
        "error_rate",
        "online_since",
        "runtime_version",
        "models",
        "tags",
    } <= set(row)
    assert "notes" not in row and "system" not in row  # kept for the detail view
    series = snap["series"]
    assert series["step_s"] == dashboard.SERIES_STEP
    assert len(series["requests"]) == dashboard.SERIES_SECONDS // dashboard.SERIES_STEP
    assert sum(series["requests"]) == 6
    assert sum(sum(n["requests"]) for n in series["nodes"].values()) == 6
    assert sum(snap["picks"].values()) == 6


def test_request_history_pages_and_filters(
    router: RouterThread, fake_nodes: Callable[..., Any]
) -> None:
    nodes = join(router, fake_nodes, 1, models=["llama3", "qwen2"])
    for i in range(7):
        assert chat(router, "llama3" if i % 2 else "qwen2") == 200
    # A name no node lists is only counted (no row per invented name)...
    assert chat(router, "nope") == 404
    metrics = http("GET", router.url + "/metrics")[2]
    assert b"llm_router_unknown_model_requests_total 1" in metrics
    # ...while a known model refused by the router is recorded.
    node_id = router.agents()[0]["id"]
    patch = {"enabled": False}
    assert http("PATCH", f"{router.url}/api/agents/{node_id}", patch, token=ADMIN_TOKEN)[0] == 200
    assert chat(router, "llama3") == 404
    wait_until(lambda: history(router)["total"] == 8, message="8 stored requests")

    first = history(router, "?limit=3")
    assert (first["total"], first["limit"], first["offset"], len(first["items"])) == (8, 3, 0, 3)
    last = history(router, "?limit=3&offset=6")
    assert len(last["items"]) == 2
    seen = {r["id"] for r in first["items"]} | {r["id"] for r in last["items"]}
    assert len(seen) == 5
    stamps = [r["ts"] for r in history(router, "?limit=8")["items"]]
    assert stamps == sorted(stamps, reverse=True)

    assert history(router, "?model=qwen2")["total"] == 4
    assert history(router, "?status=ok")["total"] == 7
    assert history(router, "?status=rejected")["items"][0]["model"] == "llama3"
    assert history(router, "?status=404")["total"] == 1
    by_node = history(router, f"?agent_id={node_id}&model=llama3")
    assert by_node["total"] == 3 and all(r["node_id"] == node_id for r in by_node["items"])
    assert history(router, "?agent_id=00000000-0000-0000-0000-000000000000")["total"] == 0
    assert nodes


@pytest.mark.parametrize(
    "query", ["?limit=0", "?limit=501", "?limit=x", "?offset=-1", "?status=teapot", "?status=99"]
)
def test_request_history_rejects_bad_parameters(router: RouterThread, query: str) -> None:
    status, _, body = http("GET", router.url + "/api/dashboard/request-history" + query)
    assert status == 400
    assert isinstance(body["error"], str) and body["error"]


def test_request_detail(router: RouterThread, fake_nodes: Callable[..., Any]) -> None:
    join(router, fake_nodes, 1)
    assert chat(router) == 200
    row = wait_until(lambda: history(router)["items"], message="a stored request")[0]
    status, _, detail = http("GET", router.url + f"/api/dashboard/requests/{row['id']}")
    assert status == 200
    assert detail["id"] == row["id"] and detail["node_name"] == "fake-0"
    assert detail["status_code"] == 200 and detail["completion_tokens"] == 8
    status, _, body = http("GET", router.url + "/api/dashboard/requests/no-such-id")
    assert status == 404 and "not found" in body["error"]


def test_node_detail_has_system_history_and_requests(
    router: RouterThread, fake_nodes: Callable[..., Any]
) -> None:
    join(router, fake_nodes, 1)
    node_id = router.agents()[0]["id"]
    assert chat(router) == 200

    def detail() -> dict[str, Any] | None:
        body = http("GET", router.url + f"/api/dashboard/nodes/{node_id}")[2]
        return body if len(body["samples"]) >= 2 and body["recent_requests"] else None

    d = wait_until(detail, message="heartbeat samples and a stored request")
    assert d["node"]["system"]["cpu_count"] >= 1 and "notes" in d["node"]
    assert {"ts", "cpu", "memory", "active_requests"} <= set(d["samples"][0])
    assert d["samples"][0]["ts"] <= d["samples"][-1]["ts"]
    assert d["recent_requests"][0]["node_id"] == node_id
    assert d["recent_errors"] == []
    assert http("GET", router.url + "/api/dashboard/nodes/nope")[0] == 404


# -- WebSocket ---------------------------------------------------------------------------------


def test_feed_pushes_every_second(router: RouterThread, fake_nodes: Callable[..., Any]) -> None:
    join(router, fake_nodes, 1)
    client = WSClient(router.url)
    try:
        assert client.accepted
        first = client.receive_json()
        assert first["type"] == "snapshot" and first["overview"]["nodes"]["online"] == 1
        assert chat(router) == 200
        wait_until(
            lambda: client.receive_json()["overview"]["requests"]["total"] == 1,
            message="a snapshot counting the request",
        )
    finally:
        client.close()


def test_feed_pushes_at_once_on_node_change(
    router_factory: Callable[..., RouterThread],
    fake_nodes: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # With the periodic push far away, only a change can produce the second message in time.
    monkeypatch.setattr(dashboard, "PUSH_INTERVAL", 300.0)
    router = router_factory()
    join(router, fake_nodes, 1)
    node_id = router.agents()[0]["id"]
    client = WSClient(router.url)
    try:
        client.receive_json()
        status = http(
            "PATCH",
            router.url + f"/api/agents/{node_id}",
            {"custom_name": "renamed"},
            token=ADMIN_TOKEN,
        )[0]
        assert status == 200
        snap = client.receive_json(timeout=10)
        assert snap["nodes"][0]["display_name"] == "renamed"
    finally:
        client.close()


def test_closed_reads_need_the_admin_token(
    router_factory: Callable[..., RouterThread], fake_nodes: Callable[..., Any]
) -> None:
    router = router_factory(open_reads=False)
    for path in (
        "/api/dashboard/overview",
        "/api/dashboard/snapshot",
        "/api/dashboard/request-history",
        "/metrics",
    ):
        assert http("GET", router.url + path)[0] == 401, path
        assert http("GET", router.url + path, token="wrong")[0] == 401, path
        assert http("GET", router.url + path, token=ADMIN_TOKEN)[0] == 200, path
    assert http("GET", router.url + "/dashboard")[0] == 200  # the page itself holds no data

    refused = WSClient(router.url)
    assert not refused.accepted and refused.reject_status == 401
    refused.sock.close()
    wrong = WSClient(router.url, "/ws/dashboard?token=wrong")
    assert not wrong.accepted
    wrong.sock.close()
    client = WSClient(router.url, f"/ws/dashboard?token={ADMIN_TOKEN}")
    try:
        assert client.accepted and client.receive_json()["type"] == "snapshot"
    finally:
        client.close()


def test_many_feed_clients_share_one_snapshot(router: RouterThread) -> None:
    clients = [WSClient(router.url) for _ in range(5)]
    try:
        texts = {json.dumps(c.receive_json(), sort_keys=True) for c in clients}
        assert all(json.loads(t)["type"] == "snapshot" for t in texts)
    finally:
        for c in clients:
            c.close()
    # Closed clients are forgotten by the feed.
    feed = router.call(lambda: _feed(router))
    wait_until(lambda: not router.call(lambda: len(feed.sessions)), message="sessions released")


def _feed(router: RouterThread) -> dashboard.DashboardFeed:
    for route in router.service.app.exact.values():
        owner = getattr(route.handler, "__self__", None)
        if isinstance(owner, dashboard.DashboardAPI):
            return owner.feed
    raise AssertionError("dashboard API not installed")
