"""Fault injection through a real router: nodes that die, hang, talk garbage or never accept,
upstream timeouts, and a database that is locked or full while requests keep flowing."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.client as httpclient
import json
import logging
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import apsw
import orjson
import pytest

import routercore.service
from routercore.store import Store
from tests.support.polling import wait_until
from tests.support.routers import ADMIN_TOKEN, http, join, online_ids

CHAT = {"model": "llama3", "messages": [{"role": "user", "content": "hi"}]}
# Failover tests: nodes take turns (no affinity) and no probe brings a failed node back meanwhile.
IN_TURN: dict[str, Any] = {
    "balancer": "round_robin",
    "prefix_affinity": False,
    "probe_interval": 30,
}
STREAMS = (
    ("/v1/chat/completions", {**CHAT, "stream": True}),
    ("/api/generate", {"model": "llama3", "prompt": "x"}),
)


def open_stream(router: Any, path: str, body: Any) -> tuple[Any, Any]:
    conn = httpclient.HTTPConnection("127.0.0.1", router.port, timeout=30)
    conn.request("POST", path, json.dumps(body), {"content-type": "application/json"})
    return conn, conn.getresponse()


def read_events(resp: Any) -> list[Any]:
    """SSE `data:` events or NDJSON lines of a whole streamed body, decoded."""
    raw = resp.read()
    if resp.getheader("content-type", "").startswith("text/event-stream"):
        parts = [p.strip().removeprefix(b"data: ") for p in raw.split(b"\n\n") if p.strip()]
        return [orjson.loads(p) for p in parts if p != b"[DONE]"]
    return [orjson.loads(line) for line in raw.split(b"\n") if line.strip()]


def error_text(event: Any) -> str:
    err = event.get("error")
    return err["message"] if isinstance(err, dict) else str(err)


def status_of(router: Any, node_id: str) -> str:
    return str(http("GET", f"{router.url}/api/agents/{node_id}")[2]["status"])


def ids_by_port(router: Any) -> dict[int, str]:
    return {a["runtime_port"]: a["id"] for a in router.agents()}


# These tests send one prompt over and over and rely on round robin to reach the faulty node;
# prefix affinity would keep that prompt on one node, so they turn it off.


# -- a node killed mid-stream ---------------------------------------------------------------------


@pytest.mark.parametrize(("path", "body"), STREAMS)
def test_node_killed_mid_stream(router_factory: Any, fake_nodes: Any, path: str, body: Any) -> None:
    router = router_factory(**IN_TURN)
    nodes = join(router, fake_nodes, 2, token_delay=0.05, tokens=400)
    ids = ids_by_port(router)
    by_id = {ids[n.port]: n for n in nodes}
    conn, resp = open_stream(router, path, body)
    assert resp.status == 200
    victim_id = resp.getheader("x-router-node")
    first = resp.readline()  # at least one token went through before the kill
    assert first.strip()
    by_id[victim_id].close()
    events = read_events(resp)
    conn.close()
    assert len(events) >= 1 and "error" in events[-1], events[-3:]
    assert "upstream node failed" in error_text(events[-1])
    assert not any("error" in e for e in events[:-1])
    wait_until(lambda: status_of(router, victim_id) != "online", message="the dead node is marked")
    # Nothing is lost afterwards: every new request goes to the survivor.
    (survivor,) = [i for i in by_id if i != victim_id]
    for n in nodes:
        n.configure(token_delay=0.0, tokens=4)
    picks = Counter(
        http("POST", router.url + "/v1/chat/completions", CHAT)[1].get("x-router-node")
        for _ in range(6)
    )
    assert picks == {survivor: 6}


# -- a node that hangs ---------------------------------------------------------------------------


def test_hang_before_the_head_gives_504_in_both_formats(
    router_factory: Any, fake_nodes: Any
) -> None:
    router = router_factory(read_timeout=0.5)
    (node,) = join(router, fake_nodes, 1)
    node.set_fault("hang")
    status, _, body = http("POST", router.url + "/v1/chat/completions", CHAT)
    assert status == 504 and body["error"]["code"] == "upstream_timeout"
    # The hang marked the node unreachable; its probe (which hangs too) keeps it out, so the
    # model is unavailable for now: 503 + Retry-After, heartbeats notwithstanding.
    status, headers, body = http("POST", router.url + "/api/chat", CHAT)
    assert status == 503 and isinstance(body["error"], str) and int(headers["retry-after"]) >= 1
    # The router itself stays responsive while the node hangs.
    assert http("GET", router.url + "/healthz")[0] == 200
    node.clear_faults()
    online_ids(router, 1)  # the probe answered
    node.set_fault("hang")
    status, _, body = http("POST", router.url + "/api/chat", CHAT)
    assert status == 504 and isinstance(body["error"], str)
    node.clear_faults()
    online_ids(router, 1)
    assert http("POST", router.url + "/v1/chat/completions", CHAT)[0] == 200


@pytest.mark.parametrize(("path", "body"), STREAMS)
def test_node_stalling_mid_stream_hits_the_read_timeout(
    router_factory: Any, fake_nodes: Any, path: str, body: Any
) -> None:
    router = router_factory(read_timeout=0.5)
    join(router, fake_nodes, 1, token_delay=3.0, tokens=2)
    conn, resp = open_stream(router, path, body)
    assert resp.status == 200
    events = read_events(resp)
    conn.close()
    assert "error" in events[-1] and "read timeout" in error_text(events[-1])


@pytest.mark.parametrize(("path", "body"), STREAMS)
def test_request_timeout_cuts_a_long_stream(
    router_factory: Any, fake_nodes: Any, path: str, body: Any
) -> None:
    router = router_factory(request_timeout=1, read_timeout=30)
    (node,) = join(router, fake_nodes, 1, token_delay=0.3, tokens=400)  # ~2 min of tokens
    conn, resp = open_stream(router, path, body)
    assert resp.status == 200
    events = read_events(resp)
    conn.close()
    assert len(events) > 1 and "error" in events[-1]
    wait_until(lambda: node.snapshot()["cancelled"] == 1, message="the node stops generating")


def test_request_timeout_with_fast_tokens_ends_with_an_error_event(
    router_factory: Any, fake_nodes: Any
) -> None:
    router = router_factory(request_timeout=1, read_timeout=30)
    join(router, fake_nodes, 1, token_delay=0.001, tokens=1_000_000)
    for _ in range(4):
        conn, resp = open_stream(router, "/api/generate", {"model": "llama3", "prompt": "x"})
        try:
            events = read_events(resp)
        finally:
            conn.close()
        assert "error" in events[-1]


def test_request_timeout_before_the_head_gives_504(router_factory: Any, fake_nodes: Any) -> None:
    router = router_factory(request_timeout=1, read_timeout=30)
    join(router, fake_nodes, 1, token_delay=0.05, tokens=2000)  # non-streamed: head at the end
    status, _, body = http("POST", router.url + "/v1/chat/completions", CHAT)
    assert status == 504 and body["error"]["code"] == "upstream_timeout"


def test_hanging_node_is_failed_over_and_marked(router_factory: Any, fake_nodes: Any) -> None:
    router = router_factory(
        **IN_TURN, read_timeout=0.5, heartbeat_interval=30, heartbeat_timeout=120
    )
    hung, _good = join(router, fake_nodes, 2)
    ids = ids_by_port(router)
    hung.set_fault("hang")
    statuses = Counter(http("POST", router.url + "/v1/chat/completions", CHAT)[0] for _ in range(4))
    assert statuses == {200: 4}
    assert status_of(router, ids[hung.port]) == "unreachable"


# -- garbage -------------------------------------------------------------------------------------


def test_garbage_fails_over_and_alone_gives_502(router_factory: Any, fake_nodes: Any) -> None:
    router = router_factory(**IN_TURN)
    bad, good = join(router, fake_nodes, 2)
    ids = ids_by_port(router)
    bad.set_fault("garbage")
    for path, body in (*STREAMS, ("/v1/chat/completions", CHAT)):
        for _ in range(2):
            status, headers, _ = http("POST", router.url + path, body)
            assert status == 200 and headers["x-router-node"] == ids[good.port]
    assert status_of(router, ids[bad.port]) == "unreachable"
    good.set_fault("garbage")
    status, _, payload = http("POST", router.url + "/v1/chat/completions", CHAT)
    assert status == 502 and payload["error"]["code"] == "upstream_error"
    assert http("GET", router.url + "/healthz")[0] == 200


# -- connect timeout: a node whose port never accepts ----------------------------------------------


class Blackhole:
    """A local listening socket whose accept queue is full: new connects get no answer."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.port = self.sock.getsockname()[1]
        self.fillers: list[socket.socket] = []
        for _ in range(4):  # more than the backlog holds; the rest stay in SYN-SENT
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(("127.0.0.1", self.port))
            self.fillers.append(c)
        probe = socket.socket()
        probe.settimeout(0.3)
        try:
            probe.connect(("127.0.0.1", self.port))
            raise AssertionError("the blackhole accepted a connection")
        except TimeoutError:
            pass
        finally:
            probe.close()

    def close(self) -> None:
        for c in self.fillers:
            c.close()
        self.sock.close()


