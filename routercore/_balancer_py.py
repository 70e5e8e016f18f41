"""Pure-Python twin of the compiled balancer (ext/balancer.pyx); same API, same picks.

It also owns the scoring helpers both implementations call (load score, EWMA, argument
checks), so the floating-point maths exists once and the two cannot drift apart.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Iterable

from routercore._prefix_index_py import PrefixIndex, check_hashes

ROUND_ROBIN = "round_robin"
LEAST_LOADED = "least_loaded"
LATENCY = "latency"
ALGORITHMS = (ROUND_ROBIN, LEAST_LOADED, LATENCY)

EWMA_ALPHA = 0.3
# Heartbeat load weights; missing figures drop out and the rest are renormalised.
CPU_WEIGHT = 0.4
MEMORY_WEIGHT = 0.3
GPU_WEIGHT = 0.3

DEFAULT_PREFIX_ENTRIES = 65536
DEFAULT_AFFINITY_EPSILON = 0.25
_U64 = (1 << 64) - 1


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


def check_epsilon(epsilon: float) -> float:
    """The load-bound slack: a finite number >= 0."""
    value = float(epsilon)
    if not math.isfinite(value) or value < 0.0:
        raise ValueError(f"affinity epsilon must be a finite number >= 0, got {epsilon!r}")
    return value


def check_anchor(anchor: int) -> int:
    """A rendezvous anchor is an unsigned 64-bit int."""
    if isinstance(anchor, bool) or not isinstance(anchor, int) or not 0 <= anchor <= _U64:
        raise ValueError(f"anchor must be an unsigned 64-bit int, got {anchor!r}")
    return anchor


def affinity_bound(total_in_flight: int, eligible: int, epsilon: float) -> float:
    """The most requests a preferred node may have in flight and still be preferred:
    (1 + epsilon) x the mean over the eligible nodes, plus one (so an idle fleet is no bar)."""
    return (1.0 + epsilon) * (float(total_in_flight) / float(eligible)) + 1.0


def rendezvous_seed(key: str) -> int:
    """A node's rendezvous identity: the same on every router replica for the same key (its
    address), so replicas agree on where a new conversation goes without talking."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")


def mix64(value: int) -> int:
    """splitmix64's finaliser (the compiled side does the same in C with wrapping uint64)."""
    z = value & _U64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _U64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _U64
    return z ^ (z >> 31)


