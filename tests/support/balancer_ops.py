"""One operation on a balancer, as the property tests replay it on the compiled balancer and on
its pure-Python twin: the result (or the exception type) is what the two must share."""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from typing import Any

from routercore._balancer_py import Balancer as PyBalancer


def add(
    bal: Any,
    node_id: str,
    models: Iterable[str] = ("m",),
    *,
    available: bool = True,
    max_concurrency: int | None = None,
    cpu: float | None = None,
    memory: float | None = None,
    gpu: float | None = None,
    gpu_memory: float | None = None,
) -> None:
    """Put `node_id` on either balancer twin; `set_node` takes every field, tests name only the
    ones they care about."""
    bal.set_node(
        node_id,
        models=models,
        available=available,
        max_concurrency=max_concurrency,
        cpu=cpu,
        memory=memory,
        gpu=gpu,
        gpu_memory=gpu_memory,
    )


def conversation_prefix(chain: int, turn: int) -> tuple[bytes, int]:
    """The boundary hashes and anchor of turn `turn` of conversation `chain` (its turns extend
    one another, so later turns find the earlier ones' prefixes)."""
    boundaries = [chain * 1000 + i for i in range(turn)]
    return array("Q", boundaries).tobytes(), chain * 1000


def apply(bal: PyBalancer, op: tuple[Any, ...]) -> Any:
    """Run `op` (its name, then its arguments; "pick_affine" takes (chain, turn))."""
    name = op[0]
    try:
        if name == "set_node":
            return bal.set_node(op[1], **op[2])
        if name == "remove_node":
            return bal.remove_node(op[1])
        if name == "request_started":
            return bal.request_started(op[1])
        if name == "request_finished":
            return bal.request_finished(op[1], op[2])
        if name == "pick":
            return bal.pick(op[1], exclude=op[2])
        if name == "serves":
            return bal.serves(op[1])
        if name == "pick_affine":
            hashes, anchor = conversation_prefix(*op[2])
            return bal.pick_affine(op[1], hashes, anchor, exclude=op[3])
    except (ValueError, TypeError) as exc:
        return type(exc)
    raise AssertionError(f"unknown operation {name}")
