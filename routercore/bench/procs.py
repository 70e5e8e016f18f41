"""Child processes for the benchmark: fake node, router, bare server, nginx; pinned to cores."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from routercore.testing.processes import (
    Child,
    fakenode_cmd,
    free_port,
    port_open,
    router_cmd,
    wait_router,
    wait_until,
)

ADMIN_TOKEN = "bench-admin-token"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
# The runner and the scenarios take these from here along with the rest of the plumbing.
__all__ = ["NGINX", "Proc", "Processes", "free_port", "port_open", "running", "wait_until"]


def pinned(cmd: list[str], cores: str | None) -> list[str]:
    """Prefix `cmd` with `taskset -c cores` when taskset exists and cores are given."""
    if cores is None or shutil.which("taskset") is None:
        return cmd
    return ["taskset", "-c", cores, *cmd]


def get_json(url: str, timeout: float = 2.0) -> Any:
    req = urllib.request.Request(url, headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


class Proc(Child):
    """A child of one benchmark run, started at once with its log in `log_dir/<name>.log`;
    always stopped (SIGINT, then kill) at the end."""

    def __init__(
        self,
        name: str,
        cmd: list[str],
        *,
        env: dict[str, str] | None = None,
        log_dir: Path,
        cwd: str | None = None,
    ) -> None:
        full_env = {**os.environ, **(env or {})}
        log = log_dir / f"{name}.log"
        super().__init__(cmd, log, env=full_env, cwd=cwd, name=name, append=False)
        self.start()

    def alive(self) -> bool:
        """True while running; an exit raises with the tail of its log."""
        return self.running()

    def stop(self, sig: int = signal.SIGINT, timeout: float = 10.0) -> int | None:
        return super().stop(sig, timeout)


class Processes:
    """Starts and tracks every child of one benchmark run; stops them all at the end."""

    def __init__(self, log_dir: Path, *, sut_cores: str | None, load_cores: str | None) -> None:
        self.log_dir = log_dir
        self.sut_cores = sut_cores
        self.load_cores = load_cores
        self.procs: list[Proc] = []

    def start(self, name: str, cmd: list[str], cores: str | None, **kw: Any) -> Proc:
        proc = Proc(name, pinned(cmd, cores), log_dir=self.log_dir, **kw)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc) -> None:
        proc.stop()
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                proc.stop()
        self.procs.clear()

    # -- the pieces ----------------------------------------------------------------------------

    def fakenode(
        self,
        port: int,
        *,
        register: str | None = None,
        tokens: int = 8,
        token_delay: float = 0.0,
        first_token_delay: float = 0.0,
        name: str = "fakenode",
        models: str = "bench",
    ) -> Proc:
        cmd = fakenode_cmd(
            port,
            models,
            "--tokens",
            str(tokens),
            "--token-delay",
            str(token_delay),
            "--first-token-delay",
            str(first_token_delay),
            "--log-level",
            "warning",
        )
        if register:
            cmd += ["--register", register, "--name", name]
        proc = self.start(name, cmd, self.load_cores)
        wait_until(lambda: proc.alive() and port_open(port), 30, f"{name} on port {port}")
        return proc

    def router(
        self,
        port: int,
        *,
        extra_env: dict[str, str] | None = None,
        name: str = "router",
        tuned: bool = True,
        access_log: bool = True,
    ) -> Proc:
        """The router, tuned (in-memory SQLite, no access log, warnings only) or with
        `tuned=False` in the default configuration users get (on-disk SQLite, access log on;
        `access_log=False` turns only the access log off, to measure what it costs)."""
        if tuned:
            cmd = router_cmd(port, ":memory:", "--no-access-log", "--log-level", "warning")
        else:
            cmd = router_cmd(port, self.log_dir / f"{name}.db")
            if not access_log:
                cmd.append("--no-access-log")
        env = {"LLM_ROUTER_ADMIN_TOKEN": ADMIN_TOKEN, **(extra_env or {})}
        proc = self.start(name, cmd, self.sut_cores, env=env)
        wait_router(proc, port)
        return proc

    def wait_online(self, router_port: int, count: int) -> None:
        url = f"http://127.0.0.1:{router_port}/api/agents"

        def ready() -> bool:
            agents = get_json(url)
            return sum(a["status"] == "online" for a in agents) >= count

        wait_until(ready, 30, f"{count} node(s) online")

    def bare(self, port: int, reply_file: Path, *, replay: bool = False) -> Proc:
        """The bare uvloop+h11 server on the core under test, or with `replay` the recorded
        reply as a node (raw bytes, no h11) on the load core."""
        cmd = [
            sys.executable,
            "-m",
            "routercore.bench.bare",
            "--port",
            str(port),
            "--reply",
            str(reply_file),
        ]
        name, cores = ("replay", self.load_cores) if replay else ("bare", self.sut_cores)
        proc = self.start(name, [*cmd, "--replay"] if replay else cmd, cores)
        wait_until(lambda: proc.alive() and port_open(port), 30, f"{name} server")
        return proc

    def nginx(
        self, port: int, upstream_port: int, *, static_port: int | None = None
    ) -> Proc | None:
        """nginx as a keep-alive reverse proxy to the fake node (and a static `return 200`)."""
        if NGINX is None:
            return None
        prefix = self.log_dir / "nginx"
        prefix.mkdir(exist_ok=True)
        (prefix / "logs").mkdir(exist_ok=True)
        static = ""
        if static_port is not None:
            static = (
                f"server {{ listen 127.0.0.1:{static_port} backlog=4096; "
                "location / { return 200 'ok'; } }"
            )
        conf = prefix / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(port=port, upstream=upstream_port, static=static, prefix=prefix)
        )
        proc = self.start("nginx", [NGINX, "-c", str(conf), "-p", str(prefix)], self.sut_cores)
        wait_until(lambda: proc.alive() and port_open(port), 15, "nginx")
        return proc

    def cpu_times(self, proc: Proc) -> float:
        import psutil

        t = psutil.Process(proc.pid).cpu_times()
        return float(t.user + t.system)

    def rss_mb(self, proc: Proc) -> float:
        import psutil

        return float(psutil.Process(proc.pid).memory_info().rss) / 1e6


NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
error_log {prefix}/logs/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    upstream node {{ server 127.0.0.1:{upstream}; keepalive 64; keepalive_requests 1000000; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://node;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
    {static}
}}
"""


@contextlib.contextmanager
def running(log_dir: Path, *, sut_cores: str | None, load_cores: str | None) -> Iterator[Processes]:
    procs = Processes(log_dir, sut_cores=sut_cores, load_cores=load_cores)
    try:
        yield procs
    finally:
        procs.stop_all()
