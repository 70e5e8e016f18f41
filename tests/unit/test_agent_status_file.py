"""The connection state the settings window shows: what the session records, what the status
file holds, and the text made from it."""

from __future__ import annotations

import os
from pathlib import Path

from agent.httpjson import JsonResponse
from agent.router_client import RouterSession
from agent.state import AgentState, RouterLink, Snapshot
from agent.status_file import connection_lines, read_status, status_path, write_status

ALIVE = {"pid_alive": lambda _pid: True}


def test_session_records_the_last_accepted_heartbeat() -> None:
    now = [1000.0]
    s = RouterSession("http://r", clock=lambda: now[0])
    s.on_register_response(JsonResponse(201, {"agent_id": "a", "agent_token": "t"}))
    assert s.last_heartbeat is None
    s.on_heartbeat_response(JsonResponse(200, {"status": "ok"}))
    assert s.last_heartbeat == 1000.0
    now[0] = 1010.0
    s.on_heartbeat_response(JsonResponse(500, {}))  # refused: the last good one stays
    assert s.last_heartbeat == 1000.0 and s.last_error == "heartbeat failed: HTTP 500"


def test_status_file_round_trip(tmp_path: Path) -> None:
    path = status_path(tmp_path / "agent.toml")
    assert path == tmp_path / "agent.status.json"
    assert read_status(path) is None
    snap = Snapshot(
        routers=(
            RouterLink("http://a", registered=True, agent_id="id1", last_heartbeat=50.0),
            RouterLink("http://b", error="connection refused"),
        ),
        runtime_up=True,
    )
    write_status(path, snap, now=60.0)
    data = read_status(path)
    assert data is not None and data["pid"] == os.getpid() and data["status"] == "degraded"
    assert connection_lines(data, 62.0, **ALIVE) == [
        ("http://a", "registered · last heartbeat 12 s ago"),
        ("http://b", "not registered · error: connection refused"),
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["agent.status.json"]  # no temp files left


def test_connection_lines_when_the_agent_is_not_running(tmp_path: Path) -> None:
    not_running = [("agent", "not running (start it to see its connections)")]
    assert connection_lines(None, 0.0) == not_running
    state = AgentState(("http://a",))
    path = tmp_path / "s.json"
    write_status(path, state.snapshot)
    data = read_status(path)
    assert connection_lines(data, 0.0, pid_alive=lambda _pid: False) == not_running
    assert connection_lines(data, 0.0)[0] == ("http://a", "not registered")  # we are alive
    path.write_text("{not json")
    assert read_status(path) is None


def test_connection_lines_wording() -> None:
    base = {"pid": 1, "routers": []}
    assert connection_lines(base, 0.0, **ALIVE) == [("agent", "no router configured")]
    routers = [
        {"url": "http://a", "registered": True, "last_heartbeat": None},
        {"url": "http://b", "registered": False, "last_heartbeat": 0.0, "error": "HTTP 503"},
        {"url": "http://c", "registered": True, "last_heartbeat": 1000.0 - 600},
    ]
    lines = connection_lines({**base, "routers": routers}, 1000.0, **ALIVE)
    assert lines == [
        ("http://a", "registered · no heartbeat yet"),
        ("http://b", "not registered · last heartbeat 17 min ago · error: HTTP 503"),
        ("http://c", "registered · last heartbeat 10 min ago"),
    ]
