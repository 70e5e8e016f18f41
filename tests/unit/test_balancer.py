"""Balancer behaviour, run against both the compiled module and the pure-Python twin."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest

from routercore import balancer as facade
from routercore._balancer_py import Balancer as PyBalancer
from routercore._balancer_py import load_score
from tests.support.balancer_ops import add
from tests.support.twins import run_python

IMPLEMENTATIONS = [
    pytest.param("python", id="python"),
    pytest.param(
        "cython",
        id="cython",
        marks=pytest.mark.skipif(
            not facade.COMPILED_AVAILABLE,
            reason=f"compiled balancer unavailable: {facade.COMPILED_UNAVAILABLE_REASON}",
        ),
    ),
]

MakeBalancer = Callable[..., PyBalancer]


@pytest.fixture(params=IMPLEMENTATIONS)
def make(request: pytest.FixtureRequest) -> MakeBalancer:
    """Factory for a balancer of the parametrized implementation."""
    implementation: str = request.param

    def _make(algorithm: str = "least_loaded") -> PyBalancer:
        bal = facade.make_balancer(algorithm, implementation)
        assert bal.implementation == implementation
        return bal

    return _make


def three(bal: PyBalancer, **kwargs: object) -> PyBalancer:
    for node_id in ("a", "b", "c"):
        add(bal, node_id, **kwargs)  # type: ignore[arg-type]
    return bal


def start(bal: PyBalancer, count: int) -> list[str]:
    """Pick and start `count` requests for model "m", as the proxy does; the nodes, in order."""
    picked = []
    for _ in range(count):
        node = bal.pick("m")
        assert node is not None
        bal.request_started(node)
        picked.append(node)
    return picked


# --- construction ---------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["round_robin", "least_loaded", "latency"])
def test_algorithm_is_kept(make: MakeBalancer, algorithm: str) -> None:
    assert make(algorithm).algorithm == algorithm


def test_default_algorithm_is_least_loaded(make: MakeBalancer) -> None:
    assert make().algorithm == "least_loaded"


def test_algorithm_is_read_only(make: MakeBalancer) -> None:
    bal = make()
    with pytest.raises(AttributeError):
        bal.algorithm = "latency"  # type: ignore[misc]


def test_invalid_algorithm_names_the_valid_choices(make: MakeBalancer) -> None:
    with pytest.raises(ValueError, match="random") as info:
        make("random")
    for name in ("round_robin", "least_loaded", "latency"):
        assert name in str(info.value)


def test_unknown_implementation_is_refused() -> None:
    with pytest.raises(ValueError, match="cython, python"):
        facade.make_balancer("least_loaded", "rust")


# --- spread over three nodes ----------------------------------------------------------------


def test_round_robin_rotates_over_three_nodes(make: MakeBalancer) -> None:
    bal = three(make("round_robin"))
    assert [bal.pick("m") for _ in range(7)] == ["a", "b", "c", "a", "b", "c", "a"]
    assert bal.picks() == {"a": 3, "b": 2, "c": 2}


def test_round_robin_ignores_load_and_in_flight(make: MakeBalancer) -> None:
    bal = make("round_robin")
    add(bal, "a", cpu=99.0)
    add(bal, "b", cpu=1.0)
    add(bal, "c", cpu=50.0)
    bal.request_started("a")
    bal.request_started("a")
    assert [bal.pick("m") for _ in range(3)] == ["a", "b", "c"]


def test_round_robin_cursor_is_per_model(make: MakeBalancer) -> None:
    bal = make("round_robin")
    for node_id in ("a", "b", "c"):
        add(bal, node_id, ("m", "n"))
    assert bal.pick("m") == "a"
    assert bal.pick("m") == "b"
    assert bal.pick("n") == "a"
    assert bal.pick("m") == "c"


def test_least_loaded_with_equal_load_rotates(make: MakeBalancer) -> None:
    bal = three(make("least_loaded"), cpu=10.0, memory=20.0)
    assert Counter(bal.pick("m") for _ in range(9)) == {"a": 3, "b": 3, "c": 3}


def test_least_loaded_prefers_fewest_in_flight(make: MakeBalancer) -> None:
    bal = three(make("least_loaded"))
    picked = start(bal, 6)
    # Every node gets a request before any gets a second one.
    assert Counter(picked[:3]) == {"a": 1, "b": 1, "c": 1}
    assert Counter(picked) == {"a": 2, "b": 2, "c": 2}
    bal.request_finished("b", None)
    assert bal.pick("m") == "b"


def test_least_loaded_uses_heartbeat_load_between_equal_in_flight(make: MakeBalancer) -> None:
    bal = make("least_loaded")
    add(bal, "a", cpu=80.0, memory=80.0, gpu=80.0)
    add(bal, "b", cpu=10.0, memory=10.0, gpu=10.0)
    add(bal, "c", cpu=50.0, memory=50.0, gpu=50.0)
    assert [bal.pick("m") for _ in range(3)] == ["b", "b", "b"]
    bal.request_started("b")
    assert bal.pick("m") == "c"
    bal.request_started("c")
    assert bal.pick("m") == "a"


def test_least_loaded_sees_heartbeat_updates(make: MakeBalancer) -> None:
    bal = make("least_loaded")
    add(bal, "a", cpu=10.0)
    add(bal, "b", cpu=20.0)
    assert bal.pick("m") == "a"
    add(bal, "a", cpu=90.0)
    assert bal.pick("m") == "b"


def test_latency_prefers_fast_node_and_tries_unsampled_ones(make: MakeBalancer) -> None:
    bal = three(make("latency"))
    for node_id, ttfb in (("a", 300.0), ("b", 100.0)):
        bal.request_started(node_id)
        bal.request_finished(node_id, ttfb)
    # c has no samples yet: it counts as 0 and gets tried first.
    assert bal.pick("m") == "c"
    bal.request_started("c")
    bal.request_finished("c", 200.0)
    assert [bal.pick("m") for _ in range(3)] == ["b", "b", "b"]
    # Load multiplies the EWMA: b at 100 * (2 + 1) = 300 loses to c at 200 * 1.
    bal.request_started("b")
    bal.request_started("b")
    assert bal.pick("m") == "c"


def test_latency_spreads_over_unsampled_nodes(make: MakeBalancer) -> None:
    bal = three(make("latency"))
    assert [bal.pick("m") for _ in range(6)] == ["a", "b", "c", "a", "b", "c"]


def test_latency_ewma_uses_alpha_0_3(make: MakeBalancer) -> None:
    bal = make("latency")
    add(bal, "a")
    assert bal.ttfb_ewma("a") is None
    bal.request_finished("a", 100.0)
    assert bal.ttfb_ewma("a") == 100.0
    bal.request_finished("a", 200.0)
    assert bal.ttfb_ewma("a") == pytest.approx(130.0)
    bal.request_finished("a", None)
    bal.request_finished("a", float("nan"))
    bal.request_finished("a", -5.0)
    assert bal.ttfb_ewma("a") == pytest.approx(130.0)


# --- candidates -----------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["round_robin", "least_loaded", "latency"])
def test_only_nodes_listing_the_model_are_candidates(make: MakeBalancer, algorithm: str) -> None:
    bal = make(algorithm)
    add(bal, "a", ("llama3", "qwen"))
    add(bal, "b", ("qwen",))
    add(bal, "c", ("mistral",))
    assert {bal.pick("llama3") for _ in range(5)} == {"a"}
    assert {bal.pick("qwen") for _ in range(6)} == {"a", "b"}
    assert {bal.pick("mistral") for _ in range(5)} == {"c"}
    assert bal.pick("phi") is None


def test_model_list_changes_are_incremental(make: MakeBalancer) -> None:
    bal = make("round_robin")
    add(bal, "a", ("x",))
    add(bal, "b", ("x", "y"))
    add(bal, "a", ("y",))
    assert {bal.pick("x") for _ in range(4)} == {"b"}
    assert {bal.pick("y") for _ in range(4)} == {"a", "b"}
    add(bal, "b", ())
    assert bal.pick("x") is None
    assert not bal.serves("x")
    assert {bal.pick("y") for _ in range(4)} == {"a"}


def test_a_str_is_not_a_model_list(make: MakeBalancer) -> None:
    bal = make()
    with pytest.raises(TypeError):
        add(bal, "a", "llama3")


def test_duplicate_models_count_once(make: MakeBalancer) -> None:
    bal = make("round_robin")
    add(bal, "a", ("m", "m"))
    add(bal, "b", ("m",))
    assert [bal.pick("m") for _ in range(4)] == ["a", "b", "a", "b"]


# --- room -----------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["round_robin", "least_loaded", "latency"])
def test_full_nodes_are_skipped_and_none_when_all_full(make: MakeBalancer, algorithm: str) -> None:
    bal = make(algorithm)
    add(bal, "a", max_concurrency=1)
    add(bal, "b", max_concurrency=2)
    assert Counter(start(bal, 3)) == {"a": 1, "b": 2}
    assert bal.pick("m") is None
    assert bal.serves("m")  # full is not "not served": the proxy queues instead of 404
    bal.request_finished("a", 50.0)
    assert bal.pick("m") == "a"


@pytest.mark.parametrize("limit", [None, 0])
def test_no_limit_means_unlimited(make: MakeBalancer, limit: int | None) -> None:
    bal = make()
    add(bal, "a", max_concurrency=limit)
    for _ in range(100):
        bal.request_started("a")
    assert bal.pick("m") == "a"


def test_negative_max_concurrency_is_refused(make: MakeBalancer) -> None:
    bal = make()
    with pytest.raises(ValueError, match="max_concurrency"):
        add(bal, "a", max_concurrency=-1)
    assert "a" not in bal


def test_lowering_max_concurrency_applies_at_once(make: MakeBalancer) -> None:
    bal = make()
    add(bal, "a", max_concurrency=4)
    bal.request_started("a")
    bal.request_started("a")
    add(bal, "a", max_concurrency=2)
    assert bal.in_flight("a") == 2
    assert bal.pick("m") is None


# --- exclude --------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["round_robin", "least_loaded", "latency"])
def test_exclude_skips_nodes(make: MakeBalancer, algorithm: str) -> None:
    bal = three(make(algorithm))
    assert {bal.pick("m", exclude={"a"}) for _ in range(6)} == {"b", "c"}
    assert {bal.pick("m", exclude=["a", "c", "unknown"]) for _ in range(3)} == {"b"}
    assert bal.pick("m", exclude=("a", "b", "c")) is None
    # Exclusion lasts one call only.
    assert {bal.pick("m") for _ in range(6)} == {"a", "b", "c"}


def test_failover_sequence_tries_each_node_once(make: MakeBalancer) -> None:
    bal = three(make("least_loaded"))
    tried: list[str] = []
    while (node := bal.pick("m", exclude=tried)) is not None:
        tried.append(node)
    assert sorted(tried) == ["a", "b", "c"]


# --- availability and serves() --------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["round_robin", "least_loaded", "latency"])
def test_unavailable_nodes_are_never_picked(make: MakeBalancer, algorithm: str) -> None:
    bal = make(algorithm)
    add(bal, "a", available=False, cpu=0.0)
    add(bal, "b", cpu=90.0)
    add(bal, "c", available=False)
    assert {bal.pick("m") for _ in range(6)} == {"b"}
    add(bal, "b", available=False, cpu=90.0)
    assert bal.pick("m") is None
    assert not bal.serves("m")
    add(bal, "c")
    assert bal.pick("m") == "c"
    assert bal.serves("m")


def test_serves(make: MakeBalancer) -> None:
    bal = make()
    assert not bal.serves("m")
    add(bal, "a", ("m",), available=False)
    assert not bal.serves("m")
    add(bal, "b", ("m", "n"), max_concurrency=1)
    bal.request_started("b")
    assert bal.serves("m")
    assert bal.serves("n")
    assert not bal.serves("o")


# --- remove ---------------------------------------------------------------------------------


def test_remove_node(make: MakeBalancer) -> None:
    bal = three(make("round_robin"))
    bal.remove_node("b")
    assert "b" not in bal
    assert len(bal) == 2
    assert {bal.pick("m") for _ in range(6)} == {"a", "c"}
    assert "b" not in bal.picks()
    bal.remove_node("b")  # unknown ids are ignored
    bal.remove_node("a")
    bal.remove_node("c")
    assert bal.pick("m") is None
    assert not bal.serves("m")
    assert bal.picks() == {}


def test_readded_node_starts_fresh(make: MakeBalancer) -> None:
    bal = three(make("latency"))
    bal.request_started("b")
    bal.request_finished("b", 100.0)
    bal.request_started("b")
    bal.remove_node("b")
    add(bal, "b", ("m", "n"))
    assert bal.in_flight("b") == 0
    assert bal.ttfb_ewma("b") is None
    assert bal.picks()["b"] == 0
    assert bal.pick("n") == "b"


def test_many_nodes_and_slot_reuse(make: MakeBalancer) -> None:
    bal = make("round_robin")
    for i in range(100):
        add(bal, f"n{i}")
    for i in range(0, 100, 2):
        bal.remove_node(f"n{i}")
    for i in range(100, 130):
        add(bal, f"n{i}")
    expected = {f"n{i}" for i in range(1, 100, 2)} | {f"n{i}" for i in range(100, 130)}
    assert {bal.pick("m") for _ in range(len(expected))} == expected


# --- counters -------------------------------------------------------------------------------


def test_request_counters(make: MakeBalancer) -> None:
    bal = make()
    add(bal, "a")
    assert bal.in_flight("a") == 0
    bal.request_started("a")
    bal.request_started("a")
    assert bal.in_flight("a") == 2
    bal.request_finished("a", 12.5)
    assert bal.in_flight("a") == 1
    bal.request_finished("a", None)
    bal.request_finished("a", None)  # never below zero
    assert bal.in_flight("a") == 0
    # Unknown nodes (e.g. removed mid-request) are ignored.
    bal.request_started("zz")
    bal.request_finished("zz", 1.0)
    assert bal.in_flight("zz") == 0


def test_heartbeat_keeps_counters(make: MakeBalancer) -> None:
    bal = make()
    add(bal, "a")
    assert bal.pick("m") == "a"
    bal.request_started("a")
    bal.request_finished("a", 40.0)
    bal.request_started("a")
    add(bal, "a", ("m", "n"), cpu=50.0)
    assert bal.in_flight("a") == 1
    assert bal.ttfb_ewma("a") == 40.0
    assert bal.picks() == {"a": 1}


def test_picks_counts_only_successful_picks(make: MakeBalancer) -> None:
    bal = three(make("round_robin"), max_concurrency=1)
    start(bal, 3)
    assert bal.pick("m") is None
    assert bal.picks() == {"a": 1, "b": 1, "c": 1}


# --- load score (shared helper) -------------------------------------------------------------


def test_load_score_weights_and_renormalisation() -> None:
    assert load_score(None, None, None, None) == 0.0
    assert load_score(50.0, 50.0, 50.0, None) == pytest.approx(50.0)
    assert load_score(100.0, 0.0, 0.0, None) == pytest.approx(40.0)
    # No GPU: cpu/memory weights renormalised to 4/7 and 3/7.
    assert load_score(70.0, 0.0, None, None) == pytest.approx(40.0)
    assert load_score(None, 20.0, None, None) == pytest.approx(20.0)
    # GPU utilisation unknown: GPU memory stands in.
    assert load_score(0.0, 0.0, None, 100.0) == pytest.approx(30.0)
    assert load_score(float("nan"), 10.0, float("inf"), None) == pytest.approx(10.0)


# --- facade ---------------------------------------------------------------------------------


def test_facade_balancer_is_the_selected_implementation() -> None:
    bal = facade.Balancer("round_robin")
    assert bal.implementation == facade.IMPLEMENTATION
    assert bal.algorithm == "round_robin"
    assert facade.make_balancer().implementation == facade.IMPLEMENTATION


def test_facade_logs_implementation_once() -> None:
    code = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stdout,\n"
        "                    format='%(name)s %(message)s')\n"
        "from routercore.balancer import IMPLEMENTATION, Balancer, make_balancer\n"
        "Balancer(); Balancer('latency'); make_balancer('round_robin')\n"
        "print('selected', IMPLEMENTATION)\n"
    )
    out = run_python(code, {})
    selected = out.split("selected ", 1)[1].strip()
    lines = [line for line in out.splitlines() if line.startswith("routercore.balancer ")]
    assert len(lines) == 1
    assert f"implementation={selected} algorithm=least_loaded" in lines[0]


PROBE = (
    "from routercore import balancer as b\n"
    "print('impl', b.IMPLEMENTATION, b.COMPILED_AVAILABLE, b.Balancer().implementation)\n"
)


def test_no_extensions_env_forces_the_twin() -> None:
    out = run_python(PROBE, {"LLM_ROUTER_NO_EXTENSIONS": "1"})
    assert "impl python False python" in out


def test_no_extensions_wins_over_require() -> None:
    out = run_python(PROBE, {"LLM_ROUTER_NO_EXTENSIONS": "1", "LLM_ROUTER_REQUIRE_EXTENSIONS": "1"})
    assert "impl python False python" in out


@pytest.mark.skipif(not facade.COMPILED_AVAILABLE, reason="compiled balancer not built")
def test_compiled_module_is_preferred_when_built() -> None:
    out = run_python(PROBE, {})
    assert "impl cython True cython" in out


def test_require_extensions_fails_loudly_without_the_build() -> None:
    # Hide the built module by making its import fail, as a missing .so would.
    code = (
        "import sys\n"
        "sys.modules['routercore._balancer'] = None\n"
        "try:\n"
        "    import routercore.balancer\n"
        "except ImportError as exc:\n"
        "    print('ImportError', exc)\n"
        "else:\n"
        "    print('imported')\n"
    )
    out = run_python(code, {"LLM_ROUTER_REQUIRE_EXTENSIONS": "1"})
    assert "ImportError LLM_ROUTER_REQUIRE_EXTENSIONS=1" in out
    # Without the requirement the same missing build silently falls back to the twin.
    fallback = code.replace(
        "print('imported')", "print('impl', routercore.balancer.IMPLEMENTATION)"
    )
    assert "impl python" in run_python(fallback, {})


def test_cython_unavailable_when_not_loaded() -> None:
    code = (
        "from routercore import balancer as b\n"
        "try:\n"
        "    b.make_balancer('least_loaded', 'cython')\n"
        "except ImportError as exc:\n"
        "    print('ImportError', exc)\n"
    )
    out = run_python(code, {"LLM_ROUTER_NO_EXTENSIONS": "1"})
    assert "ImportError cython balancer unavailable: LLM_ROUTER_NO_EXTENSIONS=1" in out
