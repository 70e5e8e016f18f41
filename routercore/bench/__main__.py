"""Command line of the benchmark: run everything once, print a table, write JSON."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from routercore.bench.runner import SECTIONS, Settings, run


def _f(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def render(r: dict[str, Any]) -> str:
    """The Markdown tables of one run."""
    m = r["machine"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, Linux {m['kernel']}, "
        f"Python {m['python']}, uvloop {m['uvloop']}, h11 {m['h11']}",
        f"Pinning: system under test on core(s) {r['settings']['sut_cores']}, load generator "
        f"and fake node on core(s) {r['settings']['load_cores']}; load average at start "
        f"{r['loadavg_start']}, at end {r['loadavg_end']}",
        "",
        "Non-streamed chat completions (wrk, 1 thread, "
        f"{r['settings']['wrk_connections']} connections, closed loop, best of "
        f"{r['settings']['rounds']} interleaved rounds):",
        "",
        "| target | max req/s | p50 ms | p99 ms | errors | its CPU % | CPU µs/req |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    names = {
        "direct": "fake node, direct",
        "router": "through the router",
        "nginx": "through nginx (keepalive upstream)",
        "bare": "bare uvloop+h11 server (same reply)",
        "wrk_ceiling": "wrk ceiling (nginx `return 200`)",
    }
    for key, row in r.get("throughput", {}).items():
        lines.append(
            f"| {names.get(key, key)} | {row['rps']} | {_f(row['p50_ms'])} | "
            f"{_f(row['p99_ms'])} | {row['errors']} | {_f(row['sut_cpu_pct'], 0)} | "
            f"{_f(row['cpu_us_per_req'], 1)} |"
        )
    lat = r.get("latency_at_half_max", {})
    rate = lat["router"]["rate"] if lat else "-"
    lines += [
        "",
        f"Latency at half the router's max ({rate} req/s, open loop, "
        f"{r['settings']['paced_processes']} paced asyncio client processes):",
        "",
        "| target | achieved req/s | p50 ms | p99 ms | errors |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for key, row in lat.items():
        lines.append(
            f"| {names.get(key, key)} | {row['achieved_rps']} | {_f(row['p50_ms'], 3)} | "
            f"{_f(row['p99_ms'], 3)} | {row['errors']} |"
        )
    st = r.get("streams", {})
    lines += [
        "",
        "Streams (SSE, stamping upstream, one at a time; chunk delay = arrival - send stamp):",
        "",
        "| path | streams | TTFT p50 ms | TTFT p99 ms | chunk delay p50 ms | p99 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, row in st.items():
        lines.append(
            f"| {names.get(key, key)} | {row['streams']} | {_f(row['ttft_p50_ms'], 3)} | "
            f"{_f(row['ttft_p99_ms'], 3)} | {_f(row['chunk_p50_ms'], 3)} | "
            f"{_f(row['chunk_p99_ms'], 3)} |"
        )
    lines += [
        "",
        f"Concurrent streams held through the router (1 chunk/s each; idle RSS "
        f"{r['idle_router_rss_mb']} MB):",
        "",
        "| streams | router RSS MB | router CPU % |",
        "| ---: | ---: | ---: |",
    ]
    for row in r.get("concurrent_streams", []):
        lines.append(f"| {row['streams']} | {_f(row['rss_mb'], 1)} | {_f(row['cpu_pct'], 1)} |")
    lines += [
        "",
        "Balancer pick (least_loaded, every node eligible):",
        "",
        "| nodes | twin ns | Cython ns | speed-up |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for row in r.get("balancer", []):
        lines.append(
            f"| {row['nodes']} | {_f(row['python_ns'], 0)} | {_f(row['cython_ns'], 0)} | "
            f"{_f(row['speedup'], 1)}x |"
        )
    lines += [
        "",
        "Targets:",
        "",
        "| target | measured | limit | met |",
        "| --- | ---: | --- | --- |",
    ]
    for t in r["targets"]:
        lines.append(
            f"| {t['target']} | {t['value']} | {t['limit']} | {'yes' if t['met'] else 'NO'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m routercore.bench",
        description="Start fake nodes, the router and the baselines; measure; print a table.",
    )
    parser.add_argument("--quick", action="store_true", help="short runs (~30 s), for smoke tests")
    parser.add_argument(
        "--json",
        type=Path,
        default=Path("bench-results.json"),
        help="where to write the results (default: %(default)s)",
    )
    parser.add_argument("--no-nginx", action="store_true", help="skip the nginx baseline")
    parser.add_argument("--sut-cores", default="0", help="taskset cores for the server under test")
    parser.add_argument(
        "--load-cores", default="1", help="taskset cores for the load generator and fake nodes"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help="comma list of sections to run (default: all of %(default)s)",
    )
    parser.add_argument("--keep", type=Path, help="keep logs and configs in this directory")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("the benchmark needs wrk (apt-get install wrk)", file=sys.stderr)
        return 2
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2
    kw: dict[str, Any] = {
        "nginx": not args.no_nginx,
        "sut_cores": args.sut_cores if pin else None,
        "load_cores": args.load_cores if pin else None,
        "sections": tuple(x for x in args.only.split(",") if x),
    }
    unknown = set(kw["sections"]) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {sorted(unknown)}; valid: {','.join(SECTIONS)}")
    settings = Settings.quick(**kw) if args.quick else Settings(**kw)
    results = run(settings, keep=args.keep)
    args.json.write_text(json.dumps(results, indent=2))
    print(render(results))
    print(f"\n(results written to {args.json})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
