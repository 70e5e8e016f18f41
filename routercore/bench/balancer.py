"""Balancer pick time, compiled (Cython) vs the pure-Python twin, at several node counts.

Every node serves the model and is available, so `least_loaded` scans all of them: the worst
case for one pick. Run alone: `python -m routercore.bench.balancer`.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

from routercore.balancer import COMPILED_AVAILABLE, LEAST_LOADED, make_balancer


def _filled(implementation: str, nodes: int, algorithm: str) -> Any:
    rng = random.Random(nodes)
    bal = make_balancer(algorithm, implementation)
    for i in range(nodes):
        bal.set_node(
            f"node-{i:05d}",
            models=["bench", f"other-{i % 7}"],
            available=True,
            max_concurrency=None,
            cpu=rng.uniform(0, 100),
            memory=rng.uniform(0, 100),
            gpu=None,
            gpu_memory=None,
        )
    return bal


def pick_ns(
    implementation: str, nodes: int, *, algorithm: str = LEAST_LOADED, budget: float = 0.3
) -> float:
    """Best-of-5 mean time of one `pick` in ns, each round running about budget/5 seconds."""
    bal = _filled(implementation, nodes, algorithm)
    pick = bal.pick
    n = 1
    while True:  # calibrate a loop count that takes ~budget/5
        t = time.perf_counter()
        for _ in range(n):
            pick("bench")
        took = time.perf_counter() - t
        if took > budget / 25:
            break
        n *= 4
    loops = max(1, int(n * (budget / 5) / took))
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(loops):
            pick("bench")
        best = min(best, (time.perf_counter() - t) / loops)
    return best * 1e9


def run(sizes: tuple[int, ...] = (16, 256, 1000), budget: float = 0.3) -> list[dict[str, Any]]:
    rows = []
    for size in sizes:
        twin = pick_ns("python", size, budget=budget)
        compiled = pick_ns("cython", size, budget=budget) if COMPILED_AVAILABLE else None
        rows.append(
            {
                "nodes": size,
                "python_ns": round(twin, 1),
                "cython_ns": round(compiled, 1) if compiled is not None else None,
                "speedup": round(twin / compiled, 1) if compiled else None,
            }
        )
    return rows


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
