"""A fake clock and an in-memory node store: what the registry and the health monitor need to be
tested without sockets, SQLite or real time (the real Store is tested in test_store.py)."""

from __future__ import annotations

from typing import Any

from routercore.node import Node


class Clock:
    """A monotonic clock the test moves by hand (`clock.now += 5`)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class MemoryNodeStore:
    """The calls the registry makes on its store, kept in memory."""

    def __init__(self) -> None:
        self.saved: dict[str, Node] = {}

    def load_nodes(self) -> list[Node]:
        return list(self.saved.values())

    def save_node(self, node: Node) -> None:
        self.saved[node.id] = node

    def delete_node(self, node_id: str) -> None:
        self.saved.pop(node_id, None)

    def add_health_sample(self, *args: Any) -> None:
        pass
