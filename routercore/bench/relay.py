"""The `relay` section: what the agent's relay (agent/relay.py) adds as an extra hop.

The same upstreams are registered twice with the router: once directly, once behind a relay
process (`python -m agent.relay`, on the node side's core). Measured through the router, one
path right after the other:
- streams from the stamping upstream, one at a time: time to first token and per-chunk delay;
- non-streamed requests at max rate (wrk) to the replay node: req/s, and the relay's CPU time
  per request (the node's cost of the hop; it does not depend on what else the machine runs).
"""

from __future__ import annotations

import secrets
import sys
from typing import Any

from routercore.bench.measure import Measure
from routercore.bench.nodes import register
from routercore.bench.procs import Proc, free_port, port_open, wait_until

RELAY_REPLAY_BODY = '{"model":"replay-relay","messages":[{"role":"user","content":"hi"}]}'


def _relay(bench: Measure, name: str, runtime_port: int, token: str) -> tuple[Proc, int]:
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "agent.relay",
        "--port",
        str(port),
        "--runtime-url",
        f"http://127.0.0.1:{runtime_port}",
        "--token",
        token,
    ]
    proc = bench.p.start(name, cmd, bench.s.load_cores)  # the relay runs on the node
    wait_until(lambda: proc.alive() and port_open(port), 30, name)
    return proc, port


def run(
    bench: Measure, router: Proc, rport: int, stamp_port: int, replay_port: int
) -> dict[str, Any]:
    token = "rly_" + secrets.token_urlsafe(32)
    stamp_relay, stamp_relay_port = _relay(bench, "relay-stamp", stamp_port, token)
    replay_relay, replay_relay_port = _relay(bench, "relay-replay", replay_port, token)
    for name, port, relay_port in (
        ("stamp-relay", stamp_port, stamp_relay_port),
        ("replay-relay", replay_port, replay_relay_port),
    ):
        register(rport, name, port, [name], relay_port=relay_port, relay_token=token)
    bench.p.wait_online(rport, 6)

    streams = {"router": bench.streams(rport, "stamp")}
    cpu0 = bench.p.cpu_times(stamp_relay)
    streams["router_relay"] = bench.streams(rport, "stamp-relay")
    relay_cpu = bench.p.cpu_times(stamp_relay) - cpu0
    count = max(1, streams["router_relay"]["streams"])
    chunks = max(1, streams["router_relay"]["chunks"])

    throughput: dict[str, Any] = {}
    for _ in range(bench.s.rounds):  # interleaved: a burst from elsewhere hits both alike
        for key, sut, body in (
            ("router", router, None),
            ("router_relay", replay_relay, RELAY_REPLAY_BODY),
        ):
            row = bench.wrk(rport, sut, body=body) if body else bench.wrk(rport, sut)
            if key not in throughput or row["rps"] > throughput[key]["rps"]:
                throughput[key] = row
    bench.p.stop(stamp_relay)
    bench.p.stop(replay_relay)
    st = streams
    return {
        "streams": st,
        "added_ttft_p50_ms": round(
            st["router_relay"]["ttft_p50_ms"] - st["router"]["ttft_p50_ms"], 3
        ),
        "added_ttft_p99_ms": round(
            st["router_relay"]["ttft_p99_ms"] - st["router"]["ttft_p99_ms"], 3
        ),
        "added_chunk_p50_ms": round(
            st["router_relay"]["chunk_p50_ms"] - st["router"]["chunk_p50_ms"], 3
        ),
        "relay_cpu_us_per_stream": round(relay_cpu * 1e6 / count, 1),
        "relay_cpu_us_per_chunk": round(relay_cpu * 1e6 / chunks, 1),
        "throughput": throughput,
    }
