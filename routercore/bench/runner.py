"""One benchmark run: start the router and the nodes, run each section, evaluate the targets.

The sections live in their own modules (throughput.py, many.py, relay.py, affinity.py,
balancer.py) and measure with the tools in measure.py; this module only starts what they share
and puts their results together.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from routercore.bench import affinity as affinity_bench
from routercore.bench import balancer as balancer_bench
from routercore.bench import many as many_bench
from routercore.bench import relay as relay_bench
from routercore.bench import throughput as throughput_bench
from routercore.bench.affinity import AffinitySettings
from routercore.bench.measure import Measure
from routercore.bench.nodes import fetch_reply, register
from routercore.bench.procs import Proc, free_port, running
from routercore.bench.settings import SECTIONS, Settings
from routercore.bench.targets import targets

__all__ = ["SECTIONS", "Settings", "run"]

# The benchmark's nodes (bare.py) send no heartbeats: the routers must not time them out.
_NO_HEARTBEAT_TIMEOUT = {"LLM_ROUTER_HEARTBEAT_TIMEOUT": "86400"}


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


class Bench:
    """Starts what the sections share, runs them, and holds the results of one run."""

    def __init__(self, m: Measure) -> None:
        self.m = m
        self.results: dict[str, Any] = {"machine": machine(), "settings": m.s.__dict__}

    def _stamp_node(self, port: int) -> Proc:
        s = self.m.s
        cmd = [sys.executable, "-m", "routercore.bench.bare", "--port", str(port)]
        cmd += ["--stamp-chunks", str(s.stream_chunks), "--stamp-delay", str(s.stream_delay)]
        return self.m.p.start("stamp", cmd, s.load_cores)

    def run(self) -> dict[str, Any]:
        m, s, p, r = self.m, self.m.s, self.m.p, self.results
        many_bench.raise_fd_limit()  # thousands of sockets in the routers and clients
        rport, nport, sport, hport = free_port(), free_port(), free_port(), free_port()
        router = p.router(rport, extra_env=_NO_HEARTBEAT_TIMEOUT)
        p.fakenode(nport, register=f"http://127.0.0.1:{rport}")
        reply = m.work / "reply.json"
        reply.write_text(json.dumps(fetch_reply(nport)))
        replay_port = free_port()
        p.bare(replay_port, reply, replay=True)
        register(rport, "replay", replay_port, ["replay"])
        p.fakenode(
            hport,
            register=f"http://127.0.0.1:{rport}",
            tokens=100000,
            token_delay=1.0,
            name="slow",
            models="slow",
        )
        self._stamp_node(sport)
        register(rport, "stamp", sport, ["stamp"])
        # The same upstream as an OpenAI-only node: Ollama's /api/chat to it is translated.
        register(rport, "stamp-openai", sport, ["stamp-openai"], runtime_kind="openai")
        p.wait_online(rport, 5)
        r["idle_router_rss_mb"] = round(p.rss_mb(router), 1)
        r["loadavg_start"] = [round(x, 2) for x in os.getloadavg()]

        if "throughput" in s.sections or "latency" in s.sections:
            dport = free_port()
            default = p.router(
                dport, tuned=False, name="router-default", extra_env=_NO_HEARTBEAT_TIMEOUT
            )
            register(dport, "replay", replay_port, ["replay"])
            # The default configuration with only the access log off: what the log costs.
            lport = free_port()
            nolog = p.router(
                lport,
                tuned=False,
                access_log=False,
                name="router-default-nolog",
                extra_env=_NO_HEARTBEAT_TIMEOUT,
            )
            register(lport, "replay", replay_port, ["replay"])
            p.wait_online(dport, 1)
            p.wait_online(lport, 1)
            routers = {
                "router_default": (default, dport),
                "router_default_nolog": (nolog, lport),
                "router": (router, rport),
            }
            r.update(throughput_bench.run(m, routers, replay_port, reply))
            p.stop(default)
            p.stop(nolog)
        if "streams" in s.sections:
            # Time to first token and per-chunk forwarding delay.
            r["streams"] = {
                "direct": m.streams(sport, "stamp"),
                "router": m.streams(rport, "stamp"),
            }
            if s.nginx and shutil.which("wrk"):
                # The same stream through nginx (no buffering): what one more hop costs on
                # this machine (two more wake-ups across cores), apart from the router's work.
                ngport = free_port()
                nginx = p.nginx(ngport, sport)
                if nginx is not None:
                    r["streams"]["nginx"] = m.streams(ngport, "stamp")
                    p.stop(nginx)
        if "translated" in s.sections:
            # Ollama's API on an OpenAI-only node (SSE -> NDJSON) against /v1 passed through,
            # the same upstream and router; and the translator's CPU per chunk in-process.
            r["translated"] = {
                "native": m.streams(rport, "stamp"),
                "translated": m.streams(rport, "stamp-openai", path="/api/chat"),
                "chunk_us": translate_chunk_us(),
            }
        if "held" in s.sections:
            r["concurrent_streams"] = [m.hold(rport, router, n, "slow") for n in s.hold_counts]
        if "balancer" in s.sections:
            r["balancer"] = balancer_bench.run(s.balancer_sizes, s.balancer_budget)
        if "relay" in s.sections:
            r["relay"] = relay_bench.run(m, router, rport, sport, replay_port)
        if "many" in s.sections:
            r["many_streams"] = many_bench.run(m)
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


def run(settings: Settings, keep: Path | None = None) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="llm-router-bench-")) if keep is None else keep
    work.mkdir(parents=True, exist_ok=True)
    try:
        with running(work, sut_cores=settings.sut_cores, load_cores=settings.load_cores) as procs:
            return Bench(Measure(procs, settings, work)).run()
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)