@pytest.fixture
def blackhole() -> Iterator[Blackhole]:
    hole = Blackhole()
    yield hole
    hole.close()


def register_at(router: Any, port: int, name: str) -> str:
    body = {"machine_name": name, "runtime_port": port, "models": ["llama3"]}
    status, _, reg = http("POST", router.url + "/api/agents/register", body)
    assert status == 201
    return str(reg["agent_id"])


def test_connect_timeout_alone_gives_502(router_factory: Any, blackhole: Blackhole) -> None:
    router = router_factory(
        connect_timeout=0.3, heartbeat_interval=20, heartbeat_timeout=60, probe_interval=30
    )
    node_id = register_at(router, blackhole.port, "blackhole")
    status, _, body = http("POST", router.url + "/v1/chat/completions", CHAT)
    assert status == 502 and body["error"]["code"] == "upstream_error"
    assert "connect" in body["error"]["message"] or "timed out" in body["error"]["message"]
    assert status_of(router, node_id) == "unreachable"


def test_connect_timeout_fails_over(
    router_factory: Any, fake_nodes: Any, blackhole: Blackhole
) -> None:
    router = router_factory(
        **IN_TURN, connect_timeout=0.3, heartbeat_interval=0.5, heartbeat_timeout=60
    )
    (good,) = join(router, fake_nodes, 1)
    hole_id = register_at(router, blackhole.port, "blackhole")
    online_ids(router, 2)
    statuses = Counter(http("POST", router.url + "/v1/chat/completions", CHAT)[0] for _ in range(4))
    assert statuses == {200: 4}
    assert status_of(router, hole_id) == "unreachable"
    assert good.snapshot()["completed"] == 4


