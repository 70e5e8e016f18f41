"""Store tests against real SQLite files: migrations, round-trips, retention, failure recovery."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import apsw
import pytest

from routercore.node import Node, NodeMetrics, NodeStats
from routercore.store import _SQL_SEQ_RANGE, MIGRATIONS, Store, migrate
from tests.support.polling import wait_until
from tests.support.store_rows import FAST, add_samples, count, locked, req


def full_node(node_id: str = "n1") -> Node:
    return Node(
        id=node_id,
        machine_name="box",
        ip_address="10.0.0.5",
        runtime_port=11435,
        custom_name="Big box",
        runtime_version="0.5.1",
        agent_version="1.2.3",
        status="online",
        registered_at="2026-01-01T00:00:00Z",
        last_seen="2026-01-01T00:01:00Z",
        online_since="2026-01-01T00:00:01Z",
        gpu_devices=[{"model": "RTX 4090", "count": 2, "memory_bytes": 25769803776}],
        system={"os": "linux", "cpu_model": "x", "cpu_count": 16, "memory_bytes": 1 << 36},
        models=["llama3", "qwen2:7b"],
        tags=["gpu", "fast"],
        notes="rack 3",
        enabled=False,
        max_concurrency=4,
        runtime_up=False,
        token_hash="sha256:abc",
        metrics=NodeMetrics(12.5, 40.0, None, 77.25, 3),
        stats=NodeStats(100, 7, 12345.5),
    )


def test_migrates_from_empty_and_reopens_idempotently(db: Path, opened: Any) -> None:
    s = opened()
    assert s.integrity_check() == "ok"
    s.close()
    conn = apsw.Connection(str(db))
    assert conn.pragma("user_version") == len(MIGRATIONS)
    assert conn.pragma("journal_mode") == "wal"
    conn.close()
    s2 = opened()  # a second open applies nothing and keeps the version
    s2.close()
    conn = apsw.Connection(str(db))
    assert conn.pragma("user_version") == len(MIGRATIONS)
    conn.close()


async def test_a_version_1_database_gains_the_affinity_column(db: Path, opened: Any) -> None:
    """A database written before prefix affinity keeps its history; old rows read as NULL."""
    db.parent.mkdir(parents=True, exist_ok=True)
    conn = apsw.Connection(str(db))
    migrate(conn, MIGRATIONS[:1])
    old = req(1)
    del old["affinity_hit"]
    conn.execute(
        f"INSERT INTO requests ({', '.join(old)}) VALUES ({', '.join('?' * len(old))})",
        tuple(old.values()),
    )
    conn.close()
    s = opened()
    s.add_request(req(2, affinity_hit=True))
    s.add_request(req(3, affinity_hit=False))
    assert s.flush()
    rows, total = await s.query_requests(limit=10)
    assert total == 3
    assert {r["id"][-1]: r["affinity_hit"] for r in rows} == {"1": None, "2": True, "3": False}
    s.close()
    conn = apsw.Connection(str(db))
    assert conn.pragma("user_version") == len(MIGRATIONS) >= 2
    conn.close()


def test_db_at_version_n_gets_only_newer_steps(tmp_path: Path) -> None:
    conn = apsw.Connection(str(tmp_path / "m.db"))
    assert migrate(conn, MIGRATIONS) == len(MIGRATIONS)
    steps = (*MIGRATIONS, "CREATE TABLE extra (x INTEGER)")
    assert migrate(conn, steps) == len(steps)  # would fail if step 1 re-ran (tables exist)
    assert conn.pragma("user_version") == len(steps)
    assert migrate(conn, steps) == len(steps)
    with pytest.raises(RuntimeError, match="newer"):
        migrate(conn, MIGRATIONS)
    conn.close()


def test_nodes_round_trip_all_fields_and_copy_at_enqueue(db: Path, opened: Any) -> None:
    s = opened()
    node = full_node()
    bare = Node(
        id="n2", machine_name="small", ip_address="::1", registered_at="2026-01-02T00:00:00Z"
    )
    s.save_node(node)
    s.save_node(bare)
    expected = full_node()
    node.models.append("mutated-after-save")  # the caller keeps mutating its Node
    node.stats.total_requests += 1
    s.close()
    loaded = {n.id: n for n in opened().load_nodes()}
    assert loaded == {"n1": expected, "n2": bare}


def test_save_node_upserts_and_delete_removes_samples(db: Path, opened: Any) -> None:
    s = opened()
    node = full_node()
    s.save_node(node)
    for i in range(3):
        s.add_health_sample("n1", f"2026-01-01T00:00:0{i}Z", 1.0, 2.0, None, None, i)
        s.add_health_sample("n2", f"2026-01-01T00:00:0{i}Z", 1.0, 2.0, 3.0, 4.0, i)
    node.status = "offline"
    s.save_node(node)
    assert s.flush()
    assert [n.status for n in s.load_nodes()] == ["offline"]
    s.delete_node("n1")
    assert s.flush()
    assert s.load_nodes() == []
    assert count(db, "health_samples") == 3


async def test_node_samples_newest_window_oldest_first(opened: Any) -> None:
    s = opened()
    for i in range(10):
        s.add_health_sample("n1", f"2026-01-01T00:00:{i:02d}Z", float(i), 50.0, None, 1.5, i)
    assert s.flush()
    rows = await s.node_samples("n1", limit=3)
    assert [r["active_requests"] for r in rows] == [7, 8, 9]
    assert rows[0] == {
        "node_id": "n1",
        "ts": "2026-01-01T00:00:07Z",
        "cpu": 7.0,
        "memory": 50.0,
        "gpu": None,
        "gpu_memory": 1.5,
        "active_requests": 7,
    }
    rows = await s.node_samples("n1", since="2026-01-01T00:00:05Z")
    assert [r["active_requests"] for r in rows] == [5, 6, 7, 8, 9]
    assert await s.node_samples("nope") == []


async def test_query_requests_filters_paging_total(opened: Any) -> None:
    s = opened()
    for i in range(30):
        s.add_request(
            req(
                i,
                node_id="n1" if i % 2 else "n2",
                model="a" if i % 3 else "b",
                outcome="error" if i % 5 == 0 else "ok",
                status_code=502 if i % 5 == 0 else 200,
            )
        )
    assert s.flush()
    page, total = await s.query_requests(limit=5)
    assert total == 30
    assert [r["id"][-2:] for r in page] == ["29", "28", "27", "26", "25"]
    assert page[0]["stream"] is True and page[0]["duration_ms"] == 12.5
    page2, _ = await s.query_requests(limit=5, offset=5)
    assert [r["id"][-2:] for r in page2] == ["24", "23", "22", "21", "20"]
    page, total = await s.query_requests(node_id="n1", model="a", limit=100)
    want = [i for i in range(30) if i % 2 and i % 3]
    assert total == len(want)
    assert [int(r["id"][-2:]) for r in page] == sorted(want, reverse=True)
    _, total = await s.query_requests(outcome="error")
    assert total == 6
    page, total = await s.query_requests(status_code=502, node_id="n2", limit=2)
    assert total == 3 and len(page) == 2  # i in {0, 10, 20}
    assert await s.query_requests(model="missing") == ([], 0)
    one = await s.request_by_id(req(7)["id"])
    assert one is not None and one == {**req(7, node_id="n1", model="a"), "stream": True}
    assert await s.request_by_id("nope") is None


def test_add_request_fills_id_and_ts(opened: Any, db: Path) -> None:
    s = opened()
    s.add_request({"model": "m", "outcome": "rejected", "status_code": 503, "extra": "ignored"})
    assert s.flush()
    conn = apsw.Connection(str(db))
    rid, ts = conn.execute("SELECT id, ts FROM requests").fetchone()  # type: ignore[misc]
    conn.close()
    assert len(rid) == 36 and ts.endswith("Z")


def test_retention_trims_oldest(db: Path, opened: Any) -> None:
    s = opened(history_max_rows=10, samples_max_rows=5, trim_every=1, batch_max=7)
    for i in range(25):
        s.add_request(req(i))
        s.add_health_sample("n1", f"2026-01-01T00:00:{i:02d}Z", None, None, None, None, i)
    assert s.flush()
    assert s.stats["trimmed"] > 0
    s.close()
    conn = apsw.Connection(str(db))
    ids = [r[0] for r in conn.execute("SELECT id FROM requests ORDER BY seq")]
    samples = [
        r[0] for r in conn.execute("SELECT active_requests FROM health_samples ORDER BY seq")
    ]
    conn.close()
    assert ids == [req(i)["id"] for i in range(15, 25)]
    assert samples == list(range(20, 25))


def test_retention_deletes_a_large_excess_in_chunks_exactly(db: Path, opened: Any) -> None:
    s = opened(history_max_rows=100, trim_every=1, batch_max=2000)
    for i in range(1800):  # one batch, then one trim of 1,700 rows (four chunks)
        s.add_request(req(i))
    assert s.flush()
    s.close()
    conn = apsw.Connection(str(db))
    ids = [r[0] for r in conn.execute("SELECT id FROM requests ORDER BY seq")]
    conn.close()
    assert ids == [req(i)["id"] for i in range(1700, 1800)]


@pytest.mark.parametrize("table", ["requests", "health_samples"])
def test_retention_finds_its_cutoff_without_scanning_the_table(table: str) -> None:
    """Retention runs every few batches on a table at its cap; a scan there held the writer's
    core for milliseconds. Both ends of the key must come from the B-tree (SEARCH, no SCAN)."""
    conn = apsw.Connection(":memory:")
    migrate(conn, MIGRATIONS)
    plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + _SQL_SEQ_RANGE[table])]
    conn.close()
    assert sum(step.startswith("SEARCH") for step in plan) == 2, plan
    assert not [step for step in plan if step.startswith("SCAN") and "CONSTANT ROW" not in step]


def test_flush_and_close_are_durable(db: Path, opened: Any) -> None:
    s = opened()
    for i in range(1200):  # more than two batches
        s.add_request(req(i))
    s.set_meta("admin_token_hash", "h1")
    s.set_meta("admin_token_hash", "h2")
    s.save_api_key({"id": "k1", "name": "ci", "key_hash": "kh", "prefix": "sk-ab",
                    "created_at": "2026-01-01T00:00:00Z"})  # fmt: skip
    s.close()
    assert s.stats["written"] == 1203 and s.stats["backlog"] == 0
    s2 = opened()
    assert s2.get_meta("admin_token_hash") == "h2"
    assert s2.get_meta("missing") is None
    assert s2.load_api_keys()[0]["key_hash"] == "kh"
    s2.close()
    assert count(db, "requests") == 1200


def test_memory_database_works(opened: Any) -> None:
    s = opened(":memory:")
    s.save_node(full_node())
    s.add_request(req(1))
    s.set_meta("k", "v")
    assert s.flush()
    assert s.load_nodes() == [full_node()]
    assert s.get_meta("k") == "v"
    assert s.integrity_check() == "ok"
    page, total = asyncio.run(s.query_requests())
    assert total == 1 and page[0]["id"] == req(1)["id"]


def test_enqueue_never_blocks_on_locked_db_and_nothing_is_lost(
    db: Path, opened: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="routercore.store")
    s = opened(**FAST)
    with locked(db):
        for i in range(100):  # would hang here (pytest timeout) if enqueue waited on SQLite
            s.add_request(req(i))
        wait_until(lambda: s.stats["write_errors"] >= 2)  # it keeps retrying
        assert not s.flush(timeout=0.05)
        assert asyncio.run(s.query_requests()) == ([], 0)  # WAL: reads still served
        s.add_health_sample("n1", "2026-01-01T00:00:00Z", 1.0, 1.0, None, None, 0)
    assert s.flush()
    assert count(db, "requests") == 100 and count(db, "health_samples") == 1
    assert s.stats["dropped"] == 0
    assert "store write failed error=BusyError" in caplog.text
    assert "store write recovered" in caplog.text


def test_committed_returns_once_the_write_is_in_the_file_or_false_at_its_timeout(
    db: Path, opened: Any
) -> None:
    s = opened(**FAST)

    def meta_in_file() -> str | None:
        conn = apsw.Connection(str(db))
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = 'k'").fetchone()
            return None if row is None else str(row[0])  # type: ignore[index]
        finally:
            conn.close()

    async def main() -> None:
        s.set_meta("k", "v1")
        assert await s.committed(5.0)
        assert meta_in_file() == "v1"  # another connection sees it at once
        with locked(db):
            s.set_meta("k", "v2")
            assert not await s.committed(0.2)  # the writer is retrying behind the lock
            assert meta_in_file() == "v1"
        assert await s.committed(5.0)
        assert meta_in_file() == "v2"

    asyncio.run(main())
    s.close()

    async def after_close() -> bool:
        return await s.committed(5.0)

    assert not asyncio.run(after_close())  # no writer: nothing will ever commit


def test_disk_full_logs_keeps_accepting_and_recovers(
    db: Path, opened: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="routercore.store")
    opened().close()  # schema in place
    conn = apsw.Connection(str(db))
    conn.execute("CREATE TABLE ballast (b BLOB)")
    conn.executemany("INSERT INTO ballast VALUES (zeroblob(4000))", [()] * 200)
    conn.close()

    def no_growth(c: apsw.Connection) -> None:  # the file may not grow past its size now
        c.pragma("max_page_count", c.pragma("page_count"))

    s = opened(on_connect=no_growth, **FAST)
    for i in range(40):
        s.add_request(req(i, error="x" * 3000))
    wait_until(lambda: s.stats["write_errors"] >= 2)
    s.add_request(req(99))  # still accepted while failing
    assert not s.flush(timeout=0.05)
    assert "error=FullError" in caplog.text
    freer = apsw.Connection(str(db))  # frees pages the writer can reuse: the "disk" has room
    freer.set_busy_timeout(5000)
    freer.execute("DELETE FROM ballast")
    freer.close()
    assert s.flush()
    assert count(db, "requests") == 41
    assert s.integrity_check() == "ok"


def test_backlog_cap_drops_oldest_samples_first(
    db: Path, opened: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="routercore.store")
    s = opened(backlog_max=50, **FAST)
    with locked(db):
        add_samples(s, 40)
        for i in range(40):
            s.add_request(req(i))
        wait_until(lambda: s.stats["dropped"] >= 30)
        errors = s.stats["write_errors"]
        assert not s.flush(timeout=0.01)  # a flush marker is not an item: it must not shed one
        wait_until(lambda: s.stats["write_errors"] > errors + 1)
    assert s.flush()
    assert s.stats["dropped"] == 30
    assert count(db, "requests") == 40
    s.close()
    conn = apsw.Connection(str(db))
    kept = [r[0] for r in conn.execute("SELECT active_requests FROM health_samples ORDER BY seq")]
    conn.close()
    assert kept == list(range(30, 40))
    assert "dropped_samples=30" in caplog.text


def test_invalid_item_is_dropped_not_the_batch(db: Path, opened: Any) -> None:
    s = opened()
    s.add_request(req(1))
    s.add_request(req(2, model={"not": "bindable"}))
    s.add_request(req(3))
    assert s.flush()
    assert count(db, "requests") == 2
    assert s.stats["dropped"] == 1


def test_open_fails_loudly_on_unusable_path(tmp_path: Path) -> None:
    (tmp_path / "adir").mkdir()
    with pytest.raises(apsw.Error):
        Store(str(tmp_path / "adir")).open()
