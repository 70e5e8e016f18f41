"""The dashboard with 200 nodes and 10,000 history rows, in a real browser.

Asserts only behaviour (every node listed, every page of history reachable). The sizes and
timings it measures go to test-artifacts/dashboard-scale.json for docs/dashboard.md; speed
is never asserted here.
"""

from __future__ import annotations

import gzip
import json
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from routercore.api.dashboard import DashboardAPI, SnapshotBuilder
from tests.support.browser import ARTIFACTS, BROWSER_MARKS, DASH, expect
from tests.support.polling import wait_until
from tests.support.routers import RouterThread, http

NODES = 200
ROWS = 10_000

pytestmark = [*BROWSER_MARKS, pytest.mark.slow]


def _register(router: RouterThread, i: int) -> str:
    status, _, reg = http(
        "POST",
        router.url + "/api/agents/register",
        {
            "machine_name": f"node-{i:03d}",
            "runtime_port": 20_000 + i,
            "runtime_version": "0.5.7",
            "agent_version": "0.1.0",
            "models": ["llama3", f"model-{i % 5}"],
            "gpu_devices": [{"model": "RTX 4090", "count": 1, "memory_bytes": 25_769_803_776}],
            "system": {"os": "Linux", "cpu_model": "EPYC", "cpu_count": 32,
                       "memory_bytes": 137_438_953_472},
        },
    )  # fmt: skip
    assert status == 201, reg
    beat = {
        "agent_id": reg["agent_id"],
        "cpu_usage": i % 100,
        "memory_usage": (i * 7) % 100,
        "gpu_usage": (i * 3) % 100,
        "gpu_memory_usage": 50,
        "active_requests": i % 4,
    }
    assert http("POST", router.url + "/api/health", beat, token=reg["agent_token"])[0] == 200
    return str(reg["agent_id"])


def _fill_history(router: RouterThread, ids: list[str]) -> None:
    """10,000 requests over the last hour: into the live stats (on the router's loop, with a
    clock that walks the hour) and into the store through its writer queue."""
    svc = router.service
    start = time.time() - 3590

    def record() -> None:
        real_clock = svc.stats.clock
        try:
            for k in range(ROWS):
                ts = start + k * 3590 / ROWS
                svc.stats.clock = lambda ts=ts: ts
                ok = k % 50 != 0
                svc.stats.record(
                    endpoint="chat.completions", model="llama3", node=ids[k % NODES],
                    status_code=200 if ok else 502, outcome="ok" if ok else "error",
                    duration_ms=80 + k % 300, ttfb_ms=20.0, prompt_tokens=12,
                    completion_tokens=64)  # fmt: skip
        finally:
            svc.stats.clock = real_clock

    router.call(record)
    for k in range(ROWS):
        ok = k % 50 != 0
        stamp = datetime.fromtimestamp(start + k * 3590 / ROWS, UTC)
        svc.store.add_request({
            "id": f"req-{k}", "ts": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "node_id": ids[k % NODES], "model": "llama3", "endpoint": "chat.completions",
            "method": "POST", "status_code": 200 if ok else 502, "outcome": "ok" if ok else "error",
            "duration_ms": 80 + k % 300, "ttfb_ms": 20.0, "prompt_tokens": 12,
            "completion_tokens": 64, "stream": 1, "client": "127.0.0.1",
            "error": None if ok else "node answered 502"})  # fmt: skip


def _timed_get(url: str, repeat: int = 5) -> tuple[float, int, Any]:
    """Median wall time in ms of `repeat` GETs, with the last body (measurement only)."""
    times, size, body = [], 0, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        status, _, body = http("GET", url)
        times.append((time.perf_counter() - t0) * 1000)
        assert status == 200
        size = len(orjson.dumps(body)) if not isinstance(body, bytes) else len(body)
    return round(statistics.median(times), 2), size, body


def _builder(router: RouterThread) -> SnapshotBuilder:
    for route in router.service.app.exact.values():
        owner = getattr(route.handler, "__self__", None)
        if isinstance(owner, DashboardAPI):
            return owner.snapshots
    raise AssertionError("dashboard API not installed")


