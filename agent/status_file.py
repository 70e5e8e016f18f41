"""The agent's connection state in a small JSON file, for the settings window.

The settings window runs as its own process (tkinter wants its own main thread), so it cannot
look at the agent's AgentState. The tray's refresher writes each new snapshot next to the config
file (`agent.toml` -> `agent.status.json`, so each config has its own), replacing it atomically;
the window reads it every second. The file carries the agent's pid: a file left behind by an
agent that has exited is shown as "not running", not as a stale "registered".
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from agent.state import Snapshot


def status_path(config_path: Path) -> Path:
    return config_path.with_name(config_path.stem + ".status.json")


def write_status(path: Path, snapshot: Snapshot, *, now: float | None = None) -> None:
    data = {
        "pid": os.getpid(),
        "written_at": time.time() if now is None else now,
        "status": "paused" if snapshot.paused else snapshot.status,
        "runtime_up": snapshot.runtime_up,
        "routers": [
            {
                "url": r.url,
                "registered": r.registered,
                "agent_id": r.agent_id,
                "error": r.error,
                "last_heartbeat": r.last_heartbeat,
            }
            for r in snapshot.routers
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


def read_status(path: Path) -> dict[str, Any] | None:
    """The last state written, or None when there is none (or it cannot be read)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def connection_lines(
    status: dict[str, Any] | None,
    now: float,
    *,
    pid_alive: Callable[[int], bool] = psutil.pid_exists,
) -> list[tuple[str, str]]:
    """(router URL, what to show) per router; one ("agent", ...) line when it is not running."""
    pid = status.get("pid") if status else None
    if status is None or not isinstance(pid, int) or not pid_alive(pid):
        return [("agent", "not running (start it to see its connections)")]
    lines = []
    for router in status.get("routers") or []:
        if not isinstance(router, dict):
            continue
        parts = ["registered" if router.get("registered") else "not registered"]
        beat = router.get("last_heartbeat")
        if isinstance(beat, int | float):
            parts.append(f"last heartbeat {_ago(now - beat)}")
        elif router.get("registered"):
            parts.append("no heartbeat yet")
        if router.get("error"):
            parts.append(f"error: {router['error']}")
        lines.append((str(router.get("url", "?")), " · ".join(parts)))
    return lines or [("agent", "no router configured")]
