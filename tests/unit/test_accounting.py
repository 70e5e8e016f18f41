"""What one finished request leaves behind: its history row, the live counters, the node's
record; and the request ids those rows carry."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from typing import Any

import pytest

from routercore import accounting
from routercore.accounting import Accounting, Attempt, request_id
from routercore.http.messages import Request
from routercore.stats import OTHER_MODEL, LiveStats
from routercore.usage import TailScanner


def plain_request_id(ms: int, rng: random.Random) -> str:
    """The id as one 128-bit number cut in five (what the faster formatting must equal)."""
    value = (ms << 80) | (0x7 << 76) | (rng.getrandbits(12) << 64) | (0b10 << 62)
    value |= rng.getrandbits(62)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def test_request_ids_are_time_ordered_version_7_uuids(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(7)
    monkeypatch.setattr(accounting, "_ids", rng)
    start = 1_765_000_000.0
    previous = ""
    for step in range(3000):
        now = start + step * 0.0004  # several ids per millisecond, then the next one
        monkeypatch.setattr(accounting.time, "time", lambda now=now: now)
        state = rng.getstate()
        rid = request_id()
        rng.setstate(state)
        assert rid == plain_request_id(int(now * 1000), rng)
        parsed = uuid.UUID(rid)
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122 and str(parsed) == rid
        assert rid[:14] >= previous[:14]
        previous = rid


class Registry:
    def __init__(self, models: set[str]) -> None:
        self.models = models
        self.results: list[tuple[str, bool, float]] = []

    def knows_model(self, model: str) -> bool:
        return model in self.models

    def record_result(self, node_id: str, ok: bool, latency_ms: float) -> None:
        self.results.append((node_id, ok, latency_ms))


class Store:
    def __init__(self) -> None:
        self.rows: list[tuple[Any, ...]] = []

    def add_request_rows(self, rows: list[tuple[Any, ...]]) -> None:
        self.rows += rows


def attempt(model: str, **fields: Any) -> Attempt:
    att = Attempt("openai", "chat.completions", model, False, time.perf_counter() - 0.25)
    for name, value in fields.items():
        setattr(att, name, value)
    return att


async def test_a_request_leaves_a_row_counters_and_the_nodes_record() -> None:
    registry, store, stats = Registry({"m"}), Store(), LiveStats()
    acc = Accounting(registry, store, stats, None)  # type: ignore[arg-type]
    request = Request("POST", "/v1/chat/completions", [], b"{}", "10.0.0.9")
    scanner = TailScanner("openai")
    scanner.feed(b'{"usage":{"prompt_tokens":12,"completion_tokens":16}}')
    ok = attempt(
        "m", node_id="n1", status=200, outcome="ok", ttfb_ms=1.23456, scanner=scanner,
        sent_to_client=True, affinity=True,
    )  # fmt: skip
    acc.record(request, ok, "2026-12-06T05:00:00.000Z")
    failed = attempt(
        "m", node_id="n1", status=502, outcome="error", error="x" * 2000, sent_to_client=True
    )
    acc.record(request, failed, "2026-12-06T05:00:01.000Z")
    rejected = attempt("invented", status=404, outcome="rejected", scanner=scanner)
    acc.record(request, rejected, "2026-12-06T05:00:02.000Z")
    acc.flush_rows()

    assert len(store.rows) == 2  # none for the invented name the router answered itself
    first, second = store.rows
    assert uuid.UUID(first[0]).version == 7 and first[0] != second[0]
    assert first[1:8] == (
        "2026-12-06T05:00:00.000Z",
        "n1",
        "m",
        "chat.completions",
        "POST",
        200,
        "ok",
    )
    assert 250 <= first[8] < 10_000 and first[8] == round(first[8], 3)
    assert first[9:] == (1.235, 12, 16, 0, "10.0.0.9", None, 1)
    assert second[7] == "error" and second[9:12] == (None, None, None)
    assert second[14] == "x" * accounting.HISTORY_ERROR_MAX and second[15] is None

    assert stats.requests == {
        ("chat.completions", "m", "n1", "200"): 1,
        ("chat.completions", "m", "n1", "502"): 1,
        ("chat.completions", OTHER_MODEL, "", "404"): 1,
    }
    assert stats.outcomes == {"ok": 1, "error": 1, "rejected": 1}
    assert stats.unknown_model_requests == 1
    assert stats.tokens == {("m", "prompt"): 12, ("m", "completion"): 16}
    assert stats.latency[("chat.completions", "m")].count == 2
    assert stats.ttfb[("chat.completions", "m")].count == 1
    assert ("chat.completions", OTHER_MODEL) not in stats.ttfb
    (bucket,) = stats.recent(5)
    assert (bucket.requests, bucket.errors, bucket.tokens) == (3, 2, 16)
    assert bucket.by_node == {"n1": 2} and bucket.errors_by_node == {"n1": 1}
    assert len(stats.recent_latencies) == 1
    assert [(node, ok) for node, ok, _ in registry.results] == [("n1", True), ("n1", False)]
    await asyncio.sleep(0)
