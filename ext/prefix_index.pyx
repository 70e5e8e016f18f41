# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""Compiled prefix index (routercore._prefix_index); twin: routercore/_prefix_index_py.py.

Entries live in one C array, threaded on a doubly linked LRU list (oldest at `head`), and are
found through an open-addressing table of entry indices (linear probing, backward-shift
deletion, so no tombstones pile up). The table slot of a key is a mix of the key with a random
per-index salt: prompt hashes are chosen by clients, and an unsalted table would let one of
them line its prompts up on one probe chain.
"""

import os

from cpython.bytes cimport PyBytes_AS_STRING
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport uint64_t
from libc.string cimport memcpy

from routercore._prefix_index_py import check_capacity, check_hashes


cdef inline Py_ssize_t count_hashes(object hashes) except -1:
    """check_hashes without a Python call for the common case; the twin's check (and its
    messages) for anything else."""
    if type(hashes) is bytes and len(<bytes>hashes) % 8 == 0:
        return len(<bytes>hashes) // 8
    return check_hashes(hashes)


ctypedef struct Entry:
    uint64_t key
    int owner
    int tag
    int older   # LRU neighbours (-1: none); for free entries `newer` chains the free list
    int newer


cdef inline uint64_t _mix(uint64_t z) noexcept nogil:
    """splitmix64's finaliser: every key bit moves every table-slot bit."""
    z = (z ^ (z >> 30)) * <uint64_t>0xBF58476D1CE4E5B9
    z = (z ^ (z >> 27)) * <uint64_t>0x94D049BB133111EB
    return z ^ (z >> 31)


cdef inline uint64_t _key_at(const char *data, Py_ssize_t pos) noexcept nogil:
    cdef uint64_t key
    memcpy(&key, data + pos * 8, 8)
    return key


