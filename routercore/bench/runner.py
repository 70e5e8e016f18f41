"""One benchmark run: start everything, measure each section, evaluate the targets."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from routercore.bench import affinity as affinity_bench
from routercore.bench import balancer as balancer_bench
from routercore.bench import relay as relay_bench
from routercore.bench.affinity import AffinitySettings
from routercore.bench.procs import Proc, Processes, free_port, running

CHAT_BODY = '{"model":"bench","messages":[{"role":"user","content":"hi"}]}'
# The throughput and latency sections ask for the replay node's model (see bare.py).
REPLAY_BODY = '{"model":"replay","messages":[{"role":"user","content":"hi"}]}'
STREAM_BODY = '{"model":"%s","stream":true,"messages":[{"role":"user","content":"hi"}]}'
PATH = "/v1/chat/completions"
SECTIONS = (
    "throughput",
    "latency",
    "streams",
    "translated",
    "held",
    "balancer",
    "relay",
    "affinity",
)

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


@dataclass(frozen=True)
class Settings:
    """How long and how hard each section runs (`quick` is the ~30 s smoke-able variant)."""

    wrk_seconds: float = 8.0
    wrk_connections: int = 32
    rounds: int = 3
    paced_seconds: float = 8.0
    paced_processes: int = 2
    stream_count: int = 300
    stream_chunks: int = 20
    stream_delay: float = 0.005
    hold_counts: tuple[int, ...] = (100, 1000, 2000)
    hold_window: float = 5.0
    balancer_sizes: tuple[int, ...] = (16, 256, 1000)
    balancer_budget: float = 0.3
    sut_cores: str | None = "0"
    load_cores: str | None = "1"
    nginx: bool = True
    sections: tuple[str, ...] = SECTIONS
    affinity_quick: bool = False  # short conversations on the llama.cpp nodes (smoke runs)

    @classmethod
    def quick(cls, **kw: Any) -> Settings:
        return cls(
            wrk_seconds=2.0,
            rounds=1,
            paced_seconds=2.0,
            stream_count=40,
            hold_counts=(100, 1000, 2000),
            hold_window=1.0,
            balancer_budget=0.1,
            affinity_quick=True,
            **kw,
        )


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import h11
    import uvloop

    mem = 0
    try:
        import psutil

        mem = psutil.virtual_memory().total
    except ImportError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(mem / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "uvloop": uvloop.__version__,
        "h11": h11.__version__,
    }


def _pct(values: list[int], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return float(s[min(len(s) - 1, int(q * len(s)))])


class Bench:
    """Holds the processes and the results of one run."""

    def __init__(self, procs: Processes, settings: Settings, work: Path) -> None:
        self.p = procs
        self.s = settings
        self.work = work
        self.results: dict[str, Any] = {"machine": machine(), "settings": settings.__dict__}

    # -- helpers ---------------------------------------------------------------------------------

    def _load_cmd(self, cmd: list[str]) -> list[str]:
        from routercore.bench.procs import pinned

        return pinned(cmd, self.s.load_cores)

    def wrk(
        self, port: int, sut: Proc | None, *, path: str = PATH, body: str = REPLAY_BODY
    ) -> dict[str, Any]:
        """Closed-loop max throughput with wrk (one thread, fixed connections) on the load core."""
        script = self.work / "post.lua"
        script.write_text(WRK_LUA % body)
        cmd = self._load_cmd(
            [
                "wrk",
                "-t1",
                f"-c{self.s.wrk_connections}",
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
        cmd = [
            sys.executable,
            "-m",
            "routercore.bench.clients",
            "paced",
            "--port",
            str(port),
            "--path",
            PATH,
            "--body",
            REPLAY_BODY,
            "--rate",
            f"{rate / n:.1f}",
            "--duration",
            f"{self.s.paced_seconds:g}",
            "--conns",
            "16",
            "--warmup",
            "1",
        ]
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
        cmd = [
            sys.executable,
            "-m",
            "routercore.bench.clients",
            "streams",
            "--port",
            str(port),
            "--path",
            path,
            "--body",
            STREAM_BODY % model,
            "--count",
            str(self.s.stream_count),
            "--parallel",
            "1",
            "--stamped",
        ]
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
        cmd = [
            sys.executable,
            "-m",
            "routercore.bench.clients",
            "hold",
            "--port",
            str(router_port),
            "--path",
            PATH,
            "--body",
            STREAM_BODY % model,
            "--count",
            str(count),
        ]
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

    def _requests(self, router: Proc, rport: int, nport: int, reply: Path) -> None:
        """Non-streamed requests: max req/s (wrk) and latency at half the router's max.

        `nport` is the replay node (bare.py --replay): the fake node's recorded reply from a
        node cheap enough that it, on the load generator's core, never limits the router.
        """
        s, p, r = self.s, self.p, self.results
        bport = free_port()
        bare = p.bare(bport, reply)
        nginx = None
        ngport = wport = 0
        if s.nginx and shutil.which("wrk"):
            ngport, wport = free_port(), free_port()
            nginx = p.nginx(ngport, nport, static_port=wport)

        # Max throughput (closed loop, wrk); rounds interleave the targets, the best one counts,
        # so a burst of load from elsewhere on the machine hits every target alike.
        targets_ = [("direct", nport, None, PATH), ("router", rport, router, PATH)]
        if nginx is not None:
            targets_ += [("nginx", ngport, nginx, PATH), ("wrk_ceiling", wport, nginx, "/")]
        targets_.append(("bare", bport, bare, PATH))
        tp: dict[str, Any] = {}
        for _ in range(s.rounds):
            for name, port, sut, path in targets_:
                row = self.wrk(port, sut, path=path)
                if name not in tp or row["rps"] > tp[name]["rps"]:
                    tp[name] = row
        r["throughput"] = tp
        if "latency" in s.sections:
            # Latency at half of the router's max rate (open loop, paced clients).
            rate = tp["router"]["rps"] / 2
            lat = {"direct": self.paced(nport, rate), "router": self.paced(rport, rate)}
            if nginx is not None:
                lat["nginx"] = self.paced(ngport, rate)
            lat["bare"] = self.paced(bport, rate)
            r["latency_at_half_max"] = lat
        p.stop(bare)
        if nginx is not None:
            p.stop(nginx)

    # -- the run -----------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        s, p, r = self.s, self.p, self.results
        rport, nport, sport, hport = free_port(), free_port(), free_port(), free_port()
        router = p.router(rport, extra_env={"LLM_ROUTER_HEARTBEAT_TIMEOUT": "86400"})
        router_url = f"http://127.0.0.1:{rport}"
        p.fakenode(nport, register=router_url)
        reply = self.work / "reply.json"
        reply.write_text(json.dumps(_fetch_reply(nport)))
        replay_port = free_port()
        p.bare(replay_port, reply, replay=True)
        _register(router_url, "replay", replay_port, ["replay"])
        p.fakenode(
            hport, register=router_url, tokens=100000, token_delay=1.0, name="slow", models="slow"
        )
        p.start(
            "stamp",
            [
                sys.executable,
                "-m",
                "routercore.bench.bare",
                "--port",
                str(sport),
                "--stamp-chunks",
                str(s.stream_chunks),
                "--stamp-delay",
                str(s.stream_delay),
            ],
            s.load_cores,
        )
        _register(router_url, "stamp", sport, ["stamp"])
        # The same upstream as an OpenAI-only node: Ollama's /api/chat to it is translated.
        _register(router_url, "stamp-openai", sport, ["stamp-openai"], runtime_kind="openai")
        p.wait_online(rport, 5)
        r["idle_router_rss_mb"] = round(p.rss_mb(router), 1)
        r["loadavg_start"] = [round(x, 2) for x in os.getloadavg()]

        if "throughput" in s.sections or "latency" in s.sections:
            self._requests(router, rport, replay_port, reply)
        if "streams" in s.sections:
            # Time to first token and per-chunk forwarding delay.
            r["streams"] = {
                "direct": self.streams(sport, "stamp"),
                "router": self.streams(rport, "stamp"),
            }
        if "translated" in s.sections:
            # Ollama's API on an OpenAI-only node (SSE -> NDJSON) against /v1 passed through,
            # the same upstream and router; and the translator's CPU per chunk in-process.
            r["translated"] = {
                "native": self.streams(rport, "stamp"),
                "translated": self.streams(rport, "stamp-openai", path="/api/chat"),
                "chunk_us": translate_chunk_us(),
            }
        if "held" in s.sections:
            r["concurrent_streams"] = [self.hold(rport, router, n, "slow") for n in s.hold_counts]
        if "balancer" in s.sections:
            r["balancer"] = balancer_bench.run(s.balancer_sizes, s.balancer_budget)
        if "relay" in s.sections:
            r["relay"] = relay_bench.run(self, router, rport, sport, replay_port)
        if "affinity" in s.sections:
            scale = AffinitySettings.quick() if s.affinity_quick else AffinitySettings()
            r["affinity"] = affinity_bench.run(p, scale)
            r["affinity"]["pick"] = balancer_bench.run_affinity(s.balancer_budget)
        r["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
        r["targets"] = targets(r)
        return r


def translate_chunk_us(chunks: int = 20000) -> float:
    """µs of CPU per streamed chunk in the Ollama translation (one llama.cpp-shaped SSE chunk in,
    one NDJSON line out), measured in this process."""
    from routercore.translate import ollama_response_translator

    event = (
        b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m",'
        b'"choices":[{"index":0,"delta":{"content":" token"},"logprobs":null,'
        b'"finish_reason":null}]}\n\n'
    )
    translator = ollama_response_translator(
        "api.chat", model="m", streaming=True, started_ns=time.perf_counter_ns()
    )
    t0 = time.process_time()
    for _ in range(chunks):
        translator.feed(event)
    return round((time.process_time() - t0) / chunks * 1e6, 2)


def _register(
    router_url: str, name: str, port: int, models: list[str], runtime_kind: str | None = None
) -> None:
    fields: dict[str, Any] = {"machine_name": name, "runtime_port": port, "models": models}
    if runtime_kind:
        fields["runtime_kind"] = runtime_kind
    body = json.dumps(fields).encode()
    req = urllib.request.Request(
        router_url + "/api/agents/register", data=body, headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        resp.read()


def _fetch_reply(port: int) -> dict[str, Any]:
    """The fake node's exact answer to the benchmark request, for the bare server to replay."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{PATH}",
        data=CHAT_BODY.encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        headers = [
            [k.lower(), v]
            for k, v in resp.headers.items()
            if k.lower() not in ("connection", "date")
        ]
        return {"status": resp.status, "headers": headers, "body": resp.read().decode("latin-1")}


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the issue as measured in this run: value, limit, met."""
    out: list[dict[str, Any]] = []
    if "latency_at_half_max" in r:
        out += _latency_targets(r["latency_at_half_max"])
    if "throughput" in r:
        tp = r["throughput"]
        ratio = tp["router"]["rps"] / tp["bare"]["rps"]
        out.append(
            _target("router max req/s / bare uvloop+h11", round(ratio, 3), ">= 0.6", ratio >= 0.6)
        )
        cpu_ratio = tp["bare"]["cpu_us_per_req"] / tp["router"]["cpu_us_per_req"]
        out.append(
            _target(
                "same from CPU time per request (bare / router)",
                round(cpu_ratio, 3),
                ">= 0.6",
                cpu_ratio >= 0.6,
            )
        )
    if "streams" in r:
        st = r["streams"]
        ttft = st["router"]["ttft_p50_ms"] - st["direct"]["ttft_p50_ms"]
        out.append(
            _target("added time to first token, p50 (ms)", round(ttft, 3), "<= 1", ttft <= 1.0)
        )
    if "translated" in r:
        tr = r["translated"]
        extra = tr["translated"]["ttft_p50_ms"] - tr["native"]["ttft_p50_ms"]
        out.append(
            _target(
                "translated Ollama path: added time to first token over /v1, p50 (ms)",
                round(extra, 3),
                "<= 1",
                extra <= 1.0,
            )
        )
    held = [h for h in r.get("concurrent_streams", []) if h["streams"] >= 2000]
    if held:
        rss = held[-1]["rss_mb"]
        out.append(_target("router RSS with 2,000 streams (MB)", rss, "<= 250", rss <= 250))
    if "affinity" in r:
        out += _affinity_targets(r["affinity"])
    worst = min((b["speedup"] for b in r.get("balancer", []) if b["speedup"]), default=None)
    if worst is not None:
        out.append(
            _target("Cython pick speed-up over the twin (worst size)", worst, ">= 10", worst >= 10)
        )
    return out


def _affinity_targets(aff: dict[str, Any]) -> list[dict[str, Any]]:
    ratio = aff["follow_up_ratio"]
    out = [
        _target(
            "mean follow-up TTFT with affinity / without (2 llama.cpp nodes)",
            ratio,
            "<= 0.2",
            ratio <= 0.2,
        )
    ]
    compiled = aff["pick"]["cython"]
    if compiled is not None:
        worst = max(compiled["hit_ns"], compiled["new_ns"])
        out.append(
            _target("affinity pick, 1,000 indexed prefixes, compiled (µs)",
                    round(worst / 1000, 3), "<= 5", worst <= 5000)
        )  # fmt: skip
    return out


def _target(name: str, value: float, limit: str, met: bool) -> dict[str, Any]:
    return {"target": name, "value": value, "limit": limit, "met": met}


def _latency_targets(lat: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    add50 = lat["router"]["p50_ms"] - lat["direct"]["p50_ms"]
    add99 = lat["router"]["p99_ms"] - lat["direct"]["p99_ms"]
    out.append(
        {
            "target": "added p50 latency at half max (ms)",
            "value": round(add50, 3),
            "limit": "<= 0.3",
            "met": add50 <= 0.3,
        }
    )
    out.append(
        {
            "target": "added p99 latency at half max (ms)",
            "value": round(add99, 3),
            "limit": "<= 2",
            "met": add99 <= 2.0,
        }
    )
    return out


def run(settings: Settings, keep: Path | None = None) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="llm-router-bench-")) if keep is None else keep
    work.mkdir(parents=True, exist_ok=True)
    try:
        with running(work, sut_cores=settings.sut_cores, load_cores=settings.load_cores) as procs:
            return Bench(procs, settings, work).run()
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)
