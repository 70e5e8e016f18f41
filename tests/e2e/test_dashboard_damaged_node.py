"""A node record damaged in the database file, in a real browser (issue 20 item 8): after a
restart the page lists every node, marks the damaged one and says why, and keeps updating."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.browser import BROWSER_MARKS, LIVE, expect, node_row, open_dashboard
from tests.support.routers import http

pytestmark = BROWSER_MARKS


def test_a_damaged_node_is_marked_and_the_rest_still_shows(
    router_factory: Callable[..., Any],
    tmp_path: Path,
    page: Any,
) -> None:
    db = str(tmp_path / "damaged.db")
    router = router_factory(db=db)
    for name in ("bad-node", "good-node"):
        body = {"machine_name": name, "runtime_port": 9, "models": ["m"]}
        assert http("POST", router.url + "/api/agents/register", body)[0] == 201
    router.stop()
    con = sqlite3.connect(db)
    con.execute(
        "UPDATE nodes SET gpu_devices = ? WHERE machine_name = 'bad-node'", ('[{"count": "two"}]',)
    )
    con.commit()
    con.close()

    router = router_factory(db=db)
    ids = {a["machine_name"]: a["id"] for a in router.agents()}
    open_dashboard(page, router)
    bad, good = node_row(page, ids["bad-node"]), node_row(page, ids["good-node"])
    expect(bad).to_contain_text("record damaged", timeout=LIVE)
    expect(bad.locator(".problem")).to_have_attribute("title", "stored fields of the wrong type "
                                                      "reset: gpu_devices")  # fmt: skip
    expect(good).to_be_visible()
    expect(good.locator(".problem")).to_have_count(0)
    # The feed keeps going: the damaged node's next registration clears the mark live.
    body = {"machine_name": "bad-node", "runtime_port": 9, "models": ["m"]}
    assert http("POST", router.url + "/api/agents/register", body)[0] == 200
    expect(bad.locator(".problem")).to_have_count(0, timeout=LIVE)
