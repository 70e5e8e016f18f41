"""The agent's tests: its child processes (agent, router, fake runtime) with a clean
environment, a private X display for the tray and settings window, and a JSON client that
never goes through a proxy (some tests set one for the agent only)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from routercore.testing.processes import Child, router_cmd, wait_until
from tests.support import ROOT
from tests.support.routers import ADMIN_TOKEN

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get_json(url: str, timeout: float = 5.0) -> tuple[int, Any]:
    try:
        with _DIRECT.open(url, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        body = exc.read()
        exc.close()
        try:
            return exc.code, json.loads(body or b"null")
        except ValueError:
            return exc.code, body


def post_json(url: str, body: Any, timeout: float = 10.0) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    try:
        with _DIRECT.open(req, timeout=timeout) as resp:
            raw = resp.read()
            return resp.status, raw
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        exc.close()
        return exc.code, raw


def delete(url: str, token: str | None = None, timeout: float = 10.0) -> int:
    req = urllib.request.Request(url, method="DELETE")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with _DIRECT.open(req, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code


@contextlib.contextmanager
def xvfb_display() -> Iterator[str]:
    """A private Xvfb server's DISPLAY value; the caller should skip when Xvfb is missing."""
    n = next(
        n
        for n in range(90, 200)
        if not Path(f"/tmp/.X11-unix/X{n}").exists() and not Path(f"/tmp/.X{n}-lock").exists()
    )
    proc = subprocess.Popen(
        # -noreset: an X server resets when its last client leaves, dropping connections
        # that arrive meanwhile (pystray probes the display once before it connects for real).
        ["Xvfb", f":{n}", "-screen", "0", "800x600x24", "-nolisten", "tcp", "-noreset"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: Path(f"/tmp/.X11-unix/X{n}").exists(), timeout=10, message="Xvfb")
        yield f":{n}"
    finally:
        proc.terminate()
        proc.wait(10)


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without the agent's, the router's, the tray's or proxy settings, so a
    developer's own setup cannot change what a child does; `extra` on top."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LLM_AGENT_", "LLM_ROUTER_", "PYSTRAY_"))
        and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class Proc(Child):
    """A child of the agent's tests: a clean environment plus `env`, run from the repository
    root, its output in `log_path`; not started until `start()`."""

    def __init__(self, cmd: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        super().__init__(cmd, log_path, env=clean_env(env), cwd=ROOT, name=log_path.stem)


def router_proc(port: int, db: Path, log_path: Path, heartbeat: float = 0.5) -> Proc:
    """`python -m routercore serve` on `port`, heartbeats every `heartbeat` s, timeout 3 s."""
    env = {
        "LLM_ROUTER_HEARTBEAT_INTERVAL": str(heartbeat),
        "LLM_ROUTER_HEARTBEAT_TIMEOUT": "3",
        "LLM_ROUTER_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    return Proc(router_cmd(port, db), log_path, env)
