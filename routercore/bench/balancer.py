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
from routercore.prefix import PromptPrefix, chat_prefix


def _filled(implementation: str, nodes: int, algorithm: str, **affinity: Any) -> Any:
    rng = random.Random(nodes)
    bal = make_balancer(algorithm, implementation, **affinity)
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
    return _time(lambda: pick("bench"), budget)


def _conversation(number: int, turns: int) -> list[PromptPrefix]:
    """The prompts of a chat's turns: system prompt, then user/assistant pairs."""
    messages = [{"role": "system", "content": "You are a helpful assistant."}]
    out = []
    for turn in range(turns):
        messages.append({"role": "user", "content": f"conversation {number}: question {turn}"})
        prefix = chat_prefix("bench", messages)
        assert prefix is not None
        out.append(prefix)
        messages.append({"role": "assistant", "content": f"answer {turn}"})
    return out


def affinity_pick_ns(
    implementation: str, *, indexed: int = 1000, nodes: int = 16, budget: float = 0.3
) -> dict[str, float]:
    """`pick_affine` with `indexed` prefixes in the index (its capacity, so it stays full), in
    ns: a follow-up whose previous turn is indexed (a hit, 8 boundaries) and a new
    conversation (rendezvous; its boundary evicts the oldest entry)."""
    bal = _filled(implementation, nodes, LEAST_LOADED, prefix_entries=indexed)
    turns = 4  # boundaries per conversation's 4th turn: 1 + 2 * 3 = 7 (system excluded)
    conversation = 0
    while len(bal.prefix_index) < indexed:
        for prompt in _conversation(conversation, turns - 1):
            bal.pick_affine("bench", prompt.hashes, prompt.anchor)
        conversation += 1
    follow_up = _conversation(conversation - 1, turns)[-1]
    fresh = [_conversation(10**6 + i, 1)[0] for i in range(1024)]
    pick = bal.pick_affine
    assert pick("bench", follow_up.hashes, follow_up.anchor)[1] is True
    hit = _time(lambda: pick("bench", follow_up.hashes, follow_up.anchor), budget)
    cursor = iter(range(1 << 62))

    def new_conversation() -> None:
        prompt = fresh[next(cursor) & 1023]
        pick("bench", prompt.hashes, prompt.anchor)

    miss = _time(new_conversation, budget)
    assert len(bal.prefix_index) == indexed
    return {"hit_ns": round(hit, 1), "new_ns": round(miss, 1)}


def _time(call: Any, budget: float) -> float:
    """Best-of-5 mean time of one call in ns, each round running about budget/5 seconds."""
    n = 1
    while True:
        t = time.perf_counter()
        for _ in range(n):
            call()
        took = time.perf_counter() - t
        if took > budget / 25:
            break
        n *= 4
    loops = max(1, int(n * (budget / 5) / took))
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(loops):
            call()
        best = min(best, (time.perf_counter() - t) / loops)
    return best * 1e9


def prefix_hash_us(budget: float = 0.3) -> float:
    """Hashing one ~1,300-token, 7-message chat at its boundaries (routercore.prefix), in µs."""
    words = ("lorem ipsum dolor sit amet consectetur adipiscing elit " * 120).strip()
    messages = [{"role": "system", "content": "You are a helpful assistant."}]
    messages.append({"role": "user", "content": words})
    for turn in range(3):
        messages.append({"role": "assistant", "content": f"answer {turn} " * 10})
        messages.append({"role": "user", "content": f"follow-up question {turn}"})
    return _time(lambda: chat_prefix("bench", messages), budget) / 1000.0


def run_affinity(budget: float = 0.3) -> dict[str, Any]:
    twin = affinity_pick_ns("python", budget=budget)
    compiled = affinity_pick_ns("cython", budget=budget) if COMPILED_AVAILABLE else None
    return {
        "indexed": 1000,
        "python": twin,
        "cython": compiled,
        "prefix_hash_us": round(prefix_hash_us(budget), 2),
    }


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
    print(json.dumps({"pick": run(), "affinity_pick": run_affinity()}, indent=2))
