"""Pure-Python twin of the compiled prefix index (ext/prefix_index.pyx); same API, same answers.

The index remembers which node (an `owner`, the balancer's small integer for a node) served
which prompt prefix, named by a 64-bit hash, for which model (a `tag`, the balancer's small
integer for a model). It holds at most `capacity` entries and evicts the least recently
recorded one. Prefixes arrive as `bytes`: native-endian unsigned 64-bit hashes, one per
boundary, shortest prefix first (routercore.prefix builds them).
"""

from __future__ import annotations

from collections import OrderedDict

HASH_BYTES = 8


def check_capacity(capacity: int) -> int:
    """The entry limit: a positive int below 2**30 (the compiled table indexes with C ints)."""
    value = int(capacity)
    if not 1 <= value < 2**30:
        raise ValueError(f"prefix index capacity must be between 1 and 2**30 - 1, got {capacity!r}")
    return value


def check_hashes(hashes: bytes) -> int:
    """Number of boundaries in `hashes`; a length that is not a multiple of 8 is refused."""
    if not isinstance(hashes, bytes):
        raise TypeError("hashes must be bytes")
    if len(hashes) % HASH_BYTES:
        raise ValueError("hashes must hold whole 64-bit values (a multiple of 8 bytes)")
    return len(hashes) // HASH_BYTES


def unpack(hashes: bytes) -> list[int]:
    return list(memoryview(hashes).cast("Q")) if hashes else []


class PrefixIndex:
    """Bounded LRU map: prefix hash -> (owner, tag). Not thread-safe (the event loop owns it)."""

    implementation = "python"

    def __init__(self, capacity: int) -> None:
        self._capacity = check_capacity(capacity)
        # Oldest first; every record moves its keys to the end.
        self._entries: OrderedDict[int, tuple[int, int]] = OrderedDict()

    @property
    def capacity(self) -> int:
        return self._capacity

    def __len__(self) -> int:
        return len(self._entries)

    def longest(self, hashes: bytes, upto: int, tag: int) -> tuple[int, int]:
        """(position, owner) of the longest boundary before `upto` recorded for `tag`, or
        (-1, -1). Looking does not refresh an entry: only `record` does."""
        n = check_hashes(hashes)
        keys = unpack(hashes)
        entries = self._entries
        for pos in range(min(upto, n) - 1, -1, -1):
            found = entries.get(keys[pos])
            if found is not None and found[1] == tag:
                return pos, found[0]
        return -1, -1

    def record(self, hashes: bytes, owner: int, tag: int) -> None:
        """Every boundary of `hashes` now names `owner`; they become the most recent entries."""
        check_hashes(hashes)
        entries = self._entries
        for key in unpack(hashes):
            if key in entries:
                entries.move_to_end(key)
            elif len(entries) >= self._capacity:
                entries.popitem(last=False)
            entries[key] = (owner, tag)

    def forget(self, owner: int, tag: int = -1) -> int:
        """Drop the owner's entries (for one tag, or all when tag < 0); returns how many."""
        doomed = [
            key
            for key, (who, what) in self._entries.items()
            if who == owner and (tag < 0 or what == tag)
        ]
        for key in doomed:
            del self._entries[key]
        return len(doomed)

    def entries(self) -> list[tuple[int, int, int]]:
        """(key, owner, tag) for every entry, least recently recorded first (for tests)."""
        return [(key, owner, tag) for key, (owner, tag) in self._entries.items()]
