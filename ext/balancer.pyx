# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""Compiled node-selection balancer (routercore._balancer); twin: routercore/_balancer_py.py.

Per-node state lives in one C array of NodeSlot structs, each model's candidates in a C array
of slot indices, so the scan in `_choose` touches no Python objects. The Python-level dicts
(node id -> slot, model -> candidates) are only consulted once per call. Scores that need more
than one floating-point operation (load score, EWMA) are computed by the twin's helpers, so
both implementations round identically; the hot loop only multiplies and compares doubles.
"""

from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from libc.stdint cimport uint64_t
from libc.string cimport memmove, memset

from routercore._balancer_py import (
    DEFAULT_AFFINITY_EPSILON,
    DEFAULT_PREFIX_ENTRIES,
    LATENCY,
    LEAST_LOADED,
    ROUND_ROBIN,
    check_algorithm,
    check_anchor,
    check_epsilon,
    ewma_update,
    load_score,
    normalise_max_concurrency,
    normalise_models,
    rendezvous_seed,
    valid_ttfb,
)
from routercore._prefix_index import PrefixIndex
from routercore._prefix_index_py import check_hashes


cdef inline Py_ssize_t count_hashes(object hashes) except -1:
    """check_hashes without a Python call for the common case (see ext/prefix_index.pyx)."""
    if type(hashes) is bytes and len(<bytes>hashes) % 8 == 0:
        return len(<bytes>hashes) // 8
    return check_hashes(hashes)

cdef enum:
    ALGO_ROUND_ROBIN = 0
    ALGO_LEAST_LOADED = 1
    ALGO_LATENCY = 2


ctypedef struct NodeSlot:
    long long in_flight
    long long max_conc      # 0 = unlimited
    long long picks
    long long affinity_hits
    long long affinity_picks
    uint64_t seed           # rendezvous identity (routercore._balancer_py.rendezvous_seed)
    double load             # weighted heartbeat load
    double ewma             # EWMA of TTFB in ms; 0.0 until the first sample
    unsigned char available
    unsigned char has_ewma
    unsigned char excluded  # set only for the duration of one pick()


cdef inline uint64_t _mix(uint64_t z) noexcept nogil:
    """splitmix64's finaliser; the twin's mix64 does the same with masked Python ints."""
    z = (z ^ (z >> 30)) * <uint64_t>0xBF58476D1CE4E5B9
    z = (z ^ (z >> 27)) * <uint64_t>0x94D049BB133111EB
    return z ^ (z >> 31)


cdef inline bint _eligible(const NodeSlot *node) noexcept nogil:
    """Available, with room, and not excluded from this pick."""
    if not node.available or node.excluded:
        return False
    return not (node.max_conc and node.in_flight >= node.max_conc)


cdef Py_ssize_t _choose(
    const NodeSlot *nodes, const int *slots, Py_ssize_t n, Py_ssize_t start, int algo
) noexcept nogil:
    """Position in `slots` of the best candidate, or -1; scans from `start` so ties rotate."""
    cdef Py_ssize_t i, pos, best_pos = -1
    cdef long long best_if = 0
    cdef double best_score = 0.0, score
    cdef const NodeSlot *node
    for i in range(n):
        pos = start + i
        if pos >= n:
            pos -= n
        node = &nodes[slots[pos]]
        if not node.available:
            continue
        if node.max_conc and node.in_flight >= node.max_conc:
            continue
        if node.excluded:
            continue
        if algo == ALGO_ROUND_ROBIN:
            return pos
        if algo == ALGO_LEAST_LOADED:
            if (
                best_pos < 0
                or node.in_flight < best_if
                or (node.in_flight == best_if and node.load < best_score)
            ):
                best_pos = pos
                best_if = node.in_flight
                best_score = node.load
        else:
            score = node.ewma * <double>(node.in_flight + 1)
            if best_pos < 0 or score < best_score:
                best_pos = pos
                best_score = score
    return best_pos


cdef class _Candidates:
    """Slots of the nodes listing one model, in listing order, plus the round-robin cursor."""

    cdef int *slots
    cdef Py_ssize_t n
    cdef Py_ssize_t cap
    cdef Py_ssize_t cursor

    def __cinit__(self):
        self.slots = NULL
        self.n = 0
        self.cap = 0
        self.cursor = 0

    def __dealloc__(self):
        PyMem_Free(self.slots)

    cdef int append(self, int slot) except -1:
        cdef Py_ssize_t new_cap
        cdef int *grown
        if self.n == self.cap:
            new_cap = self.cap * 2 if self.cap else 8
            grown = <int *>PyMem_Realloc(self.slots, new_cap * sizeof(int))
            if grown == NULL:
                raise MemoryError()
            self.slots = grown
            self.cap = new_cap
        self.slots[self.n] = slot
        self.n += 1
        return 0

    cdef void discard(self, int slot) noexcept:
        """Remove `slot`, keeping the order of the others (the twin uses list.remove)."""
        cdef Py_ssize_t i
        for i in range(self.n):
            if self.slots[i] == slot:
                memmove(&self.slots[i], &self.slots[i + 1], (self.n - i - 1) * sizeof(int))
                self.n -= 1
                return


cdef class Balancer:
    """Chooses a node for a model; not thread-safe (the event loop thread owns it)."""

    cdef NodeSlot *_nodes
    cdef Py_ssize_t _cap
    cdef int _algo
    cdef str _algorithm
    cdef dict _slot_of        # node id -> slot index
    cdef list _ids            # slot index -> node id (None when free)
    cdef list _node_models    # slot index -> tuple of models the node lists
    cdef list _free           # free slot indices, reused last-in first-out
    cdef dict _models         # model -> _Candidates
    cdef dict _tags           # model -> its number in the prefix index
    cdef double _epsilon
    cdef object _index        # PrefixIndex; node slots are its owners

    def __cinit__(self, *args, **kwargs):
        self._nodes = NULL
        self._cap = 0

    def __dealloc__(self):
        PyMem_Free(self._nodes)

    def __init__(
        self,
        algorithm = LEAST_LOADED,
        *,
        prefix_entries = DEFAULT_PREFIX_ENTRIES,
        affinity_epsilon = DEFAULT_AFFINITY_EPSILON,
    ):
        self._algorithm = check_algorithm(algorithm)
        self._epsilon = check_epsilon(affinity_epsilon)
        self._index = PrefixIndex(prefix_entries)
        self._tags = {}
        if algorithm == ROUND_ROBIN:
            self._algo = ALGO_ROUND_ROBIN
        elif algorithm == LATENCY:
            self._algo = ALGO_LATENCY
        else:
            self._algo = ALGO_LEAST_LOADED
        self._slot_of = {}
        self._ids = []
        self._node_models = []
        self._free = []
        self._models = {}

    @property
    def algorithm(self):
        return self._algorithm

    @property
    def implementation(self):
        return "cython"

    def __len__(self):
        return len(self._slot_of)

    def __contains__(self, node_id):
        return node_id in self._slot_of

    cdef int _new_slot(self, node_id) except -1:
        cdef int slot
        cdef Py_ssize_t new_cap
        cdef NodeSlot *grown
        if self._free:
            slot = self._free.pop()
            self._ids[slot] = node_id
            self._node_models[slot] = ()
        else:
            slot = len(self._ids)
            if slot == self._cap:
                new_cap = self._cap * 2 if self._cap else 16
                grown = <NodeSlot *>PyMem_Realloc(self._nodes, new_cap * sizeof(NodeSlot))
                if grown == NULL:
                    raise MemoryError()
                self._nodes = grown
                self._cap = new_cap
            self._ids.append(node_id)
            self._node_models.append(())
        memset(&self._nodes[slot], 0, sizeof(NodeSlot))
        self._slot_of[node_id] = slot
        return slot

    cdef void _unlist(self, model, int slot):
        cdef _Candidates cands = <_Candidates>self._models[model]
        cands.discard(slot)
        if cands.n == 0:
            del self._models[model]

    def set_node(
        self,
        node_id,
        *,
        models,
        available,
        max_concurrency,
        cpu,
        memory,
        gpu,
        gpu_memory,
        affinity_key = None,
    ):
        """Insert or update one node; touches only the model lists whose membership changed.

        `affinity_key` names the node for rendezvous hashing (default: its id); a node that
        stops being available forgets its prefixes, and so does a model it stops listing."""
        cdef int slot
        cdef _Candidates cands
        cdef tuple new_models = normalise_models(models)
        cdef long long max_conc = normalise_max_concurrency(max_concurrency)
        cdef double load = load_score(cpu, memory, gpu, gpu_memory)
        cdef uint64_t seed = rendezvous_seed(node_id if affinity_key is None else affinity_key)
        existing = self._slot_of.get(node_id)
        slot = self._new_slot(node_id) if existing is None else existing
        old_models = self._node_models[slot]
        old = set(old_models)
        new = set(new_models)
        for model in old_models:
            if model not in new:
                self._unlist(model, slot)
                tag = self._tags.get(model)
                if tag is not None:
                    self._index.forget(slot, tag)
        if self._nodes[slot].available and not available:
            self._index.forget(slot)
        for model in new_models:
            if model not in old:
                cands = self._models.get(model)
                if cands is None:
                    cands = _Candidates()
                    self._models[model] = cands
                cands.append(slot)
        self._node_models[slot] = new_models
        self._nodes[slot].available = 1 if available else 0
        self._nodes[slot].max_conc = max_conc
        self._nodes[slot].load = load
        self._nodes[slot].seed = seed

    def remove_node(self, node_id):
        """Forget a node (unknown ids are ignored: removal may race a late heartbeat)."""
        existing = self._slot_of.pop(node_id, None)
        if existing is None:
            return
        cdef int slot = existing
        self._index.forget(slot)
        for model in self._node_models[slot]:
            self._unlist(model, slot)
        self._ids[slot] = None
        self._node_models[slot] = ()
        memset(&self._nodes[slot], 0, sizeof(NodeSlot))
        self._free.append(slot)

    cdef list _mark_excluded(self, exclude):
        """Flag the listed nodes so `_choose` passes them over; returns their slots."""
        cdef int slot
        cdef list marked = []
        for node_id in exclude:
            existing = self._slot_of.get(node_id)
            if existing is not None:
                slot = existing
                self._nodes[slot].excluded = 1
                marked.append(slot)
        return marked

    cdef void _unmark(self, list marked):
        cdef int slot
        for slot in marked:
            self._nodes[slot].excluded = 0

    def pick(self, model, exclude=()):
        """Best available node for `model` with room, skipping `exclude`; None if there is none."""
        cdef _Candidates cands
        cdef Py_ssize_t pos
        cdef int slot
        cdef list marked = None
        found = self._models.get(model)
        if found is None:
            return None
        cands = <_Candidates>found
        if cands.n == 0:  # never kept empty, but a modulo by zero would crash the process
            return None
        if exclude:
            marked = self._mark_excluded(exclude)
        pos = _choose(self._nodes, cands.slots, cands.n, cands.cursor % cands.n, self._algo)
        if marked is not None:
            self._unmark(marked)
        if pos < 0:
            return None
        cands.cursor = pos + 1
        slot = cands.slots[pos]
        self._nodes[slot].picks += 1
        return self._ids[slot]

    def pick_affine(self, model, hashes, anchor, exclude=()):
        """Like `pick`, for a prompt with known prefix boundaries: (node, affinity hit).

        The node that served the longest recorded prefix wins while its in-flight count stays
        within the bound (1 + epsilon) x mean + 1; else the rendezvous winner for `anchor`
        within the same bound; else the configured algorithm. The prompt's boundaries are then
        recorded for the chosen node."""
        cdef Py_ssize_t n_hashes = count_hashes(hashes)
        cdef uint64_t anc = check_anchor(anchor)
        cdef _Candidates cands
        cdef Py_ssize_t i, pos, upto
        cdef int slot, owner, chosen = -1, top = -1
        cdef long long total = 0, count = 0
        cdef double bound
        cdef uint64_t score, top_score = 0
        cdef bint hit = False
        cdef list marked = None
        cdef NodeSlot *node
        found = self._models.get(model)
        if found is None:
            return (None, False)
        cands = <_Candidates>found
        if cands.n == 0:
            return (None, False)
        if exclude:
            marked = self._mark_excluded(exclude)
        try:
            for i in range(cands.n):
                node = &self._nodes[cands.slots[i]]
                if _eligible(node):
                    total += node.in_flight
                    count += 1
            if count == 0:
                return (None, False)
            bound = (1.0 + self._epsilon) * (<double>total / <double>count) + 1.0
            tag = self._tags.get(model)
            if tag is None:
                tag = self._tags[model] = len(self._tags)
            upto = n_hashes
            while True:
                pos, owner = self._index.longest(hashes, upto, tag)
                if pos < 0:
                    break
                if 0 <= owner < len(self._ids) and self._ids[owner] is not None and _eligible(
                    &self._nodes[owner]
                ):
                    if self._nodes[owner].in_flight <= bound:
                        chosen = owner
                        hit = True
                    break
                upto = pos
            if chosen < 0:
                for i in range(cands.n):
                    slot = cands.slots[i]
                    if _eligible(&self._nodes[slot]):
                        score = _mix(anc ^ self._nodes[slot].seed)
                        if top < 0 or score > top_score:
                            top = slot
                            top_score = score
                if top >= 0 and self._nodes[top].in_flight <= bound:
                    chosen = top
            if chosen < 0:
                pos = _choose(self._nodes, cands.slots, cands.n, cands.cursor % cands.n, self._algo)
                cands.cursor = pos + 1
                chosen = cands.slots[pos]
        finally:
            if marked is not None:
                self._unmark(marked)
        node = &self._nodes[chosen]
        node.picks += 1
        node.affinity_picks += 1
        if hit:
            node.affinity_hits += 1
        self._index.record(hashes, chosen, tag)
        return (self._ids[chosen], hit)

    def serves(self, model):
        """True when some available node lists `model`, room or not (else the API answers 404)."""
        cdef Py_ssize_t i
        found = self._models.get(model)
        if found is None:
            return False
        cdef _Candidates cands = <_Candidates>found
        for i in range(cands.n):
            if self._nodes[cands.slots[i]].available:
                return True
        return False

    def request_started(self, node_id):
        existing = self._slot_of.get(node_id)
        if existing is not None:
            self._nodes[<int>existing].in_flight += 1

    def request_finished(self, node_id, ttfb_ms):
        """Count the request done; a finish for a removed node is ignored, never below zero."""
        existing = self._slot_of.get(node_id)
        if existing is None:
            return
        cdef NodeSlot *node = &self._nodes[<int>existing]
        if node.in_flight > 0:
            node.in_flight -= 1
        sample = valid_ttfb(ttfb_ms)
        if sample is not None:
            node.ewma = ewma_update(node.ewma, bool(node.has_ewma), sample)
            node.has_ewma = 1

    def in_flight(self, node_id):
        existing = self._slot_of.get(node_id)
        return self._nodes[<int>existing].in_flight if existing is not None else 0

    def ttfb_ewma(self, node_id):
        """The node's EWMA of time to first byte in ms, None before the first sample."""
        existing = self._slot_of.get(node_id)
        if existing is None or not self._nodes[<int>existing].has_ewma:
            return None
        return self._nodes[<int>existing].ewma

    def picks(self):
        return {node_id: self._nodes[<int>slot].picks for node_id, slot in self._slot_of.items()}

    def affinity_stats(self):
        """Per node: (affinity hits, picks made with a prompt prefix)."""
        return {
            node_id: (self._nodes[<int>slot].affinity_hits, self._nodes[<int>slot].affinity_picks)
            for node_id, slot in self._slot_of.items()
        }

    def affinity(self, node_id):
        """The node's (affinity hits, prefix picks); (0, 0) for an unknown node."""
        existing = self._slot_of.get(node_id)
        if existing is None:
            return (0, 0)
        return (self._nodes[<int>existing].affinity_hits, self._nodes[<int>existing].affinity_picks)

    def prefix_entries(self):
        """(prefix hash, node id, model) of every indexed prefix, least recent first."""
        models = {tag: model for model, tag in self._tags.items()}
        return [(key, self._ids[owner], models[tag]) for key, owner, tag in self._index.entries()]

    @property
    def affinity_epsilon(self):
        return self._epsilon

    @property
    def prefix_index(self):
        """The index itself (read-only use: its size, its entries in tests)."""
        return self._index
