"""The request sections: max req/s (wrk) of the router and its baselines, and their latency.

Every target answers the same non-streamed chat completion: the fake node's recorded reply,
replayed by a node cheap enough that it never limits the router from the load core (bare.py
--replay). The targets, each alone on the core under test while measured:
- the router in the default configuration (on-disk SQLite, access log on) and tuned (in-memory
  SQLite, access log off), both proxying to the replay node;
- nginx `proxy_pass` with a keep-alive upstream to the same node, and its static `return 200`
  (what wrk itself can drive);
- a bare uvloop+h11 server that only answers (bare.py --reply), the ceiling of one Python process.
The ratios of the routers to the bare server and to nginx come from this one run, the same core.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from routercore.bench.measure import Measure
from routercore.bench.procs import Proc, free_port
from routercore.bench.settings import PATH

ROUTERS = ("router_default", "router_default_nolog", "router")
# Measured for max throughput only: the access log's cost is a throughput figure.
_THROUGHPUT_ONLY = ("router_default_nolog",)


def run(
    m: Measure, routers: dict[str, tuple[Proc, int]], node_port: int, reply: Path
) -> dict[str, Any]:
    """`routers`: name -> (process, port) for the names in ROUTERS."""
    s, p = m.s, m.p
    bport = free_port()
    bare = p.bare(bport, reply)
    nginx = None
    ngport = wport = 0
    if s.nginx and shutil.which("wrk"):
        ngport, wport = free_port(), free_port()
        nginx = p.nginx(ngport, node_port, static_port=wport)

    # Closed loop; rounds interleave the targets and the best one counts, so a burst of load
    # from elsewhere on the machine hits every target alike.
    targets: list[tuple[str, int, Proc | None, str]] = [("direct", node_port, None, PATH)]
    targets += [(name, port, proc, PATH) for name, (proc, port) in routers.items()]
    if nginx is not None:
        targets += [("nginx", ngport, nginx, PATH), ("wrk_ceiling", wport, nginx, "/")]
    targets.append(("bare", bport, bare, PATH))
    tp = _best_of(m, targets, key=lambda row: row["rps"])
    out: dict[str, Any] = {"throughput": tp, "ratios": ratios(tp)}
    if "latency" in s.sections:
        # One connection, one request after another: what the proxy adds to a request that
        # waits for nothing, against nginx proxying to the same node.
        one = [t for t in targets if t[0] not in ("wrk_ceiling", "bare", *_THROUGHPUT_ONLY)]
        out["latency_c1"] = _lowest_latency(m, one)
        # Open loop at half of the tuned router's max rate (paced clients, Poisson arrivals).
        rate = tp["router"]["rps"] / 2
        lat = {"direct": m.paced(node_port, rate)}
        lat.update(
            {
                name: m.paced(port, rate)
                for name, (_proc, port) in routers.items()
                if name not in _THROUGHPUT_ONLY
            }
        )
        if nginx is not None:
            lat["nginx"] = m.paced(ngport, rate)
        lat["bare"] = m.paced(bport, rate)
        out["latency_at_half_max"] = lat
    p.stop(bare)
    if nginx is not None:
        p.stop(nginx)
    return out


def _best_of(
    m: Measure,
    targets: list[tuple[str, int, Proc | None, str]],
    key: Any,
    connections: int | None = None,
) -> dict[str, Any]:
    best: dict[str, Any] = {}
    for _ in range(m.s.rounds):
        for name, port, sut, path in targets:
            row = m.wrk(port, sut, path=path, connections=connections)
            if name not in best or key(row) > key(best[name]):
                best[name] = row
    return best


def _lowest_latency(m: Measure, targets: list[tuple[str, int, Proc | None, str]]) -> dict[str, Any]:
    """wrk -c1 rounds, interleaved; per target the lowest p50 and, on its own, the lowest p99
    of the rounds: on a shared machine a round's p99 is mostly a stall of the scheduler, and
    the quietest round of each target is the one that says what the proxy adds."""
    rounds = [
        {name: m.wrk(port, sut, path=path, connections=1) for name, port, sut, path in targets}
        for _ in range(m.s.rounds)
    ]
    best: dict[str, Any] = {}
    for name, *_ in targets:
        rows = [r[name] for r in rounds]
        best[name] = {
            **max(rows, key=lambda row: row["rps"]),
            "p50_ms": min(row["p50_ms"] for row in rows),
            "p99_ms": min(row["p99_ms"] for row in rows),
        }
    return best


def ratios(tp: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Each router's req/s over the bare server's and over nginx's (None without nginx)."""
    out: dict[str, dict[str, float | None]] = {}
    for name in ROUTERS:
        if name in tp:
            rps = tp[name]["rps"]
            out[name] = {
                "bare": round(rps / tp["bare"]["rps"], 3),
                "nginx": round(rps / tp["nginx"]["rps"], 3) if "nginx" in tp else None,
            }
    return out
