"""Property: the compiled balancer and the pure-Python twin make the same choice at every step."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from routercore import balancer as facade
from routercore._balancer_py import ALGORITHMS
from routercore._balancer_py import Balancer as PyBalancer
from tests.support.balancer_ops import add, apply

pytestmark = pytest.mark.skipif(
    not facade.COMPILED_AVAILABLE,
    reason=f"nothing to compare the twin with: {facade.COMPILED_UNAVAILABLE_REASON}",
)

NODE_IDS = [f"n{i}" for i in range(6)]
MODELS = ["llama3", "qwen", "mistral"]
# Skewed towards one model so that several nodes compete for it.
some_model = st.sampled_from([MODELS[0], MODELS[0], MODELS[0], *MODELS[1:]])
asked_model = st.sampled_from([MODELS[0], MODELS[0], MODELS[0], *MODELS[1:], "absent"])
listed = st.lists(some_model, min_size=1, max_size=4)
model_lists: st.SearchStrategy[list[str]] = st.one_of(listed, listed, listed, st.just([]))

# Few distinct load values so that exact ties (the round-robin tie-break) happen often;
# the odd values check both sides sanitise the same way.
loads = st.one_of(
    st.none(),
    st.sampled_from([0.0, 10.0, 33.3, 50.0, 100.0]),
    st.floats(min_value=0.0, max_value=100.0),
    st.sampled_from([float("nan"), float("inf"), -1.0]),
)
ttfbs = st.one_of(
    st.none(),
    st.sampled_from([0.0, 50.0, 100.0, 250.0]),
    st.floats(min_value=0.0, max_value=10_000.0),
    st.sampled_from([float("nan"), -3.0]),
)

node_fields = st.fixed_dictionaries(
    {
        "models": model_lists,
        # Mostly available: unavailable nodes never compete, so they make for dull examples.
        "available": st.sampled_from([True, True, True, False]),
        "max_concurrency": st.one_of(st.none(), st.integers(min_value=0, max_value=3)),
        "cpu": loads,
        "memory": loads,
        "gpu": loads,
        "gpu_memory": loads,
    }
)
set_node = st.tuples(st.just("set_node"), st.sampled_from(NODE_IDS), node_fields)
# The starting table: every node lists some model, so picks have rivals from step 0.
table = st.lists(
    st.tuples(
        st.just("set_node"),
        st.sampled_from(NODE_IDS),
        node_fields.filter(lambda f: bool(f["models"])),
    ),
    min_size=3,
    max_size=len(NODE_IDS),
    unique_by=lambda op: op[1],
)
remove = st.tuples(st.just("remove_node"), st.sampled_from(NODE_IDS))
start = st.tuples(st.just("request_started"), st.sampled_from([*NODE_IDS, "ghost"]))
finish = st.tuples(st.just("request_finished"), st.sampled_from([*NODE_IDS, "ghost"]), ttfbs)
pick = st.tuples(
    st.just("pick"),
    asked_model,
    st.one_of(
        st.just(frozenset()), st.frozensets(st.sampled_from([*NODE_IDS, "ghost"]), max_size=3)
    ),
)
serves = st.tuples(st.just("serves"), asked_model)
# Picks weigh most: they are what must agree.
operations = st.lists(
    st.one_of(set_node, remove, start, finish, pick, pick, pick, serves),
    min_size=30,
    max_size=100,
)


def snapshot(bal: PyBalancer) -> tuple[Any, ...]:
    """Everything observable besides pick results."""
    return (
        bal.picks(),
        {node_id: bal.in_flight(node_id) for node_id in NODE_IDS},
        {node_id: bal.ttfb_ewma(node_id) for node_id in NODE_IDS},
        len(bal),
    )


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(initial=table, ops=operations)
def test_both_implementations_pick_the_same(
    algorithm: str, initial: list[tuple[Any, ...]], ops: list[tuple[Any, ...]]
) -> None:
    compiled = facade.make_balancer(algorithm, "cython")
    twin = facade.make_balancer(algorithm, "python")
    for step, op in enumerate(initial + ops):
        got = apply(compiled, op)
        expected = apply(twin, op)
        assert got == expected, f"step {step}: {op!r}: cython {got!r} != python {expected!r}"
        assert snapshot(compiled) == snapshot(twin), f"state differs after step {step}: {op!r}"


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@settings(max_examples=100, deadline=None)
@given(
    n_nodes=st.integers(min_value=1, max_value=40),
    limits=st.lists(st.integers(min_value=0, max_value=2), min_size=40, max_size=40),
    rounds=st.integers(min_value=1, max_value=200),
)
def test_saturation_agrees_and_respects_limits(
    algorithm: str, n_nodes: int, limits: list[int], rounds: int
) -> None:
    """Fill a bigger table to the brim: same picks, and no node ever beyond its limit."""
    bals = [facade.make_balancer(algorithm, impl) for impl in ("cython", "python")]
    for bal in bals:
        for i in range(n_nodes):
            add(bal, f"n{i}", max_concurrency=limits[i], cpu=float(i % 3))
    for r in range(rounds):
        chosen = [bal.pick("m") for bal in bals]
        assert chosen[0] == chosen[1]
        node = chosen[0]
        if node is None:
            # Full: finishing one request must make room again.
            busy = next(f"n{i}" for i in range(n_nodes) if bals[0].in_flight(f"n{i}"))
            for bal in bals:
                bal.request_finished(busy, float(r))
            continue
        for bal in bals:
            bal.request_started(node)
        limit = limits[int(node[1:])]
        assert limit == 0 or bals[0].in_flight(node) <= limit
