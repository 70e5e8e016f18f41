"""Property: the compiled prefix index and its twin, and the balancers' affinity picks built on
them, give the same answer and hold the same entries at every step."""

from __future__ import annotations

from array import array
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from routercore import balancer as facade
from routercore._balancer_py import ALGORITHMS
from routercore._balancer_py import Balancer as PyBalancer
from tests.support.balancer_ops import apply

pytestmark = pytest.mark.skipif(
    not facade.COMPILED_AVAILABLE,
    reason=f"nothing to compare the twin with: {facade.COMPILED_UNAVAILABLE_REASON}",
)

# Few distinct keys (and the extremes of uint64) so that hits, refreshes and evictions are common.
keys = st.one_of(st.integers(min_value=0, max_value=40), st.sampled_from([2**64 - 1, 2**63]))
prefixes = st.lists(keys, max_size=8).map(lambda ks: array("Q", ks).tobytes())
owners = st.integers(min_value=0, max_value=5)
tags = st.integers(min_value=0, max_value=2)

index_ops = st.lists(
    st.one_of(
        st.tuples(st.just("record"), prefixes, owners, tags),
        st.tuples(st.just("record"), prefixes, owners, tags),
        st.tuples(st.just("longest"), prefixes, st.integers(min_value=-1, max_value=10), tags),
        st.tuples(st.just("longest"), prefixes, st.integers(min_value=-1, max_value=10), tags),
        st.tuples(st.just("forget"), owners, st.sampled_from([-1, 0, 1, 2])),
    ),
    min_size=10,
    max_size=120,
)


def run_index(index: Any, op: tuple[Any, ...]) -> Any:
    name = op[0]
    if name == "record":
        return index.record(op[1], op[2], op[3])
    if name == "longest":
        return index.longest(op[1], op[2], op[3])
    return index.forget(op[1], op[2])


@settings(max_examples=300, deadline=None)
@given(capacity=st.integers(min_value=1, max_value=12), ops=index_ops)
def test_both_indexes_agree_at_every_step(capacity: int, ops: list[tuple[Any, ...]]) -> None:
    compiled = facade.make_prefix_index(capacity, "cython")
    twin = facade.make_prefix_index(capacity, "python")
    for step, op in enumerate(ops):
        got, expected = run_index(compiled, op), run_index(twin, op)
        assert got == expected, f"step {step}: {op!r}: cython {got!r} != python {expected!r}"
        assert compiled.entries() == twin.entries(), f"entries differ after step {step}: {op!r}"
        assert len(compiled) == len(twin) <= capacity


@pytest.mark.parametrize("implementation", ["cython", "python"])
def test_bad_hashes_are_refused_alike(implementation: str) -> None:
    index = facade.make_prefix_index(4, implementation)
    with pytest.raises(ValueError):
        index.record(b"\x00" * 7, 0, 0)
    with pytest.raises(TypeError):
        index.longest("not bytes", 1, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        facade.make_prefix_index(0, implementation)


# -- the balancers' affinity picks ------------------------------------------------------------

NODE_IDS = [f"n{i}" for i in range(5)]
MODELS = ["llama3", "qwen"]
node_fields = st.fixed_dictionaries(
    {
        "models": st.lists(st.sampled_from(MODELS), max_size=2),
        "available": st.sampled_from([True, True, True, False]),
        "max_concurrency": st.one_of(st.none(), st.integers(min_value=0, max_value=3)),
        "cpu": st.sampled_from([None, 0.0, 50.0]),
        "memory": st.none(),
        "gpu": st.none(),
        "gpu_memory": st.none(),
        "affinity_key": st.one_of(st.none(), st.sampled_from(["10.0.0.1:1", "10.0.0.2:1"])),
    }
)
# Conversations: a prompt is the first `turn` boundaries of one of a few chains, so a later
# turn extends an earlier one as a real follow-up does.
conversation = st.tuples(
    st.integers(min_value=0, max_value=3), st.integers(min_value=0, max_value=6)
)
affine = st.tuples(
    st.just("pick_affine"),
    st.sampled_from([*MODELS, "absent"]),
    conversation,
    st.frozensets(st.sampled_from([*NODE_IDS, "ghost"]), max_size=2),
)
balancer_ops = st.lists(
    st.one_of(
        st.tuples(st.just("set_node"), st.sampled_from(NODE_IDS), node_fields),
        st.tuples(st.just("remove_node"), st.sampled_from(NODE_IDS)),
        st.tuples(st.just("request_started"), st.sampled_from(NODE_IDS)),
        st.tuples(st.just("request_started"), st.sampled_from(NODE_IDS)),
        st.tuples(st.just("request_finished"), st.sampled_from(NODE_IDS), st.just(10.0)),
        st.tuples(st.just("pick"), st.sampled_from(MODELS), st.just(frozenset())),
        affine,
        affine,
        affine,
        affine,
    ),
    min_size=20,
    max_size=120,
)


def observed(bal: PyBalancer) -> tuple[Any, ...]:
    return (
        bal.picks(),
        bal.affinity_stats(),
        {node_id: bal.in_flight(node_id) for node_id in NODE_IDS},
        len(bal.prefix_index),
        bal.prefix_entries(),
    )


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    capacity=st.integers(min_value=1, max_value=16),
    epsilon=st.sampled_from([0.0, 0.25, 1.0]),
    ops=balancer_ops,
)
def test_affinity_picks_agree_at_every_step(
    algorithm: str, capacity: int, epsilon: float, ops: list[tuple[Any, ...]]
) -> None:
    kw = {"prefix_entries": capacity, "affinity_epsilon": epsilon}
    compiled = facade.make_balancer(algorithm, "cython", **kw)
    twin = facade.make_balancer(algorithm, "python", **kw)
    for step, op in enumerate(ops):
        got, expected = apply(compiled, op), apply(twin, op)
        assert got == expected, f"step {step}: {op!r}: cython {got!r} != python {expected!r}"
        assert observed(compiled) == observed(twin), f"state differs after step {step}: {op!r}"
