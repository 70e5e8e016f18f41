"""What the router changed about a node's models before the node's own heartbeat says so.

A pull that finished adds the model to the node at once; a delete removes it at once. Until the
node's heartbeats agree (its agent polls the runtime every few seconds), a heartbeat sent
before the change would undo it: these overrides keep the router's view for a bounded time.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def same_model(a: str, b: str) -> bool:
    """Ollama treats `x` and `x:latest` as one model."""
    return a == b or a.removesuffix(":latest") == b.removesuffix(":latest")


def has_model(models: list[str], model: str) -> bool:
    return any(same_model(m, model) for m in models)


class ModelOverrides:
    """Per node: models added or removed by the router, each until the heartbeat agrees or
    `ttl` seconds pass (then the node's word is final)."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self.added: dict[str, dict[str, float]] = {}
        self.removed: dict[str, dict[str, float]] = {}

    def add(self, node_id: str, model: str) -> None:
        self.removed.get(node_id, {}).pop(model, None)
        self.added.setdefault(node_id, {})[model] = self.clock() + self.ttl

    def remove(self, node_id: str, model: str) -> None:
        self.added.get(node_id, {}).pop(model, None)
        self.removed.setdefault(node_id, {})[model] = self.clock() + self.ttl

    def forget(self, node_id: str) -> None:
        self.added.pop(node_id, None)
        self.removed.pop(node_id, None)

    def apply(self, node_id: str, reported: list[str]) -> list[str]:
        """The models to route to, given what the node's heartbeat `reported`."""
        now = self.clock()
        models = list(reported)
        added = self.added.get(node_id)
        if added:
            for model, until in list(added.items()):
                if until < now or has_model(reported, model):
                    del added[model]  # expired, or the node says so itself now
                else:
                    models.append(model)
        removed = self.removed.get(node_id)
        if removed:
            for model, until in list(removed.items()):
                if until < now or not has_model(reported, model):
                    del removed[model]
                else:
                    models = [m for m in models if not same_model(m, model)]
        return models
