"""What one benchmark run measures and how hard: the section names, the request bodies, Settings.

Its own module so that the measuring code (measure.py), each section and the runner read the
same values without importing one another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
    "many",
    "balancer",
    "relay",
    "affinity",
)


@dataclass(frozen=True)
class Settings:
    """How long and how hard each section runs (`quick` is the smoke-able variant)."""

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
    # The `many` section: this many streams at once through one fresh router, each
    # `many_chunks` events, `many_delay` s apart once all of them are open.
    many_streams: int = 10000
    many_chunks: int = 10
    many_delay: float = 0.2
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
            many_streams=600,
            many_chunks=5,
            many_delay=0.2,
            balancer_budget=0.1,
            affinity_quick=True,
            **kw,
        )