def test_queue_length_limit(router_factory: Any, fake_nodes: Any) -> None:
    """One slot, two queue places: the fourth concurrent request is refused at once."""
    router = router_factory(queue_max=2, queue_timeout=30)
    (node,) = join(router, fake_nodes, 1, max_concurrency=1)
    node.configure(token_delay=0.2, tokens=10)
    busy, _ = open_stream(router, "/api/generate", {"model": "llama3", "prompt": "x"})
    results: list[int] = []
    waiting = [
        threading.Thread(
            target=lambda: results.append(
                http("POST", router.url + "/v1/chat/completions", CHAT)[0]
            )
        )
        for _ in range(2)
    ]
    for t in waiting:
        t.start()
    wait_until(lambda: router.call(lambda: len(router.service.proxy.waiters)) == 2)
    status, headers, body = http("POST", router.url + "/v1/chat/completions", CHAT)
    assert status == 503 and int(headers["retry-after"]) >= 1
    assert "queue is full" in body["error"]["message"]
    status, _, body = http("POST", router.url + "/api/chat", CHAT)
    assert status == 503 and isinstance(body["error"], str)
    busy.close()
    for t in waiting:
        t.join(30)
    assert results == [200, 200]


# -- no request lost while nodes fail in every way that allows a retry -----------------------------


