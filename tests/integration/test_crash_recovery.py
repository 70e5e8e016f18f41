"""`kill -9` of a router process under load, then a restart on the same database file.

What must hold: the database passes `PRAGMA integrity_check`; every node comes back with the
same id (offline until it heartbeats, then online); every history row that was committed before
the kill is still there; and no request is lost that could be retried before its first byte.
"""

from __future__ import annotations

import http.client as httpclient
import json
import logging
import signal
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import apsw
import pytest

from tests.support.polling import wait_until
from tests.support.routers import ADMIN_TOKEN, http, online_ids

log = logging.getLogger(__name__)

CHAT = {"model": "llama3", "messages": [{"role": "user", "content": "hi"}]}
ROUTER_ENV = {"LLM_ROUTER_HEARTBEAT_TIMEOUT": "30", "LLM_ROUTER_ACCESS_LOG": "false"}


def db_query(db: str, sql: str) -> list[tuple[Any, ...]]:
    """Read the file through a connection of our own: it sees committed data only."""
    conn = apsw.Connection(db, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        conn.set_busy_timeout(5000)
        return [tuple(row) for row in conn.execute(sql)]
    finally:
        conn.close()


def agents_of(router: Any) -> list[dict[str, Any]]:
    status, _, agents = http("GET", router.url + "/api/agents", token=ADMIN_TOKEN)
    assert status == 200
    return list(agents)


def integrity(db: str) -> list[tuple[Any, ...]]:
    conn = apsw.Connection(db)  # read-write: recovers the WAL like a restart would
    try:
        return [tuple(row) for row in conn.execute("PRAGMA integrity_check")]
    finally:
        conn.close()


@dataclass
class Tally:
    """What the clients saw, per logical request (retries included in one request)."""

    ok: int = 0
    retried_connection: int = 0  # got a connection error before any byte, then was served
    retried_status: int = 0  # got 404/503 while nodes were re-joining, then was served
    cut: int = 0  # the router died after the response head: not retryable
    lost: int = 0  # never served although every failure was before the first byte
    statuses: Counter[int] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def finished(self) -> int:
        return self.ok + self.cut + self.lost


def attempt(port: int, body: dict[str, Any]) -> tuple[str, int]:
    """One HTTP exchange: ("no_byte", 0), ("cut", status) or ("answered", status)."""
    conn = httpclient.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        try:
            conn.request(
                "POST",
                "/v1/chat/completions",
                json.dumps(body),
                {"content-type": "application/json"},
            )
            resp = conn.getresponse()
        except (OSError, httpclient.HTTPException):
            return "no_byte", 0
        try:
            data = resp.read()
        except (OSError, httpclient.HTTPException):
            return "cut", resp.status
        if body.get("stream") and resp.status == 200 and b'"error"' in data:
            return "cut", resp.status  # the stream ended with an error event
        return "answered", resp.status
    finally:
        conn.close()


def client(port: int, tally: Tally, stop: threading.Event, stream: bool) -> None:
    """Send requests until stopped; retry what failed before its first byte."""
    body = {**CHAT, "stream": stream}
    while not stop.is_set():
        conn_failures = status_failures = 0
        outcome = "lost"
        for _ in range(600):  # ~30 s of retries at most
            kind, status = attempt(port, body)
            if kind == "answered" and status == 200:
                outcome = "ok"
                break
            if kind == "cut":
                outcome = "cut"
                break
            if kind == "no_byte":
                conn_failures += 1
            elif status in (404, 503):  # no node online yet after the restart
                status_failures += 1
            else:
                with tally.lock:
                    tally.statuses[status] += 1
                break
            stop.wait(0.05)  # client back-off between retries
        with tally.lock:
            if outcome == "ok":
                tally.ok += 1
                tally.retried_connection += conn_failures > 0
                tally.retried_status += status_failures > 0
            elif outcome == "cut":
                tally.cut += 1
            else:
                tally.lost += 1


def test_sigkill_under_load_then_restart(
    router_process: Any, fake_nodes: Any, tmp_path: Any
) -> None:
    db = str(tmp_path / "crash.db")
    router = router_process(db=db, env=ROUTER_ENV)
    nodes = [
        fake_nodes(register=router.url, name=f"fake-{i}", token_delay=0.01, tokens=8)
        for i in range(2)
    ]
    online_ids(router, 2)
    # A node that only ever heartbeats when the test says so.
    status, _, silent = http(
        "POST",
        router.url + "/api/agents/register",
        {"machine_name": "silent", "runtime_port": nodes[0].port, "models": ["llama3"]},
    )
    assert status == 201
    before = {a["id"]: a for a in agents_of(router)}
    assert len(before) == 3

    tally = Tally()
    stop = threading.Event()
    threads = [
        threading.Thread(target=client, args=(router.port, tally, stop, i % 2 == 1), daemon=True)
        for i in range(4)
    ]
    for t in threads:
        t.start()

    def served_more(n: int) -> None:
        target = tally.ok + n
        wait_until(lambda: tally.ok >= target, timeout=60, message=f"{n} more served")

    try:
        served_more(40)
        # The rows the router has committed by now: visible to another connection.
        done = tally.ok
        wait_until(
            lambda: (
                db_query(db, "SELECT count(*) FROM requests WHERE status_code = 200")[0][0] >= done
            ),
            message="the writer commits what was served",
        )
        committed = {row[0] for row in db_query(db, "SELECT id FROM requests")}
        served_more(20)  # still under load when the kill comes
        assert router.stop(signal.SIGKILL) == -signal.SIGKILL
        assert integrity(db) == [("ok",)]
        kept = {row[0] for row in db_query(db, "SELECT id FROM requests")}
        assert committed <= kept, f"{len(committed - kept)} committed rows lost"

        router.start()
        agents = {a["id"]: a for a in agents_of(router)}
        assert set(agents) == set(before)
        for node_id, agent in agents.items():
            for key in ("machine_name", "ip_address", "runtime_port", "registered_at"):
                assert agent[key] == before[node_id][key]
        assert agents[silent["agent_id"]]["status"] == "offline"
        beat = {"agent_id": silent["agent_id"], "cpu_usage": 1.0, "memory_usage": 1.0}
        status, _, _ = http("POST", router.url + "/api/health", beat, token=silent["agent_token"])
        assert status == 200
        online_ids(router, 3, timeout=30)  # the fake nodes heartbeat again with old tokens
        served_more(40)
    finally:
        stop.set()
        for t in threads:
            t.join(60)

    log.info("crash run %s", tally)
    print(
        f"\ncrash recovery: served={tally.ok} retried_after_connection_error="
        f"{tally.retried_connection} retried_after_404_503={tally.retried_status} "
        f"cut_after_first_byte={tally.cut} lost={tally.lost} other={dict(tally.statuses)}"
    )
    assert tally.lost == 0
    assert not tally.statuses
    assert tally.retried_connection >= 1  # the kill really happened under load
    assert tally.cut <= 4  # at most the requests in flight at the kill

    history = http("GET", router.url + "/api/dashboard/request-history?limit=1", token=ADMIN_TOKEN)[
        2
    ]
    assert history["total"] >= len(committed)
    assert router.stop(signal.SIGTERM) == 0
    assert integrity(db) == [("ok",)]
    final = {row[0] for row in db_query(db, "SELECT id FROM requests")}
    assert committed <= final


def test_sigterm_flushes_every_row(router_process: Any, fake_nodes: Any, tmp_path: Any) -> None:
    db = str(tmp_path / "term.db")
    router = router_process(db=db, env=ROUTER_ENV)
    fake_nodes(register=router.url, name="fake")
    online_ids(router, 1)
    for _ in range(25):
        assert http("POST", router.url + "/v1/chat/completions", CHAT)[0] == 200
    assert router.stop(signal.SIGTERM) == 0
    assert integrity(db) == [("ok",)]
    assert db_query(db, "SELECT count(*) FROM requests") == [(25,)]
    assert db_query(db, "SELECT count(*) FROM nodes") == [(1,)]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_api_keys_and_admin_token_survive_a_restart(
    router_process: Any, tmp_path: Any, sig: int
) -> None:
    db = str(tmp_path / "keys.db")
    router = router_process(db=db, env={"LLM_ROUTER_ADMIN_TOKEN": ""})
    token = None
    log_path = tmp_path / "router0.log"
    for line in log_path.read_text().splitlines():
        if "event=admin_token_generated" in line:
            token = line.split("token=", 1)[1].split()[0]
    assert token, "the generated admin token is printed at first start"
    status, _, key = http("POST", router.url + "/api/keys", {"name": "k"}, token=token)
    assert status == 201
    wait_until(
        lambda: db_query(db, "SELECT count(*) FROM api_keys") == [(1,)],
        message="the key is committed",
    )
    router.stop(sig)
    router.start()
    assert http("GET", router.url + "/api/keys", token=token)[0] == 200
    assert http("GET", router.url + "/v1/models", token=key["key"])[0] == 200
    assert http("GET", router.url + "/v1/models")[0] == 401
    text = log_path.read_text()
    assert text.count(token) == 1  # printed once, never again
    assert key["key"] not in text
