"""The settings window shows each router's connection, live: a real agent with its tray on Xvfb,
a real router and a fake runtime; the window (its own process, as the tray starts it) follows
the agent from registered to a lost router without being touched."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.status_file import read_status, status_path
from routercore.testing.processes import fakenode_cmd, free_port, url_ok
from tests.support import ROOT
from tests.support.agents import Proc, router_proc, xvfb_display
from tests.support.polling import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def display() -> Iterator[str]:
    with xvfb_display() as d:
        yield d


def test_settings_window_follows_the_connection_live(display: str, tmp_path: Path) -> None:
    router = router_proc(free_port(), tmp_path / "router.db", tmp_path / "router.log").start()
    router.url = f"http://127.0.0.1:{router.cmd[router.cmd.index('--port') + 1]}"
    runtime_port = free_port()
    runtime = Proc(fakenode_cmd(runtime_port, "alpha"), tmp_path / "runtime.log").start()
    config = tmp_path / "agent.toml"
    config.write_text(
        f'router_url = ["{router.url}"]\nruntime_url = "http://127.0.0.1:{runtime_port}"\n'
        'node_name = "windowed"\n'
    )
    env = {"DISPLAY": display, "WAYLAND_DISPLAY": "", "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
           "XDG_DATA_HOME": str(tmp_path / "data")}  # fmt: skip
    agent = None
    window = None
    try:
        wait_until(lambda: url_ok(router.url + "/healthz"), message="router")
        wait_until(lambda: url_ok(f"http://127.0.0.1:{runtime_port}/api/tags"), message="runtime")
        agent = Proc(
            [sys.executable, "-m", "agent", "--config", str(config)], tmp_path / "agent.log", env
        ).start()
        status_file = status_path(config)

        def registered_with_heartbeat() -> bool:
            data = read_status(status_file) or {}
            routers = data.get("routers") or [{}]
            return bool(routers[0].get("registered") and routers[0].get("last_heartbeat"))

        try:
            wait_until(registered_with_heartbeat, timeout=30, message="the tray's status file")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nagent log:\n{agent.log()[-3000:]}") from None
        assert "running_headless" not in agent.log()  # the tray wrote it

        # The window as the tray opens it (settings_command), pumped here to read its label.
        script = textwrap.dedent(
            f"""
            import sys, time
            from pathlib import Path
            from agent.config import load_config
            from agent.settings_window import SettingsForm, SettingsWindow
            w = SettingsWindow(
                SettingsForm(load_config({{}}, {{}}, Path({str(config)!r}))),
                Path({str(status_file)!r}),
            )
            last = None
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                w.root.update()
                text = w.connection.cget("text")
                if text != last:
                    print(text.replace("\\n", " | "), flush=True)
                    last = text
                if "error:" in text:
                    break
                time.sleep(0.05)
            """
        )
        window = subprocess.Popen(
            [sys.executable, "-c", script],
            env={**os.environ, **env},
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert window.stdout is not None
        seen: list[str] = []

        def next_line() -> str:
            line = window.stdout.readline().strip()  # type: ignore[union-attr]
            assert line, f"window ended early: {window.stderr.read()}"  # type: ignore[union-attr]
            seen.append(line)
            return line

        first = next_line()
        assert first.startswith(f"{router.url}: registered · last heartbeat "), first
        router.kill()  # the router goes away: the agent notices at its next heartbeat
        while "error:" not in seen[-1]:
            next_line()
        assert seen[-1].startswith(f"{router.url}: not registered · last heartbeat "), seen
        assert window.wait(30) == 0
    finally:
        if window is not None and window.poll() is None:
            window.kill()
            window.wait(10)
        if agent is not None:
            assert agent.stop(signal.SIGTERM) == 0
        runtime.stop()
        router.kill()
