"""RuntimeProcess: start a child, notice its death, stop only what it started."""

from __future__ import annotations

import sys
from pathlib import Path

import psutil

from agent.supervisor import RuntimeProcess
from tests.support.polling import wait_until

SLEEPER = [sys.executable, "-c", "import time, sys; print('child up', flush=True); time.sleep(120)"]


def test_start_stop_and_log(tmp_path: Path) -> None:
    rp = RuntimeProcess(tmp_path / "logs" / "runtime.log")
    assert not rp.started and rp.pid is None
    rp.stop()  # nothing started: nothing to do
    rp.start(SLEEPER, env=None)
    try:
        pid = rp.pid
        assert pid is not None and rp.running() and rp.started
        rp.start(SLEEPER)  # already running: no second child
        assert rp.pid == pid and rp.starts == 1
        wait_until(
            lambda: "child up" in (tmp_path / "logs" / "runtime.log").read_text(), message="log"
        )
    finally:
        rp.stop(timeout=10)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not rp.started


def test_death_is_noticed_and_forgotten(tmp_path: Path) -> None:
    rp = RuntimeProcess(None)
    rp.start([sys.executable, "-c", "raise SystemExit(3)"])
    wait_until(lambda: rp.exit_code() is not None, message="exit")
    assert not rp.running()
    assert rp.forget() == 3
    assert not rp.started and rp.forget() is None
    rp.start(SLEEPER)
    try:
        assert rp.starts == 2 and rp.running()
    finally:
        rp.stop(timeout=10)


def test_stop_kills_a_child_that_ignores_sigterm(tmp_path: Path) -> None:
    stubborn = [
        sys.executable,
        "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(120)",
    ]
    log = tmp_path / "rt.log"
    rp = RuntimeProcess(log)
    rp.start(stubborn)
    pid = rp.pid
    wait_until(lambda: "ready" in log.read_text(), message="handler installed")
    rp.stop(timeout=0.5)
    assert pid is not None
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
