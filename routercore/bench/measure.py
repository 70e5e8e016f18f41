"""The measuring tools of a run: wrk, the paced and streaming clients, held streams.

Each runs a load generator pinned to the load core (clients.py or wrk) against one port and
returns one row of numbers; the sections (runner.py, throughput.py, many.py, relay.py) decide
what to point them at.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from routercore.bench.procs import Proc, Processes, pinned
from routercore.bench.settings import PATH, REPLAY_BODY, STREAM_BODY, Settings

WRK_LUA = """
wrk.method = "POST"
wrk.body = '%s'
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%%d,"duration_us":%%d,"errors":%%d,"p50_us":%%d,"p99_us":%%d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def _pct(values: list[int], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return float(s[min(len(s) - 1, int(q * len(s)))])


class Measure:
    """The processes, settings and work directory of one run, and the tools that measure."""

    def __init__(self, procs: Processes, settings: Settings, work: Path) -> None:
        self.p = procs
        self.s = settings
        self.work = work

    # -- helpers ---------------------------------------------------------------------------------

    def _client(self, mode: str, port: int, body: str, *args: str) -> list[str]:
        """The command line of one clients.py run (later `--path` flags win over PATH)."""
        cmd = [sys.executable, "-m", "routercore.bench.clients", mode, "--port", str(port)]
        return [*cmd, "--path", PATH, "--body", body, *args]

    def _load_cmd(self, cmd: list[str]) -> list[str]:
        return pinned(cmd, self.s.load_cores)

    def wrk(
        self,
        port: int,
        sut: Proc | None,
        *,
        path: str = PATH,
        body: str = REPLAY_BODY,
        connections: int | None = None,
    ) -> dict[str, Any]:
        """Closed-loop max throughput with wrk (one thread, fixed connections) on the load core.

        With `connections=1` it is the latency of one request after another, nothing queued.
        """
        script = self.work / "post.lua"
        script.write_text(WRK_LUA % body)
        cmd = self._load_cmd(
            [
                "wrk",
                "-t1",
                f"-c{connections or self.s.wrk_connections}",
                f"-d{self.s.wrk_seconds:g}s",
                "-s",
                str(script),
                f"http://127.0.0.1:{port}{path}",
            ]
        )
        cpu0 = self.p.cpu_times(sut) if sut else 0.0
        t0 = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        wall = time.perf_counter() - t0
        cpu_s = self.p.cpu_times(sut) - cpu0 if sut else None
        line = next(x for x in out.splitlines() if x.startswith("WRKJSON "))
        data = json.loads(line[8:])
        requests = max(1, data["requests"])
        return {
            "rps": round(data["requests"] / (data["duration_us"] / 1e6)),
            "p50_ms": data["p50_us"] / 1000,
            "p99_ms": data["p99_us"] / 1000,
            "errors": data["errors"],
            # CPU share the server got, and its CPU time per request: the second does not
            # depend on what else the machine runs, so it is the number to compare changes by.
            "sut_cpu_pct": round(cpu_s / wall * 100, 1) if cpu_s is not None else None,
            "cpu_us_per_req": round(cpu_s * 1e6 / requests, 1) if cpu_s is not None else None,
        }

    def paced(self, port: int, rate: float) -> dict[str, Any]:
        """Open-loop fixed-rate latency, split over several client processes on the load core."""
        n = self.s.paced_processes
        cmd = self._client(
            "paced",
            port,
            REPLAY_BODY,
            "--rate",
            f"{rate / n:.1f}",
            "--duration",
            f"{self.s.paced_seconds:g}",
            "--conns",
            "16",
            "--warmup",
            "1",
        )
        outs = [self.work / f"paced-{port}-{i}.json" for i in range(n)]
        children = [
            subprocess.Popen(self._load_cmd([*cmd, "--out", str(out), "--seed", str(i)]))
            for i, out in enumerate(outs)
        ]
        lat: list[int] = []
        errors = skipped = 0
        for child, out in zip(children, outs, strict=True):
            child.wait(timeout=self.s.paced_seconds + 60)
            data = json.loads(out.read_text())
            lat += data["latencies_us"]
            errors += data["errors"]
            skipped += data["skipped"]
        return {
            "rate": round(rate),
            "achieved_rps": round(len(lat) / self.s.paced_seconds),
            "p50_ms": _pct(lat, 0.50) / 1000,
            "p99_ms": _pct(lat, 0.99) / 1000,
            "errors": errors,
            "skipped": skipped,
        }

    def streams(self, port: int, model: str, path: str = PATH) -> dict[str, Any]:
        cmd = self._client(
            "streams",
            port,
            STREAM_BODY % model,
            "--path",
            path,
            "--count",
            str(self.s.stream_count),
            "--parallel",
            "1",
            "--stamped",
        )
        out = self.work / f"streams-{port}-{model}.json"
        subprocess.run(self._load_cmd([*cmd, "--out", str(out)]), check=True, timeout=300)
        data = json.loads(out.read_text())
        ttfb, delay = data["ttfb_us"], data["chunk_delay_us"]
        return {
            "streams": len(ttfb),
            "ttft_p50_ms": _pct(ttfb, 0.5) / 1000,
            "ttft_p99_ms": _pct(ttfb, 0.99) / 1000,
            "chunk_p50_ms": _pct(delay, 0.5) / 1000,
            "chunk_p99_ms": _pct(delay, 0.99) / 1000,
            "chunks": len(delay),
        }

    def hold(self, router_port: int, router: Proc, count: int, model: str) -> dict[str, Any]:
        """Hold `count` streams open through the router; its RSS and CPU while they flow."""
        cmd = self._client("hold", router_port, STREAM_BODY % model, "--count", str(count))
        child = subprocess.Popen(
            self._load_cmd(cmd), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert child.stdin is not None and child.stdout is not None
        try:
            ready = json.loads(child.stdout.readline() or "{}")
            if ready.get("ready") != count:
                raise RuntimeError(f"hold client failed to open {count} streams: {ready}")
            cpu0 = self.p.cpu_times(router)
            t0 = time.perf_counter()
            time.sleep(self.s.hold_window)
            cpu = (self.p.cpu_times(router) - cpu0) / (time.perf_counter() - t0) * 100
            rss = self.p.rss_mb(router)
            child.stdin.close()
            done = json.loads(child.stdout.readline() or "{}")
        finally:
            if child.poll() is None:
                child.kill()
            child.wait(10)
        return {
            "streams": count,
            "rss_mb": round(rss, 1),
            "cpu_pct": round(cpu, 1),
            "lost": done.get("lost"),
        }

    def many(self, router_port: int, model: str, count: int, timeout: float) -> dict[str, Any]:
        """`count` streams opened at once through the router, each read to its end."""
        cmd = self._client(
            "many",
            router_port,
            STREAM_BODY % model,
            "--count",
            str(count),
            "--duration",
            f"{timeout:g}",
        )
        out = self.work / f"many-{router_port}.json"
        subprocess.run(self._load_cmd([*cmd, "--out", str(out)]), check=True, timeout=timeout + 60)
        data: dict[str, Any] = json.loads(out.read_text())
        return data