def test_200_nodes_and_10000_rows(
    router_factory: Callable[..., RouterThread], browser: Any
) -> None:
    router = router_factory(heartbeat_timeout=3600)
    ids = [_register(router, i) for i in range(NODES)]
    _fill_history(router, ids)
    history_url = router.url + "/api/dashboard/request-history"
    wait_until(
        lambda: http("GET", history_url + "?limit=1")[2]["total"] == ROWS,
        timeout=60,
        message=f"{ROWS} stored requests",
    )
    m: dict[str, Any] = {"nodes": NODES, "history_rows": ROWS}

    # Server side: what one snapshot costs to build and to send.
    builder = _builder(router)

    def build_ms() -> float:
        t0 = time.perf_counter()
        orjson.dumps(builder.snapshot())
        return (time.perf_counter() - t0) * 1000

    m["snapshot_build_ms_median"] = round(statistics.median(
        router.call(build_ms) for _ in range(7)), 2)  # fmt: skip
    _, _, raw = http("GET", router.url + "/api/dashboard/snapshot")
    payload = orjson.dumps(raw)
    m["snapshot_bytes"] = len(payload)
    m["snapshot_gzip_bytes"] = len(gzip.compress(payload))
    m["snapshot_node_rows_bytes"] = len(orjson.dumps(raw["nodes"]))
    m["snapshot_series_bytes"] = len(orjson.dumps(raw["series"]))
    assert len(raw["nodes"]) == NODES
    assert sum(raw["series"]["requests"]) == ROWS
    m["overview_ms_median"], m["overview_bytes"], _ = _timed_get(
        router.url + "/api/dashboard/overview"
    )
    m["metrics_ms_median"], m["metrics_bytes"], _ = _timed_get(router.url + "/metrics")

    # History: first page, last page, and a filtered page, through the store's reader thread.
    m["history_first_page_ms_median"], m["history_page_bytes"], first = _timed_get(
        history_url + "?limit=50"
    )
    m["history_last_page_ms_median"], _, last = _timed_get(
        history_url + f"?limit=50&offset={ROWS - 50}"
    )
    m["history_node_filter_ms_median"], _, by_node = _timed_get(
        history_url + f"?limit=50&agent_id={ids[7]}&status=ok"
    )
    assert first["total"] == ROWS and len(first["items"]) == 50
    assert len(last["items"]) == 50 and last["items"][-1]["id"] == "req-0"
    assert by_node["total"] == sum(1 for k in range(7, ROWS, NODES) if k % 50 != 0)

    # The browser: first paint of all 200 rows, then the per-snapshot render cost.
    context = browser.new_context(viewport={"width": 1400, "height": 900}, locale="en-US")
    try:
        page = context.new_page()
        t0 = time.perf_counter()
        page.goto(router.url + "/dashboard")
        expect(page.locator("#nodes-table tbody tr")).to_have_count(NODES, timeout=30_000)
        m["page_load_to_200_rows_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        expect(page.locator("#card-nodes")).to_have_text(f"{NODES} / {NODES}")
        renders: list[float] = []
        seen = page.evaluate("window.__dashboard.renders")

        def next_render() -> bool:
            nonlocal seen
            now = page.evaluate("window.__dashboard.renders")
            if now > seen:
                seen = now
                renders.append(page.evaluate("window.__dashboard.lastRenderMs"))
            return len(renders) >= 20

        wait_until(next_render, timeout=30, interval=0.1, message="20 snapshot renders")
        m["render_ms_median"] = round(statistics.median(renders), 2)
        m["render_ms_p90"] = round(sorted(renders)[int(0.9 * len(renders))], 2)
        m["render_ms_max"] = round(max(renders), 2)
        m["render_ms_all"] = [round(r, 1) for r in renders]
        m["ws_message_bytes"] = page.evaluate("window.__dashboard.lastPayloadBytes")

        t0 = time.perf_counter()
        page.goto(router.url + "/dashboard#requests")
        expect(page.locator("#history-info")).to_have_text(f"1{DASH}50 of 10,000")
        m["history_view_first_page_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        t0 = time.perf_counter()
        for _ in range(3):
            page.click("#history-next")
        expect(page.locator("#history-info")).to_have_text(f"151{DASH}200 of 10,000")
        m["history_view_3_pages_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        expect(page.locator("#history-table tbody tr")).to_have_count(50)
        ARTIFACTS.mkdir(exist_ok=True)
        page.goto(router.url + "/dashboard#overview")
        expect(page.locator("#nodes-table tbody tr")).to_have_count(NODES)
        page.screenshot(path=str(ARTIFACTS / "dashboard-200-nodes.png"))
    finally:
        context.close()

    (ARTIFACTS / "dashboard-scale.json").write_text(json.dumps(m, indent=2) + "\n")
    print("dashboard scale:", json.dumps(m, indent=2))
