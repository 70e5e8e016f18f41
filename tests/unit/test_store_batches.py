"""History rows handed to the store as one list per batch (`Store.add_request_rows`): every
row committed or counted, in order, through shutdown, failures, bad rows and the backlog cap.

The `db` and `opened` fixtures are in tests/unit/conftest.py."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import apsw
import pytest

from routercore.store.writer import _YIELD_EVERY, _runs
from tests.support.polling import wait_until
from tests.support.store_rows import FAST, add_samples, count, locked
from tests.support.store_rows import request_row as row


def ids_in_file(path: Path) -> list[str]:
    conn = apsw.Connection(str(path))
    try:
        return [str(r[0]) for r in conn.execute("SELECT id FROM requests ORDER BY seq")]
    finally:
        conn.close()


def test_close_commits_every_handed_over_row_in_order(db: Path, opened: Any) -> None:
    """Shutdown: what was handed over before close is in the file, nothing left behind."""
    s = opened(batch_max=100)
    expected = []
    for start in range(0, 1000, 250):  # lists larger than batch_max, and a single in between
        batch = [row(i) for i in range(start, start + 250)]
        s.add_request_rows(batch)
        s.add_request({"id": f"single-{start}", "ts": "2026-01-01T00:00:00Z"})
        expected += [r[0] for r in batch] + [f"single-{start}"]
    s.add_request_rows([])  # nothing to hand over: not an item
    s.close()
    assert ids_in_file(db) == expected
    assert s.stats["written"] == 1004 and s.stats["dropped"] == 0 and s.stats["backlog"] == 0


async def test_rows_answer_through_the_history_reads(opened: Any) -> None:
    s = opened()
    s.add_request_rows([row(1), row(2, node_id="n2", outcome="error", status_code=502)])
    assert s.flush()
    page, total = await s.query_requests(node_id="n2")
    assert total == 1 and page[0]["id"] == row(2)[0] and page[0]["stream"] is True
    one = await s.request_by_id(row(1)[0])
    assert one is not None and one["affinity_hit"] is None and one["duration_ms"] == 12.5


def test_a_bad_row_is_dropped_alone_not_its_neighbours(
    db: Path, opened: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="routercore.store")
    s = opened()
    s.add_request_rows([row(1), row(2, model={"not": "bindable"}), row(3)])
    s.add_request_rows([row(4), row(1, model="duplicate id"), row(5)])  # the id exists
    assert s.flush()
    assert ids_in_file(db) == [row(i)[0] for i in (1, 3, 4, 5)]
    assert s.stats["written"] == 4 and s.stats["dropped"] == 2
    assert "store dropped invalid item" in caplog.text
    conn = apsw.Connection(str(db))
    model = conn.execute("SELECT model FROM requests WHERE id = ?", (row(1)[0],)).fetchone()
    conn.close()
    assert model == ("llama3",)  # the first row with that id stands


def test_a_locked_database_loses_no_handed_over_row(db: Path, opened: Any) -> None:
    s = opened(**FAST)
    with locked(db):
        for start in range(0, 300, 100):
            s.add_request_rows([row(i) for i in range(start, start + 100)])
        wait_until(lambda: s.stats["write_errors"] >= 2)
        wait_until(lambda: s.backlog == 300)  # counted in rows once taken, not queue items
        assert asyncio.run(s.query_requests()) == ([], 0)
    assert s.flush()
    assert ids_in_file(db) == [row(i)[0] for i in range(300)]
    assert s.stats["written"] == 300 and s.stats["dropped"] == 0 and s.backlog == 0


def test_backlog_cap_sheds_samples_then_the_oldest_rows_of_a_list(db: Path, opened: Any) -> None:
    """20 samples and four lists of 15 rows against a cap of 50: the samples go, then the
    first list's oldest 10 rows; the list's other 5 rows stay queued and are written."""
    s = opened(backlog_max=50, **FAST)
    with locked(db):
        add_samples(s, 20)
        for start in range(0, 60, 15):  # 20 samples + 60 rows: 30 over the cap
            s.add_request_rows([row(i) for i in range(start, start + 15)])
        wait_until(lambda: s.stats["dropped"] >= 30)
    assert s.flush()
    assert s.stats["dropped"] == 30 and s.stats["written"] == 50
    assert ids_in_file(db) == [row(i)[0] for i in range(10, 60)]  # the first list cut to 5
    assert count(db, "health_samples") == 0


def test_runs_cut_lists_and_group_single_rows_in_order() -> None:
    a, b = "INSERT a", "INSERT b"
    big = [(i,) for i in range(2 * _YIELD_EVERY + 3)]
    batch = [(a, (1,)), (a, (2,)), (a, big), (a, (3,)), (b, (4,)), (b, (5,))]
    pieces = list(_runs(batch))
    assert pieces == [
        (a, [(1,), (2,)]),
        (a, big[:_YIELD_EVERY]),
        (a, big[_YIELD_EVERY : 2 * _YIELD_EVERY]),
        (a, big[2 * _YIELD_EVERY :]),
        (a, [(3,)]),
        (b, [(4,), (5,)]),
    ]
    singles = [(a, (i,)) for i in range(_YIELD_EVERY + 1)]
    assert [len(rows) for _, rows in _runs(singles)] == [_YIELD_EVERY, 1]
