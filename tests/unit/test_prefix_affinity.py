"""Prefix affinity in the balancer: stickiness, the load bound, eviction, nodes leaving the
index, rendezvous across replicas; run against both implementations."""

from __future__ import annotations

from typing import Any

import pytest

from routercore import balancer as facade
from routercore.prefix import PromptPrefix, chat_prefix

IMPLEMENTATIONS = ["python"] + (["cython"] if facade.COMPILED_AVAILABLE else [])


def make(implementation: str, nodes: int = 2, **kw: Any) -> Any:
    bal = facade.make_balancer(kw.pop("algorithm", "round_robin"), implementation, **kw)
    for i in range(nodes):
        add(bal, f"n{i}")
    return bal


def add(bal: Any, node_id: str, **fields: Any) -> None:
    values: dict[str, Any] = {
        "models": ["m"],
        "available": True,
        "max_concurrency": None,
        "cpu": None,
        "memory": None,
        "gpu": None,
        "gpu_memory": None,
        "affinity_key": f"addr-{node_id}",
    }
    values.update(fields)
    bal.set_node(node_id, **values)


def turns(conversation: int, count: int) -> list[PromptPrefix]:
    """The prompts of `count` turns of one chat: each the previous plus answer and question."""
    messages: list[dict[str, str]] = [{"role": "system", "content": "be brief"}]
    out = []
    for turn in range(count):
        messages.append({"role": "user", "content": f"conversation {conversation} turn {turn}"})
        prefix = chat_prefix("m", list(messages))
        assert prefix is not None
        out.append(prefix)
        messages.append({"role": "assistant", "content": f"answer {turn}"})
    return out


def pick(bal: Any, prefix: PromptPrefix, exclude: tuple[str, ...] = ()) -> tuple[str | None, bool]:
    result: tuple[str | None, bool] = bal.pick_affine("m", prefix.hashes, prefix.anchor, exclude)
    return result