def test_no_request_lost_while_nodes_fail(router_factory: Any, fake_nodes: Any) -> None:
    """Three nodes, two of them cycling through refuse/500/garbage/death under load."""
    router = router_factory(
        balancer="round_robin", probe_interval=0.2, max_retries=2, prefix_affinity=False
    )
    a, b, _good = join(router, fake_nodes, 3)
    results: Counter[int] = Counter()
    errors: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def client(i: int) -> None:
        body = {**CHAT, "stream": i % 2 == 0}
        while not stop.is_set():
            try:
                status, _, payload = http("POST", router.url + "/v1/chat/completions", body)
            except OSError as exc:
                with lock:
                    errors.append(repr(exc))
                continue
            if body["stream"] and status == 200 and b'"error"' in payload:
                status = -1  # an error event inside a 200 stream
            with lock:
                results[status] += 1

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()

    def served_more(n: int) -> None:
        target = sum(results.values()) + n
        wait_until(lambda: sum(results.values()) >= target, timeout=30, message=f"{n} more")

    served_more(10)
    for fault in ("status500", "garbage", "refuse"):
        a.set_fault(fault)
        b.set_fault(fault)
        served_more(20)
        a.clear_faults()
        b.clear_faults()
        served_more(10)
    a.close()  # one node dies for good, the other flaps
    b.set_fault("status500")
    served_more(20)
    stop.set()
    for t in threads:
        t.join(30)
    assert errors == []
    assert set(results) == {200}, results
    print(f"\nfault run: served={results[200]} lost=0 (refuse, status500, garbage, death)")


# -- the database locked or full: proxying continues, rows land later ------------------------------


class DBHook:
    """A Store `on_connect` hook: short busy timeout, and the connections it saw."""

    def __init__(self) -> None:
        self.conns: list[apsw.Connection] = []

    def __call__(self, conn: apsw.Connection) -> None:
        conn.set_busy_timeout(100)
        self.conns.append(conn)

    @property
    def writer(self) -> apsw.Connection:
        return self.conns[0]  # the writer thread connects first, at open()


@pytest.fixture
def db_hook(monkeypatch: pytest.MonkeyPatch) -> DBHook:
    hook = DBHook()
    monkeypatch.setattr(routercore.service, "Store", functools.partial(Store, on_connect=hook))
    return hook


def history_count(router: Any) -> int:
    fut = asyncio.run_coroutine_threadsafe(router.service.store.query_requests(), router.loop)
    return int(fut.result(10)[1])


def store_warnings(caplog: pytest.LogCaptureFixture, kind: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "routercore.store.writer"
        and "store write failed" in r.getMessage()
        and kind in r.getMessage()
    ]


@pytest.fixture
def store_db(tmp_path: Any) -> str:
    return str(tmp_path / "store.db")


@pytest.fixture
def store_router(
    router_factory: Any,
    fake_nodes: Any,
    db_hook: DBHook,
    store_db: str,
    caplog: pytest.LogCaptureFixture,
) -> Any:
    """A router with one node on `store_db`, opened through `db_hook`; store logs captured."""
    caplog.set_level(logging.INFO)
    router = router_factory(db=store_db)
    join(router, fake_nodes, 1)
    return router


