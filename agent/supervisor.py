"""The runtime as the agent's child process: start it, notice when it dies, stop it on exit.

Only a process this object started is ever stopped: a runtime the user runs themselves is
left alone.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)


class RuntimeProcess:
    """One child runtime process at a time."""

    def __init__(self, log_path: Path | None = None) -> None:
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def started(self) -> bool:
        """True when the agent started a process (alive or not) that it has not reaped."""
        return self._proc is not None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def exit_code(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def start(self, command: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        if self.running():
            return
        self._close_log()
        kwargs: dict[str, Any] = {}
        if sys.platform == "win32":
            flags = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
            flags |= getattr(subprocess, "CREATE_NO_WINDOW", 0)
            kwargs["creationflags"] = flags
        else:
            # Own session: a Ctrl+C in the agent's terminal must not reach the runtime first.
            kwargs["start_new_session"] = True
        out: IO[bytes] | int = subprocess.DEVNULL
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the child
            out = self._log
        self._proc = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            **kwargs,
        )
        self.starts += 1
        log.info("runtime_started pid=%d command=%s", self._proc.pid, " ".join(command))

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate politely, then kill; safe to call when nothing runs."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            log.info("runtime_stopping pid=%d", proc.pid)
            self._signal(proc, graceful=True)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(proc, graceful=False)
                proc.wait(timeout)
        self._proc = None
        self._close_log()

    def forget(self) -> int | None:
        """Reap a dead child so a restart can follow; returns its exit code."""
        code = self.exit_code()
        if code is not None:
            self._proc = None
            self._close_log()
        return code

    @staticmethod
    def _signal(proc: subprocess.Popen[bytes], *, graceful: bool) -> None:
        try:
            if sys.platform == "win32":
                proc.terminate() if graceful else proc.kill()
            else:
                # The child leads its own process group: reach its helpers too.
                os.killpg(proc.pid, signal.SIGTERM if graceful else signal.SIGKILL)
        except (ProcessLookupError, PermissionError, OSError):
            pass

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