@pytest.fixture(params=IMPLEMENTATIONS)
def implementation(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_follow_ups_stick_to_the_first_node(implementation: str) -> None:
    bal = make(implementation, nodes=3)
    for conversation in range(12):
        picks = [pick(bal, p) for p in turns(conversation, 5)]
        first = picks[0][0]
        assert picks[0][1] is False  # nothing known yet: not a hit
        assert all(node == first and hit for node, hit in picks[1:]), picks
    hits, total = zip(*bal.affinity_stats().values(), strict=True)
    assert sum(hits) == 12 * 4 and sum(total) == 12 * 5


def test_new_conversations_spread_by_rendezvous_the_same_on_every_replica(
    implementation: str,
) -> None:
    """Two routers that saw different traffic and know the nodes under other ids send each new
    conversation to the same node (rendezvous over the nodes' addresses), and use them all."""
    first = make(implementation, nodes=0)
    second = make(implementation, nodes=0)
    for i in (0, 1, 2):
        add(first, f"a{i}", affinity_key=f"10.0.0.{i}:8080")
    for i in (2, 0, 1):  # other ids, other listing order
        add(second, f"b{i}", affinity_key=f"10.0.0.{i}:8080")
    for noise in turns(99, 3):
        pick(second, noise)
    chosen = []
    for conversation in range(30):
        prompt = turns(conversation, 1)[0]
        a, b = pick(first, prompt)[0], pick(second, prompt)[0]
        assert a is not None and b is not None and a[1:] == b[1:]
        chosen.append(a)
    assert set(chosen) == {"a0", "a1", "a2"}


def test_the_load_bound_overrides_affinity(implementation: str) -> None:
    bal = make(implementation, nodes=2, affinity_epsilon=0.25, algorithm="least_loaded")
    first, follow_up, third = turns(0, 3)
    home, _ = pick(bal, first)
    other = "n1" if home == "n0" else "n0"
    # Mean in flight 1 over two nodes: the bound is 1.25 * 1 + 1 = 2.25; the home node at 2 is
    # within it and keeps the conversation.
    for _ in range(2):
        bal.request_started(home)
    assert pick(bal, follow_up) == (home, True)
    # At 4 in flight (mean 2, bound 3.5) it is over: the balancer picks, and records the
    # prompt for the node it chose, so the next turn follows the conversation there.
    for _ in range(2):
        bal.request_started(home)
    assert pick(bal, follow_up) == (other, False)
    assert pick(bal, third) == (other, True)


def test_epsilon_widens_the_bound(implementation: str) -> None:
    bal = make(implementation, nodes=2, affinity_epsilon=3.0)
    first, follow_up = turns(0, 2)
    home, _ = pick(bal, first)
    for _ in range(5):  # mean 2.5: bound 4 * 2.5 + 1 = 11
        bal.request_started(home)
    assert pick(bal, follow_up) == (home, True)


def test_a_full_or_excluded_node_is_passed_over(implementation: str) -> None:
    bal = make(implementation, nodes=2)
    first, follow_up = turns(0, 2)
    home, _ = pick(bal, first)
    other = "n1" if home == "n0" else "n0"
    assert pick(bal, follow_up, exclude=(home,)) == (other, False)  # a retry elsewhere
    add(bal, home, max_concurrency=1)
    bal.request_started(home)
    node, _ = pick(bal, follow_up)
    assert node == other
    assert bal.pick_affine("absent", follow_up.hashes, follow_up.anchor) == (None, False)


@pytest.mark.parametrize("change", ["offline", "model_gone", "removed"])
def test_a_node_that_leaves_drops_out_of_the_index(implementation: str, change: str) -> None:
    bal = make(implementation, nodes=2)
    first, follow_up = turns(0, 2)
    home, _ = pick(bal, first)
    assert {node for _key, node, _model in bal.prefix_entries()} == {home}
    if change == "offline":
        add(bal, home, available=False)
    elif change == "model_gone":
        add(bal, home, models=["other"])
    else:
        bal.remove_node(home)
    assert bal.prefix_entries() == []
    other = "n1" if home == "n0" else "n0"
    assert pick(bal, follow_up) == (other, False)
    if change != "removed":  # back again: it does not get the moved conversation back
        add(bal, home)
        assert pick(bal, turns(0, 3)[2]) == (other, True)


def test_heartbeats_do_not_clear_the_index(implementation: str) -> None:
    bal = make(implementation, nodes=2)
    first, follow_up = turns(0, 2)
    home, _ = pick(bal, first)
    add(bal, home, cpu=80.0)  # the same node, still available: an ordinary heartbeat
    assert pick(bal, follow_up) == (home, True)


def test_eviction_bounds_memory(implementation: str) -> None:
    capacity = 50
    bal = make(implementation, nodes=2, prefix_entries=capacity)
    for conversation in range(200):
        for prompt in turns(conversation, 3):
            pick(bal, prompt)
            assert len(bal.prefix_index) <= capacity
    assert len(bal.prefix_index) == capacity
    # The oldest conversations were evicted; the newest are remembered.
    newest = turns(199, 4)[3]
    assert pick(bal, newest)[1] is True
    known = {key for key, _node, _model in bal.prefix_entries()}
    oldest = turns(0, 1)[0]
    assert not known & set(memoryview(oldest.hashes).cast("Q"))


def test_plain_pick_is_unchanged_by_the_index(implementation: str) -> None:
    """`pick` (what PREFIX_AFFINITY=false uses) ignores what the index knows."""
    bal = make(implementation, nodes=3)
    for prompt in turns(0, 3):
        pick(bal, prompt)
    twin = make(implementation, nodes=3)
    assert [bal.pick("m") for _ in range(6)] == [twin.pick("m") for _ in range(6)]


def test_settings_are_checked(implementation: str) -> None:
    with pytest.raises(ValueError):
        make(implementation, affinity_epsilon=-0.1)
    with pytest.raises(ValueError):
        make(implementation, prefix_entries=0)
    bal = make(implementation)
    with pytest.raises(ValueError):
        bal.pick_affine("m", b"", -1)
    with pytest.raises(ValueError):
        bal.pick_affine("m", b"123", 1)