def test_locked_database(
    store_router: Any, store_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    router = store_router
    for _ in range(3):
        assert http("POST", router.url + "/v1/chat/completions", CHAT)[0] == 200
    wait_until(lambda: history_count(router) == 3, message="the first rows")
    holder = apsw.Connection(store_db)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        for _ in range(10):
            assert http("POST", router.url + "/v1/chat/completions", CHAT)[0] == 200
        wait_until(lambda: store_warnings(caplog, "BusyError"), message="the store logs the lock")
        assert history_count(router) == 3  # readers still work; nothing new committed
        assert http("GET", router.url + "/api/dashboard/overview")[0] == 200
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    wait_until(lambda: history_count(router) == 13, timeout=20, message="the rows after the lock")
    assert any("store write recovered" in r.getMessage() for r in caplog.records)


def test_full_database(
    store_router: Any, db_hook: DBHook, caplog: pytest.LogCaptureFixture
) -> None:
    router = store_router
    wait_until(lambda: router.service.store.backlog == 0, message="start-up writes")
    set_max_pages(db_hook.writer, None)  # no room for one more page from now on
    sent = 0
    while not store_warnings(caplog, "FullError"):
        assert http("POST", router.url + "/v1/chat/completions", CHAT)[0] == 200
        sent += 1
        assert sent < 2000, "the database never filled up"
    for _ in range(5):
        assert http("POST", router.url + "/v1/chat/completions", CHAT)[0] == 200
    sent += 5
    assert history_count(router) < sent
    set_max_pages(db_hook.writer, 1 << 30)  # space again
    wait_until(lambda: history_count(router) == sent, timeout=20, message="rows after the disk")
    assert any("store write recovered" in r.getMessage() for r in caplog.records)


def set_max_pages(conn: apsw.Connection, pages: int | None) -> None:
    """Set the writer's page limit (None: its current size); APSW serialises the call."""
    limit = int(conn.pragma("page_count")) if pages is None else pages
    conn.pragma("max_page_count", limit)


def test_admin_calls_work_while_the_database_is_locked(
    router_factory: Any, fake_nodes: Any, db_hook: DBHook, tmp_path: Any
) -> None:
    db = str(tmp_path / "locked.db")
    router = router_factory(db=db)
    holder = apsw.Connection(db)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        join(router, fake_nodes, 1)  # registration and heartbeats never wait for SQLite
        status, _, key = http("POST", router.url + "/api/keys", {"name": "x"}, token=ADMIN_TOKEN)
        assert status == 201
        assert http("GET", router.url + "/v1/models", token=key["key"])[0] == 200
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    router.stop()
    check = apsw.Connection(db)
    try:
        assert check.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert check.execute("SELECT count(*) FROM nodes").fetchall() == [(1,)]
        assert check.execute("SELECT count(*) FROM api_keys").fetchall() == [(1,)]
    finally:
        check.close()


# -- management answers wait for their commit ----------------------------------------------------

REGISTRATION = {"machine_name": "durable", "runtime_port": 11434, "models": ["llama3"]}


def node_ids_in_file(db: str) -> list[str]:
    conn = apsw.Connection(db)
    try:
        return [row[0] for row in conn.execute("SELECT id FROM nodes")]
    finally:
        conn.close()


@dataclass
class LockedRegistration:
    router: Any
    db: str
    thread: threading.Thread
    result: dict[str, Any]

    def answer(self) -> tuple[int, dict[str, str], Any]:
        return self.result["answer"]


@contextlib.contextmanager
def registering_while_locked(
    router_factory: Any, tmp_path: Any, **settings: Any
) -> Iterator[LockedRegistration]:
    """A router on a database file, a lock on that file, and a registration sent meanwhile;
    the lock goes when the block ends."""
    db = str(tmp_path / "locked.db")
    router = router_factory(db=db, **settings)
    wait_until(lambda: router.service.store.backlog == 0, message="start-up writes")
    holder = apsw.Connection(db)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        result: dict[str, Any] = {}

        def post() -> None:
            result["answer"] = http("POST", router.url + "/api/agents/register", REGISTRATION)

        thread = threading.Thread(target=post)
        thread.start()
        yield LockedRegistration(router, db, thread, result)
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_registration_is_answered_once_it_is_committed(router_factory: Any, tmp_path: Any) -> None:
    """A 201 is a promise: an agent that got one keeps its id, so a router killed right after
    answering must still know the node. Here the database is locked, so nothing commits."""
    with registering_while_locked(router_factory, tmp_path) as reg:
        reg.thread.join(0.8)
        assert reg.thread.is_alive(), "answered while the registration could not be committed"
    reg.thread.join(15)
    status, _, body = reg.answer()
    assert status == 201
    assert body["agent_id"] in node_ids_in_file(reg.db)  # in the file when the answer came


def test_registration_past_the_commit_timeout_is_answered_and_written_later(
    router_factory: Any, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="routercore.service")
    with registering_while_locked(router_factory, tmp_path, store_commit_timeout=0.3) as reg:
        reg.thread.join(10)  # a stuck database must not hold agents for longer than the timeout
        assert not reg.thread.is_alive()
        status, _, body = reg.answer()
        assert status == 201
        assert body["agent_id"] not in node_ids_in_file(reg.db)
        assert any("event=answered_before_commit" in r.getMessage() for r in caplog.records)
        assert body["agent_id"] in {a["id"] for a in reg.router.agents()}  # in effect in memory
    wait_until(lambda: body["agent_id"] in node_ids_in_file(reg.db), timeout=20, message="the row")


def test_commit_timeout_zero_answers_at_once_without_a_warning(
    router_factory: Any, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="routercore.service")
    with registering_while_locked(router_factory, tmp_path, store_commit_timeout=0) as reg:
        reg.thread.join(10)
        assert not reg.thread.is_alive() and reg.answer()[0] == 201
        assert not [r for r in caplog.records if "answered_before_commit" in r.getMessage()]
    body = reg.answer()[2]
    wait_until(lambda: body["agent_id"] in node_ids_in_file(reg.db), timeout=20, message="the row")