cdef class PrefixIndex:
    """Bounded LRU map: prefix hash -> (owner, tag). Not thread-safe (the event loop owns it)."""

    cdef Entry *_entries
    cdef int *_table        # entry index per table slot, -1 when empty
    cdef uint64_t _mask
    cdef uint64_t _salt
    cdef int _capacity
    cdef int _size
    cdef int _head          # least recently recorded
    cdef int _tail          # most recently recorded
    cdef int _free          # first free entry

    def __cinit__(self, *args, **kwargs):
        self._entries = NULL
        self._table = NULL

    def __dealloc__(self):
        PyMem_Free(self._entries)
        PyMem_Free(self._table)

    def __init__(self, capacity):
        cdef Py_ssize_t i, slots = 2
        cdef int cap = check_capacity(capacity)
        while slots < 2 * <Py_ssize_t>cap:
            slots *= 2
        PyMem_Free(self._entries)
        PyMem_Free(self._table)
        self._entries = <Entry *>PyMem_Malloc(cap * sizeof(Entry))
        self._table = <int *>PyMem_Malloc(slots * sizeof(int))
        if self._entries == NULL or self._table == NULL:
            raise MemoryError()
        for i in range(slots):
            self._table[i] = -1
        for i in range(cap):
            self._entries[i].newer = <int>i + 1 if i + 1 < cap else -1
        self._mask = <uint64_t>(slots - 1)
        self._salt = int.from_bytes(os.urandom(8), "little")
        self._capacity = cap
        self._size = 0
        self._head = -1
        self._tail = -1
        self._free = 0

    @property
    def capacity(self):
        return self._capacity

    @property
    def implementation(self):
        return "cython"

    def __len__(self):
        return self._size

    # -- table -----------------------------------------------------------------------------

    cdef inline uint64_t _home(self, uint64_t key) noexcept nogil:
        return _mix(key ^ self._salt) & self._mask

    cdef inline int _find(self, uint64_t key) noexcept nogil:
        """Entry index holding `key`, or -1."""
        cdef uint64_t i = self._home(key)
        cdef int e
        while True:
            e = self._table[i]
            if e < 0:
                return -1
            if self._entries[e].key == key:
                return e
            i = (i + 1) & self._mask

    cdef void _table_remove(self, uint64_t key) noexcept nogil:
        """Delete `key` from the table, shifting the rest of its probe run back."""
        cdef uint64_t i = self._home(key), j, k
        while self._entries[self._table[i]].key != key:
            i = (i + 1) & self._mask
        j = i
        while True:
            self._table[i] = -1
            while True:
                j = (j + 1) & self._mask
                if self._table[j] < 0:
                    return
                k = self._home(self._entries[self._table[j]].key)
                # The entry at j may fill the hole at i unless its home lies cyclically in (i, j].
                if i <= j:
                    if i < k and k <= j:
                        continue
                elif i < k or k <= j:
                    continue
                break
            self._table[i] = self._table[j]
            i = j

    # -- LRU list --------------------------------------------------------------------------

    cdef inline void _unlink(self, int e) noexcept nogil:
        cdef Entry *entry = &self._entries[e]
        if entry.older >= 0:
            self._entries[entry.older].newer = entry.newer
        else:
            self._head = entry.newer
        if entry.newer >= 0:
            self._entries[entry.newer].older = entry.older
        else:
            self._tail = entry.older

    cdef inline void _append(self, int e) noexcept nogil:
        self._entries[e].older = self._tail
        self._entries[e].newer = -1
        if self._tail >= 0:
            self._entries[self._tail].newer = e
        else:
            self._head = e
        self._tail = e

    cdef void _drop(self, int e) noexcept nogil:
        self._table_remove(self._entries[e].key)
        self._unlink(e)
        self._entries[e].newer = self._free
        self._free = e
        self._size -= 1

    cdef void _insert(self, uint64_t key, int owner, int tag) noexcept nogil:
        cdef uint64_t i
        cdef int e
        if self._size >= self._capacity:
            self._drop(self._head)
        e = self._free
        self._free = self._entries[e].newer
        self._entries[e].key = key
        self._entries[e].owner = owner
        self._entries[e].tag = tag
        self._append(e)
        i = self._home(key)
        while self._table[i] >= 0:
            i = (i + 1) & self._mask
        self._table[i] = e
        self._size += 1

    # -- API (the twin's) ------------------------------------------------------------------

    cdef Py_ssize_t c_longest(self, const char *data, Py_ssize_t upto, int tag, int *owner) noexcept nogil:
        """Position of the longest boundary before `upto` recorded for `tag`, or -1."""
        cdef Py_ssize_t pos = upto - 1
        cdef int e
        while pos >= 0:
            e = self._find(_key_at(data, pos))
            if e >= 0 and self._entries[e].tag == tag:
                owner[0] = self._entries[e].owner
                return pos
            pos -= 1
        return -1

    cdef void c_record(self, const char *data, Py_ssize_t n, int owner, int tag) noexcept nogil:
        cdef Py_ssize_t pos
        cdef uint64_t key
        cdef int e
        for pos in range(n):
            key = _key_at(data, pos)
            e = self._find(key)
            if e >= 0:
                self._unlink(e)
                self._append(e)
                self._entries[e].owner = owner
                self._entries[e].tag = tag
            else:
                self._insert(key, owner, tag)

    def longest(self, bytes hashes not None, upto, tag):
        """(position, owner) of the longest boundary before `upto` recorded for `tag`, or
        (-1, -1). Looking does not refresh an entry: only `record` does."""
        cdef Py_ssize_t n = count_hashes(hashes)
        cdef Py_ssize_t limit = upto
        cdef int owner = -1
        if limit > n:
            limit = n
        cdef Py_ssize_t pos = self.c_longest(PyBytes_AS_STRING(hashes), limit, tag, &owner)
        if pos < 0:
            return (-1, -1)
        return (pos, owner)

    def record(self, bytes hashes not None, int owner, int tag):
        """Every boundary of `hashes` now names `owner`; they become the most recent entries."""
        cdef Py_ssize_t n = count_hashes(hashes)
        self.c_record(PyBytes_AS_STRING(hashes), n, owner, tag)

    def forget(self, int owner, int tag=-1):
        """Drop the owner's entries (for one tag, or all when tag < 0); returns how many."""
        cdef int e = self._head, newer, dropped = 0
        while e >= 0:
            newer = self._entries[e].newer
            if self._entries[e].owner == owner and (tag < 0 or self._entries[e].tag == tag):
                self._drop(e)
                dropped += 1
            e = newer
        return dropped

    def entries(self):
        """(key, owner, tag) for every entry, least recently recorded first (for tests)."""
        cdef int e = self._head
        out = []
        while e >= 0:
            out.append((self._entries[e].key, self._entries[e].owner, self._entries[e].tag))
            e = self._entries[e].newer
        return out
