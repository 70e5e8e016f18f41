"""Sans-IO parts of models across nodes: placement, size estimate, overrides, NDJSON framing."""

from __future__ import annotations

from typing import Any

import pytest

from routercore.api.models import failure_status
from routercore.deployments import free_memory, rank_nodes, size_from_show
from routercore.model_overrides import ModelOverrides, has_model
from routercore.node import Node, NodeMetrics
from routercore.pulls import LineSplitter

GIB = 1024**3


def node(name: str, *, vram_gib: int = 0, gpu_used: float | None = None, ram_gib: int = 64,
         ram_used: float | None = None, models: tuple[str, ...] = ()) -> Node:  # fmt: skip
    gpus = [{"model": "GPU", "count": 1, "memory_bytes": vram_gib * GIB}] if vram_gib else []
    return Node(
        id=name, machine_name=name, ip_address="10.0.0.1", gpu_devices=gpus,
        system={"memory_bytes": ram_gib * GIB}, models=list(models),
        metrics=NodeMetrics(memory_usage=ram_used, gpu_memory_usage=gpu_used),
    )  # fmt: skip


def names(nodes: list[Node]) -> list[str]:
    return [n.id for n in nodes]


def test_free_memory_from_sizes_and_usage() -> None:
    assert free_memory(node("a", vram_gib=24, gpu_used=25.0, ram_gib=64, ram_used=50.0)) == (
        18 * GIB,
        32 * GIB,
    )
    assert free_memory(node("b", ram_gib=16)) == (None, 16 * GIB)


def test_gpu_nodes_by_free_gpu_memory_first_then_ram() -> None:
    nodes = [
        node("ram-big", ram_gib=512, ram_used=0.0),
        node("gpu-busy", vram_gib=24, gpu_used=90.0),
        node("gpu-free", vram_gib=24, gpu_used=10.0),
        node("ram-small", ram_gib=32, ram_used=0.0),
    ]
    assert names(rank_nodes(nodes, "m", None)) == ["gpu-free", "gpu-busy", "ram-big", "ram-small"]


def test_nodes_that_cannot_fit_are_skipped_unless_they_have_it_already() -> None:
    nodes = [
        node("gpu-small", vram_gib=8, gpu_used=0.0),
        node("gpu-big", vram_gib=48, gpu_used=50.0),
        node("full-but-has-it", ram_gib=8, ram_used=99.0, models=("m:latest",)),
    ]
    assert names(rank_nodes(nodes, "m", 16 * GIB)) == ["full-but-has-it", "gpu-big"]
    assert names(rank_nodes(nodes, "m", None)) == ["full-but-has-it", "gpu-big", "gpu-small"]
    no_ram = Node(id="x", machine_name="x", ip_address="10.0.0.2")
    assert rank_nodes([no_ram], "m", GIB) == [] and rank_nodes([no_ram], "m", None) == [no_ram]


@pytest.mark.parametrize(
    ("show", "expected"),
    [
        ({"model_info": {"general.parameter_count": 8_000_000_000},
          "details": {"quantization_level": "Q4_K_M"}}, int(8e9 * 4.8 / 8 * 1.1)),
        ({"details": {"parameter_size": "7.6B", "quantization_level": "Q8_0"}},
         int(7.6e9 * 8.5 / 8 * 1.1)),
        ({"details": {"parameter_size": "135M"}}, int(135e6 * 16 / 8 * 1.1)),
        ({"details": {"parameter_size": "big"}}, None),
        ({}, None),
        (None, None),
        ("text", None),
    ],
)  # fmt: skip
def test_size_from_show(show: Any, expected: int | None) -> None:
    assert size_from_show(show) == expected


def test_overrides_hold_until_the_node_agrees_or_they_expire() -> None:
    now = [0.0]
    o = ModelOverrides(ttl=10.0, clock=lambda: now[0])
    o.add("n", "new")
    o.remove("n", "old")
    assert o.apply("n", ["old", "base"]) == ["base", "new"]  # a stale heartbeat
    assert o.apply("n", ["base", "new"]) == ["base", "new"]  # the node agrees: overrides end
    assert o.apply("n", ["base", "old"]) == ["base", "old"]  # and its word counts again
    o.remove("n", "x")
    now[0] = 11.0
    assert o.apply("n", ["x"]) == ["x"]  # expired
    assert o.apply("other", ["a"]) == ["a"]
    assert has_model(["llama3:latest"], "llama3") and not has_model(["llama3:8b"], "llama3")


def test_line_splitter_frames_ndjson_across_pieces() -> None:
    s = LineSplitter()
    assert s.feed(b'{"status":"a"}\n{"sta') == [{"status": "a"}]
    assert s.feed(b'tus":"b"}\n\nnot json\n[1]\n{"c":1}') == [{"status": "b"}]
    assert s.feed(b"\n") == [{"c": 1}]
    with pytest.raises(ValueError):
        s.feed(b"x" * (1024 * 1024 + 1))


def test_failure_status() -> None:
    assert failure_status([501, 501]) == 501
    assert failure_status([501, 502]) == 502
    assert failure_status([504]) == 504
