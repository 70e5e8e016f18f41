"""One way to start the router, a fake node or the agent as a child process, and to wait for it.

The benchmark (`routercore.bench.procs`), the load tests (`loadtests/`) and the test suite
(`tests/support/`) all start their children through these command lines and this `Child`, so a
new `serve` flag or a changed readiness check is made once. It lives in the product package
because the benchmark ships with it and must not import the tests.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
# Loopback children only: never send their readiness checks through an HTTP(S)_PROXY.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:`port`."""
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((HOST, port)) == 0


def url_ok(url: str, timeout: float = 1.0) -> bool:
    """Whether a GET of `url` answers 200 (directly, bypassing any proxy)."""
    try:
        with _DIRECT.open(url, timeout=timeout) as resp:
            return int(resp.status) == 200
    except urllib.error.HTTPError as exc:
        exc.close()
        return False
    except OSError:
        return False


class TimedOut(AssertionError):
    """A wait ran out of time. An AssertionError so that pytest reports it as the failed
    expectation it is; the benchmark lets it end the run with the same message."""


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 30.0,
    message: str = "condition",
    interval: float = 0.05,
) -> Any:
    """Poll `predicate` until it returns something truthy and return that, or raise TimedOut
    after `timeout` seconds. An OSError or AssertionError from `predicate` counts as "not yet"
    (a server still starting refuses connections); any other exception ends the wait."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (OSError, AssertionError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise TimedOut(f"timed out after {timeout}s waiting for {message} (last: {last!r})")


# -- command lines -----------------------------------------------------------------------------


def router_cmd(port: int, db: str | Path, *args: str) -> list[str]:
    """`python -m routercore serve` on 127.0.0.1:`port` with its database at `db`."""
    return [
        sys.executable, "-m", "routercore", "serve",
        "--host", HOST, "--port", str(port), "--db", str(db), *args,
    ]  # fmt: skip


def fakenode_cmd(port: int, models: str, *args: str) -> list[str]:
    """The fake node's console script on `port`, serving the comma-separated `models`."""
    return [
        sys.executable, "-m", "routercore.testing.fakenode",
        "--port", str(port), "--models", models, *args,
    ]  # fmt: skip


def agent_cmd(*args: str) -> list[str]:
    """The node agent without its tray icon (children have no desktop)."""
    return [sys.executable, "-m", "agent", "--no-tray", *args]


# -- the child ---------------------------------------------------------------------------------


class ChildExited(RuntimeError):
    """A child that should be running has exited; the message carries its log's tail."""


class Child:
    """A child process with its stdout and stderr in `log_path`. `start()` launches it (again,
    after a stop: the same command line); `stop()` is idempotent.

    `env` is the child's whole environment (None: this process's); `append=False` starts the
    log afresh at each start. `url` is the base URL when the child is a server.
    """

    def __init__(
        self,
        cmd: list[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        name: str = "child",
        append: bool = True,
    ) -> None:
        self.cmd = cmd
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.name = name
        self.append = append
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> Child:
        with open(self.log_path, "ab" if self.append else "wb") as out:
            self.proc = subprocess.Popen(
                self.cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=self.cwd
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} was never started"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def running(self) -> bool:
        """True while running; raises ChildExited with the tail of the log once it exited (so
        a wait for readiness stops at once instead of running out of time)."""
        assert self.proc is not None, f"{self.name} was never started"
        if self.proc.poll() is not None:
            tail = self.log()[-2000:]
            raise ChildExited(f"{self.name} exited with {self.proc.returncode}:\n{tail}")
        return True

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        """Send `sig` and wait up to `timeout` s, then kill; the exit code (None: never ran)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def inherited_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment with unbuffered Python output (so a log read after a kill
    holds everything the child printed) and `extra` on top."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", **(extra or {})}


def start_router(
    port: int,
    db: str | Path,
    log_path: Path,
    *,
    args: tuple[str, ...] | list[str] = (),
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout: float = 30.0,
) -> Child:
    """Start a router and return once its /healthz answers 200 (ChildExited if it dies)."""
    child = Child(router_cmd(port, db, *args), log_path, env=env, cwd=cwd, name="router")
    child.url = f"http://{HOST}:{port}"
    child.start()
    wait_router(child, port, timeout)
    return child


def wait_router(child: Child, port: int, timeout: float = 30.0) -> None:
    """Wait until the router `child` answers /healthz on `port`."""
    healthz = f"http://{HOST}:{port}/healthz"
    wait_until(lambda: child.running() and url_ok(healthz), timeout, f"router on port {port}")