class _NodeState:
    """What the balancer tracks for one node."""

    __slots__ = (
        "affinity_hits",
        "affinity_picks",
        "available",
        "ewma",
        "has_ewma",
        "in_flight",
        "load",
        "max_conc",
        "models",
        "node_id",
        "owner",
        "picks",
        "seed",
    )

    def __init__(self, node_id: str, owner: int) -> None:
        self.node_id = node_id
        self.owner = owner  # the node's number in the prefix index
        self.seed = 0
        self.affinity_hits = 0
        self.affinity_picks = 0
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

    def __init__(
        self,
        algorithm: str = LEAST_LOADED,
        *,
        prefix_entries: int = DEFAULT_PREFIX_ENTRIES,
        affinity_epsilon: float = DEFAULT_AFFINITY_EPSILON,
    ) -> None:
        self._algorithm = check_algorithm(algorithm)
        self._epsilon = check_epsilon(affinity_epsilon)
        self._index = PrefixIndex(prefix_entries)
        self._nodes: dict[str, _NodeState] = {}
        self._models: dict[str, _ModelCandidates] = {}
        self._owners: dict[int, _NodeState] = {}
        self._next_owner = 0
        self._tags: dict[str, int] = {}  # model -> its number in the prefix index

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
        affinity_key: str | None = None,
    ) -> None:
        """Insert or update one node; touches only the model lists whose membership changed.

        `affinity_key` names the node for rendezvous hashing (default: its id); a node that
        stops being available forgets its prefixes, and so does a model it stops listing."""
        new_models = normalise_models(models)
        max_conc = normalise_max_concurrency(max_concurrency)
        load = load_score(cpu, memory, gpu, gpu_memory)
        seed = rendezvous_seed(node_id if affinity_key is None else affinity_key)
        node = self._nodes.get(node_id)
        if node is None:
            node = _NodeState(node_id, self._next_owner)
            self._next_owner += 1
            self._nodes[node_id] = node
            self._owners[node.owner] = node
        old = set(node.models)
        new = set(new_models)
        for model in node.models:
            if model not in new:
                self._unlist(model, node)
                tag = self._tags.get(model)
                if tag is not None:
                    self._index.forget(node.owner, tag)
        if node.available and not available:
            self._index.forget(node.owner)
        for model in new_models:
            if model not in old:
                self._models.setdefault(model, _ModelCandidates()).nodes.append(node)
        node.models = new_models
        node.available = bool(available)
        node.max_conc = max_conc
        node.load = load
        node.seed = seed

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
        del self._owners[node.owner]
        self._index.forget(node.owner)
        for model in node.models:
            self._unlist(model, node)

    def pick(self, model: str, exclude: Collection[str] = ()) -> str | None:
        """Best available node for `model` with room, skipping `exclude`; None if there is none."""
        cands = self._models.get(model)
        if cands is None:
            return None
        chosen = self._choose(cands, exclude)
        if chosen is None:
            return None
        chosen.picks += 1
        return chosen.node_id

    def pick_affine(
        self, model: str, hashes: bytes, anchor: int, exclude: Collection[str] = ()
    ) -> tuple[str | None, bool]:
        """Like `pick`, for a prompt with known prefix boundaries: (node, affinity hit).

        The node that served the longest recorded prefix wins while its in-flight count stays
        within `affinity_bound`; else the rendezvous winner for `anchor` (the conversation's
        start) within the same bound; else the configured algorithm. The prompt's boundaries
        are then recorded for the chosen node."""
        n_hashes = check_hashes(hashes)
        anchor = check_anchor(anchor)
        cands = self._models.get(model)
        if cands is None:
            return None, False
        total = 0
        count = 0
        for node in cands.nodes:
            if self._eligible(node, exclude):
                total += node.in_flight
                count += 1
        if count == 0:
            return None, False
        bound = affinity_bound(total, count, self._epsilon)
        tag = self._tags.setdefault(model, len(self._tags))
        chosen: _NodeState | None = None
        hit = False
        upto = n_hashes
        while True:
            pos, owner = self._index.longest(hashes, upto, tag)
            if pos < 0:
                break
            holder = self._owners.get(owner)
            if holder is not None and self._eligible(holder, exclude):
                if holder.in_flight <= bound:
                    chosen = holder
                    hit = True
                break
            upto = pos
        if chosen is None:
            top: _NodeState | None = None
            top_score = 0
            for node in cands.nodes:
                if self._eligible(node, exclude):
                    score = mix64(anchor ^ node.seed)
                    if top is None or score > top_score:
                        top = node
                        top_score = score
            if top is not None and top.in_flight <= bound:
                chosen = top
        if chosen is None:
            chosen = self._choose(cands, exclude)
            assert chosen is not None  # some node was eligible
        chosen.picks += 1
        chosen.affinity_picks += 1
        if hit:
            chosen.affinity_hits += 1
        self._index.record(hashes, chosen.owner, tag)
        return chosen.node_id, hit

    @staticmethod
    def _eligible(node: _NodeState, exclude: Collection[str]) -> bool:
        if not node.available:
            return False
        if node.max_conc and node.in_flight >= node.max_conc:
            return False
        return not (exclude and node.node_id in exclude)

    def _choose(self, cands: _ModelCandidates, exclude: Collection[str]) -> _NodeState | None:
        """The configured algorithm's choice among the candidates; advances the RR cursor."""
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
        return nodes[best_pos]

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

    def affinity_stats(self) -> dict[str, tuple[int, int]]:
        """Per node: (affinity hits, picks made with a prompt prefix)."""
        return {
            node_id: (node.affinity_hits, node.affinity_picks)
            for node_id, node in self._nodes.items()
        }

    def affinity(self, node_id: str) -> tuple[int, int]:
        """The node's (affinity hits, prefix picks); (0, 0) for an unknown node."""
        node = self._nodes.get(node_id)
        return (node.affinity_hits, node.affinity_picks) if node is not None else (0, 0)

    def prefix_entries(self) -> list[tuple[int, str, str]]:
        """(prefix hash, node id, model) of every indexed prefix, least recent first."""
        models = {tag: model for model, tag in self._tags.items()}
        return [
            (key, self._owners[owner].node_id, models[tag])
            for key, owner, tag in self._index.entries()
        ]

    @property
    def affinity_epsilon(self) -> float:
        return self._epsilon

    @property
    def prefix_index(self) -> PrefixIndex:
        """The index itself (read-only use: its size, its entries in tests)."""
        return self._index
