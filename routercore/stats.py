"""Live request statistics kept in memory: counters, latency histograms, per-second series.

Cheap to update on the hot path (a few dict increments); the dashboard and /metrics read them.
"""

from __future__ import annotations

import bisect
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

# Histogram buckets in seconds (Prometheus style upper bounds).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
SERIES_SECONDS = 3600
# The `model` label of requests naming a model no registered node lists, and the longest label.
OTHER_MODEL = "other"
METRIC_LABEL_MAX = 128


class Histogram:
    __slots__ = ("count", "counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.sum += seconds
        self.count += 1


@dataclass
class SecondBucket:
    second: int
    requests: int = 0
    errors: int = 0
    tokens: int = 0
    latency_ms_sum: float = 0.0
    by_node: Counter[str] = field(default_factory=Counter)
    # Per-node latency sums and errors, so the dashboard can chart each node's latency.
    latency_ms_by_node: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    errors_by_node: Counter[str] = field(default_factory=Counter)


class LiveStats:
    """Everything the router counts about proxied requests since start."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.started = clock()
        # (endpoint, model, node, status) -> count
        self.requests: Counter[tuple[str, str, str, str]] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.latency: dict[tuple[str, str], Histogram] = {}  # endpoint, model
        self.ttfb: dict[tuple[str, str], Histogram] = {}
        self.tokens: Counter[tuple[str, str]] = Counter()  # model, kind
        self.series: deque[SecondBucket] = deque(maxlen=SERIES_SECONDS)
        self.recent_latencies: deque[float] = deque(maxlen=2000)
        self.in_flight = 0
        self.queued = 0
        self.unknown_model_requests = 0  # counted under the OTHER_MODEL label

    def record(
        self,
        endpoint: str,
        model: str,
        node: str,
        status_code: int,
        outcome: str,
        duration_ms: float,
        ttfb_ms: float | None = None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
    ) -> None:
        """Count one finished proxied request: `model` is its metric label, `node` "" when no
        node answered, `outcome` ok | error | cancelled | rejected. Plain arguments rather
        than a record object: this runs once per request, and building one cost a quarter as
        much as the counting."""
        self.requests[(endpoint, model, node, str(status_code))] += 1
        self.outcomes[outcome] += 1
        key = (endpoint, model)
        hist = self.latency.get(key)
        if hist is None:
            hist = self.latency[key] = Histogram()
        hist.observe(duration_ms / 1000.0)
        if ttfb_ms is not None:
            th = self.ttfb.get(key)
            if th is None:
                th = self.ttfb[key] = Histogram()
            th.observe(ttfb_ms / 1000.0)
        if prompt_tokens:
            self.tokens[(model, "prompt")] += prompt_tokens
        if completion_tokens:
            self.tokens[(model, "completion")] += completion_tokens
        ok = outcome == "ok"
        if ok:
            self.recent_latencies.append(duration_ms)
        bucket = self._bucket()
        bucket.requests += 1
        failed = outcome == "error" or outcome == "rejected"
        bucket.errors += failed
        if completion_tokens:
            bucket.tokens += completion_tokens
        bucket.latency_ms_sum += duration_ms
        if node:
            bucket.by_node[node] += 1
            bucket.latency_ms_by_node[node] += duration_ms
            if failed:
                bucket.errors_by_node[node] += 1

    def _bucket(self) -> SecondBucket:
        now = int(self.clock())
        if not self.series or self.series[-1].second != now:
            self.series.append(SecondBucket(now))
        return self.series[-1]

    def total(self) -> int:
        return sum(self.outcomes.values())

    def window(self, seconds: int) -> tuple[int, int, int]:
        """(requests, errors, completion tokens) over the last `seconds` whole seconds."""
        cutoff = int(self.clock()) - seconds
        req = err = tok = 0
        for b in reversed(self.series):
            if b.second <= cutoff:
                break
            req += b.requests
            err += b.errors
            tok += b.tokens
        return req, err, tok

    def recent(self, seconds: int) -> list[SecondBucket]:
        """The buckets of the last `seconds` whole seconds, oldest first (seconds without
        requests have no bucket)."""
        cutoff = int(self.clock()) - seconds
        out: list[SecondBucket] = []
        for b in reversed(self.series):
            if b.second <= cutoff:
                break
            out.append(b)
        out.reverse()
        return out

    def percentile(self, q: float) -> float | None:
        if not self.recent_latencies:
            return None
        data = sorted(self.recent_latencies)
        return round(data[min(len(data) - 1, int(q * len(data)))], 2)
