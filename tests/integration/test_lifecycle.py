"""Node lifecycle and router lifecycle: heartbeat timeouts, restarts on the same DB, shutdown."""

from __future__ import annotations

import http.client as httpclient
import json
import signal
import threading

import apsw

from tests.support.polling import wait_until
from tests.support.routers import ADMIN_TOKEN, http, join


def register(url, name="box", port=11434):
    status, _, reg = http(
        "POST",
        url + "/api/agents/register",
        {"machine_name": name, "runtime_port": port, "models": ["llama3"]},
    )
    assert status in (200, 201)
    return reg


def beat(url, reg):
    return http(
        "POST",
        url + "/api/health",
        {
            "agent_id": reg["agent_id"],
            "cpu_usage": 1.0,
            "memory_usage": 2.0,
            "active_requests": 0,
            "models": ["llama3"],
            "runtime_up": True,
        },
        token=reg["agent_token"],
    )


def status_of(url, agent_id):
    return http("GET", f"{url}/api/agents/{agent_id}", token=ADMIN_TOKEN)[2]["status"]


def test_silent_node_goes_offline_within_timeout_and_returns(router_factory):
    timeout = 1.0
    router = router_factory(heartbeat_interval=0.3, heartbeat_timeout=timeout)
    reg = register(router.url)
    assert beat(router.url, reg)[0] == 200
    assert status_of(router.url, reg["agent_id"]) == "online"
    # No more heartbeats: offline within heartbeat_timeout + 1 s of the last one.
    wait_until(
        lambda: status_of(router.url, reg["agent_id"]) == "offline",
        timeout=timeout + 1.0,
        interval=0.05,
        message="offline after heartbeat timeout",
    )
    assert beat(router.url, reg)[2]["status"] == "ok"
    assert status_of(router.url, reg["agent_id"]) == "online"


def test_offline_node_gets_no_requests(router_factory, fake_nodes):
    router = router_factory(heartbeat_interval=0.3, heartbeat_timeout=1.0)
    (node,) = join(router, fake_nodes, 1)
    node.close()
    agent_id = router.agents()[0]["id"]
    wait_until(lambda: status_of(router.url, agent_id) == "offline", timeout=5)
    status, _, body = http(
        "POST", router.url + "/v1/chat/completions", {"model": "llama3", "messages": []}
    )
    # Its node is offline, not gone: 503 + Retry-After (clients retry), not 404 (final).
    assert status == 503 and body["error"]["code"] == "model_unavailable"


def test_restart_on_same_db_keeps_registry_and_tokens(router_process, tmp_path):
    db = str(tmp_path / "state.db")
    router = router_process(db=db)
    reg = register(router.url, "persisted")
    http(
        "PATCH",
        f"{router.url}/api/agents/{reg['agent_id']}",
        {"custom_name": "Kept", "tags": ["a"]},
        token=ADMIN_TOKEN,
    )
    assert router.stop(signal.SIGTERM) == 0
    log = router.log_path.read_text()
    assert f"listening on http://127.0.0.1:{router.port}" in log

    router.start()
    agent = http("GET", f"{router.url}/api/agents/{reg['agent_id']}")[2]
    assert agent["status"] == "offline"
    assert agent["custom_name"] == "Kept" and agent["tags"] == ["a"]
    assert agent["machine_name"] == "persisted"
    # The agent's token survived the restart: its next heartbeat brings it back online.
    assert beat(router.url, reg)[0] == 200
    assert status_of(router.url, reg["agent_id"]) == "online"
    assert router.stop(signal.SIGTERM) == 0


def test_sigterm_finishes_in_flight_stream_and_flushes_history(
    router_process, fake_nodes, tmp_path
):
    db = str(tmp_path / "flush.db")
    router = router_process(db=db, env={"LLM_ROUTER_SHUTDOWN_GRACE": "10"})
    (node,) = join(router, fake_nodes, 1)
    node.node.configure(tokens=10, token_delay=0.1)
    conn = httpclient.HTTPConnection("127.0.0.1", router.port, timeout=30)
    conn.request("POST", "/api/generate", json.dumps({"model": "llama3", "prompt": "x"}))
    resp = conn.getresponse()
    first = resp.readline()
    assert b"tok0" in first
    result = {}
    stopper = threading.Thread(target=lambda: result.setdefault("code", router.stop()))
    stopper.start()
    rest = resp.read()
    stopper.join(30)
    lines = [json.loads(x) for x in (first + rest).splitlines() if x.strip()]
    assert lines[-1]["done"] is True and len(lines) == 11
    assert result["code"] == 0
    # After the exit the request is in the database.
    conn_db = apsw.Connection(db)
    rows = list(conn_db.execute("SELECT endpoint, outcome, completion_tokens FROM requests"))
    assert ("api.generate", "ok", 10) in rows
    assert conn_db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_new_connections_are_refused_while_draining(router_process, fake_nodes, tmp_path):
    router = router_process(db=str(tmp_path / "drain.db"))
    (node,) = join(router, fake_nodes, 1)
    node.node.configure(tokens=20, token_delay=0.1)
    conn = httpclient.HTTPConnection("127.0.0.1", router.port, timeout=30)
    conn.request("POST", "/api/generate", json.dumps({"model": "llama3", "prompt": "x"}))
    resp = conn.getresponse()
    resp.readline()
    assert router.proc is not None
    router.proc.send_signal(signal.SIGTERM)

    def refused():
        try:
            http("GET", router.url + "/healthz", timeout=1)
        except OSError:
            return True
        return False

    wait_until(refused, timeout=5, message="listener closed during drain")
    resp.read()
    assert router.proc.wait(30) == 0


def test_stop_right_after_requests_keeps_every_history_row(router_factory, fake_nodes, tmp_path):
    """History rows wait up to 50 ms in a batch; a stop in that window must still save them."""
    db = str(tmp_path / "batch.db")
    router = router_factory(db=db)
    join(router, fake_nodes, 1)
    body = {"model": "llama3", "messages": [{"role": "user", "content": "hi"}]}
    for _ in range(20):
        status, _, _ = http("POST", router.url + "/v1/chat/completions", body)
        assert status == 200
    router.stop()  # at once: the last rows are still in the proxy's batch
    conn_db = apsw.Connection(db)
    count = conn_db.execute("SELECT count(*) FROM requests WHERE outcome = 'ok'").fetchone()[0]
    assert count == 20
