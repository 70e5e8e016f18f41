"""Pick time of the compiled balancer vs the twin: `python -m routercore.bench_balancer [--json]`.

Every node serves the benchmarked model and has no concurrency limit, so least_loaded and latency
scan the whole candidate list on each pick; round_robin stops at the first node with room, so it
mostly measures call overhead. Speed lives here, never in the tests.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from routercore.balancer import ALGORITHMS, COMPILED_AVAILABLE, COMPILED_UNAVAILABLE_REASON
from routercore.balancer import make_balancer as _make_balancer

SIZES = (16, 256, 1000)
MODEL = "llama3"


def build(implementation: str, algorithm: str, nodes: int) -> Any:
    """A table of `nodes` nodes serving MODEL, with deterministic, mostly distinct loads."""
    bal = _make_balancer(algorithm, implementation)
    for i in range(nodes):
        bal.set_node(
            f"node-{i:04d}",
            models=[MODEL, f"other-{i % 7}"],
            available=True,
            max_concurrency=None,
            cpu=float((i * 37) % 100),
            memory=float((i * 53) % 100),
            gpu=None if i % 3 else float((i * 11) % 100),
            gpu_memory=None,
        )
        if algorithm == "latency":
            bal.request_finished(f"node-{i:04d}", 50.0 + (i * 29) % 400)
    return bal


def ns_per_pick(bal: Any, min_seconds: float, repeats: int) -> float:
    """Best of `repeats` timed runs, each long enough to swamp timer resolution."""
    pick = bal.pick
    batch = 1000
    # Size the batch count once so each run lasts about min_seconds.
    start = time.perf_counter_ns()
    for _ in range(batch):
        pick(MODEL)
    elapsed = max(time.perf_counter_ns() - start, 1)
    loops = max(1, int(min_seconds * 1e9 / elapsed))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter_ns()
        for _ in range(loops):
            for _ in range(batch):
                pick(MODEL)
        best = min(best, (time.perf_counter_ns() - start) / (loops * batch))
    return best


def run(
    sizes: Sequence[int], algorithms: Sequence[str], min_seconds: float, repeats: int
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    implementations = ["cython", "python"] if COMPILED_AVAILABLE else ["python"]
    for algorithm in algorithms:
        for nodes in sizes:
            row: dict[str, Any] = {"algorithm": algorithm, "nodes": nodes}
            for implementation in implementations:
                bal = build(implementation, algorithm, nodes)
                row[f"{implementation}_ns_per_pick"] = round(
                    ns_per_pick(bal, min_seconds, repeats), 1
                )
            if COMPILED_AVAILABLE:
                row["speedup"] = round(row["python_ns_per_pick"] / row["cython_ns_per_pick"], 1)
            rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), metavar="N")
    parser.add_argument("--algorithm", choices=ALGORITHMS, action="append", dest="algorithms")
    parser.add_argument("--min-seconds", type=float, default=0.2, help="per timed run")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs; the best counts")
    args = parser.parse_args(argv)
    algorithms = args.algorithms or list(ALGORITHMS)
    rows = run(args.sizes, algorithms, args.min_seconds, args.repeats)
    if args.json:
        doc = {
            "compiled_available": COMPILED_AVAILABLE,
            "compiled_unavailable_reason": COMPILED_UNAVAILABLE_REASON,
            "python": sys.version.split()[0],
            "results": rows,
        }
        print(json.dumps(doc, indent=2))
        return 0
    if not COMPILED_AVAILABLE:
        print(f"compiled balancer unavailable ({COMPILED_UNAVAILABLE_REASON}); twin only")
    print(
        f"{'algorithm':<13} {'nodes':>6} {'cython ns/pick':>15} {'python ns/pick':>15} {'ratio':>7}"
    )
    for row in rows:
        cython = row.get("cython_ns_per_pick")
        speedup = row.get("speedup")
        print(
            f"{row['algorithm']:<13} {row['nodes']:>6} "
            f"{'-' if cython is None else f'{cython:.1f}':>15} "
            f"{row['python_ns_per_pick']:>15.1f} "
            f"{'-' if speedup is None else f'{speedup:.1f}x':>7}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
