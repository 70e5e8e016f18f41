"""Pure-Python twin of the compiled balancer (ext/balancer.pyx); same API, same picks.

It also owns the scoring helpers both implementations call (load score, EWMA, argument
checks), so the floating-point maths exists once and the two cannot drift apart.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable

ROUND_ROBIN = "round_robin"
LEAST_LOADED = "least_loaded"
LATENCY = "latency"
ALGORITHMS = (ROUND_ROBIN, LEAST_LOADED, LATENCY)

EWMA_ALPHA = 0.3
# Heartbeat load weights; missing figures drop out and the rest are renormalised.
CPU_WEIGHT = 0.4
MEMORY_WEIGHT = 0.3
GPU_WEIGHT = 0.3


def check_algorithm(algorithm: str) -> str:
    """Return `algorithm` if known, else raise ValueError naming the valid choices."""
    if algorithm not in ALGORITHMS:
        raise ValueError(
            f"unknown balancer algorithm {algorithm!r}; valid choices: {', '.join(ALGORITHMS)}"
        )
    return algorithm


def _finite(value: float | None) -> float | None:
    """Agents report garbage sometimes; NaN/inf would poison comparisons, so treat as unknown."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def load_score(
    cpu: float | None, memory: float | None, gpu: float | None, gpu_memory: float | None
) -> float:
    """Weighted heartbeat load; GPU memory stands in for GPU utilisation when that is unknown."""
    gpu_term = _finite(gpu)
    if gpu_term is None:
        gpu_term = _finite(gpu_memory)
    total = 0.0
    weight = 0.0
    for w, value in (
        (CPU_WEIGHT, _finite(cpu)),
        (MEMORY_WEIGHT, _finite(memory)),
        (GPU_WEIGHT, gpu_term),
    ):
        if value is not None:
            total += w * value
            weight += w
    return total / weight if weight else 0.0


def ewma_update(current: float, has_sample: bool, sample_ms: float) -> float:
    """Next EWMA of time to first byte; the first sample is taken as is."""
    if not has_sample:
        return sample_ms
    return EWMA_ALPHA * sample_ms + (1.0 - EWMA_ALPHA) * current


def valid_ttfb(ttfb_ms: float | None) -> float | None:
    """A usable TTFB sample, or None (missing, negative or non-finite samples are ignored)."""
    value = _finite(ttfb_ms)
    return value if value is not None and value >= 0.0 else None


def normalise_models(models: Iterable[str]) -> tuple[str, ...]:
    """Deduplicate in given order; a bare str is refused (it would iterate as characters)."""
    if isinstance(models, str):
        raise TypeError("models must be an iterable of model names, not a str")
    return tuple(dict.fromkeys(models))


def normalise_max_concurrency(max_concurrency: int | None) -> int:
    """None or 0 means unlimited (stored as 0); negatives are a configuration error."""
    if max_concurrency is None:
        return 0
    value = int(max_concurrency)
    if value < 0:
        raise ValueError(f"max_concurrency must be >= 0 or None, got {max_concurrency!r}")
    return value


class _NodeState:
    """What the balancer tracks for one node."""

    __slots__ = (
        "available",
        "ewma",
        "has_ewma",
        "in_flight",
        "load",
        "max_conc",
        "models",
        "node_id",
        "picks",
    )

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.models: tuple[str, ...] = ()
        self.available = False
        self.max_conc = 0
        self.load = 0.0
        self.in_flight = 0
        self.ewma = 0.0
        self.has_ewma = False
        self.picks = 0


class _ModelCandidates:
    """The nodes listing one model, in the order they started listing it, plus the RR cursor."""

    __slots__ = ("cursor", "nodes")

    def __init__(self) -> None:
        self.nodes: list[_NodeState] = []
        self.cursor = 0


class Balancer:
    """Chooses a node for a model; not thread-safe (the event loop thread owns it)."""

    implementation = "python"

    def __init__(self, algorithm: str = LEAST_LOADED) -> None:
        self._algorithm = check_algorithm(algorithm)
        self._nodes: dict[str, _NodeState] = {}
        self._models: dict[str, _ModelCandidates] = {}

    @property
    def algorithm(self) -> str:
        return self._algorithm

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._nodes

    def set_node(
        self,
        node_id: str,
        *,
        models: Iterable[str],
        available: bool,
        max_concurrency: int | None,
        cpu: float | None,
        memory: float | None,
        gpu: float | None,
        gpu_memory: float | None,
    ) -> None:
        """Insert or update one node; touches only the model lists whose membership changed."""
        new_models = normalise_models(models)
        max_conc = normalise_max_concurrency(max_concurrency)
        load = load_score(cpu, memory, gpu, gpu_memory)
        node = self._nodes.get(node_id)
        if node is None:
            node = _NodeState(node_id)
            self._nodes[node_id] = node
        old = set(node.models)
        new = set(new_models)
        for model in node.models:
            if model not in new:
                self._unlist(model, node)
        for model in new_models:
            if model not in old:
                self._models.setdefault(model, _ModelCandidates()).nodes.append(node)
        node.models = new_models
        node.available = bool(available)
        node.max_conc = max_conc
        node.load = load

    def _unlist(self, model: str, node: _NodeState) -> None:
        cands = self._models[model]
        cands.nodes.remove(node)
        if not cands.nodes:
            del self._models[model]

    def remove_node(self, node_id: str) -> None:
        """Forget a node (unknown ids are ignored: removal may race a late heartbeat)."""
        node = self._nodes.pop(node_id, None)
        if node is None:
            return
        for model in node.models:
            self._unlist(model, node)

    def pick(self, model: str, exclude: Collection[str] = ()) -> str | None:
        """Best available node for `model` with room, skipping `exclude`; None if there is none."""
        cands = self._models.get(model)
        if cands is None:
            return None
        nodes = cands.nodes
        n = len(nodes)
        start = cands.cursor % n
        algorithm = self._algorithm
        best_pos = -1
        best_if = 0
        best_score = 0.0
        # Scan from the cursor so equal candidates take turns (round robin among ties).
        for i in range(n):
            pos = start + i
            if pos >= n:
                pos -= n
            node = nodes[pos]
            if not node.available:
                continue
            if node.max_conc and node.in_flight >= node.max_conc:
                continue
            if exclude and node.node_id in exclude:
                continue
            if algorithm == ROUND_ROBIN:
                best_pos = pos
                break
            if algorithm == LEAST_LOADED:
                if (
                    best_pos < 0
                    or node.in_flight < best_if
                    or (node.in_flight == best_if and node.load < best_score)
                ):
                    best_pos = pos
                    best_if = node.in_flight
                    best_score = node.load
            else:
                score = node.ewma * float(node.in_flight + 1)
                if best_pos < 0 or score < best_score:
                    best_pos = pos
                    best_score = score
        if best_pos < 0:
            return None
        cands.cursor = best_pos + 1
        chosen = nodes[best_pos]
        chosen.picks += 1
        return chosen.node_id

    def serves(self, model: str) -> bool:
        """True when some available node lists `model`, room or not (else the API answers 404)."""
        cands = self._models.get(model)
        return cands is not None and any(node.available for node in cands.nodes)

    def request_started(self, node_id: str) -> None:
        node = self._nodes.get(node_id)
        if node is not None:
            node.in_flight += 1

    def request_finished(self, node_id: str, ttfb_ms: float | None) -> None:
        """Count the request done; a finish for a removed node is ignored, never below zero."""
        node = self._nodes.get(node_id)
        if node is None:
            return
        if node.in_flight > 0:
            node.in_flight -= 1
        sample = valid_ttfb(ttfb_ms)
        if sample is not None:
            node.ewma = ewma_update(node.ewma, node.has_ewma, sample)
            node.has_ewma = True

    def in_flight(self, node_id: str) -> int:
        node = self._nodes.get(node_id)
        return node.in_flight if node is not None else 0

    def ttfb_ewma(self, node_id: str) -> float | None:
        """The node's EWMA of time to first byte in ms, None before the first sample."""
        node = self._nodes.get(node_id)
        return node.ewma if node is not None and node.has_ewma else None

    def picks(self) -> dict[str, int]:
        return {node_id: node.picks for node_id, node in self._nodes.items()}
