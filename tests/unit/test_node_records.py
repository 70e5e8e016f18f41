"""Registration field checks and the repair of damaged stored node records (issue 20, 6 and 8)."""

from __future__ import annotations

import pytest

from routercore import validate as v
from routercore.errors import ClientError
from routercore.node import Node, NodeStats, repair


def test_model_lists_keep_the_first_of_each_name_in_order():
    names = [f"m{i % 1000}" for i in range(4000)]
    assert v.get_str_list({"models": names}, "models") == [f"m{i}" for i in range(1000)]


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ({"count": "two"}, "gpu_devices[0].count"),
        ({"count": True}, "gpu_devices[0].count"),
        ({"count": 2000}, "gpu_devices[0].count"),
        ({"model": 5}, "gpu_devices[0].model"),
        ({"memory_bytes": -5}, "gpu_devices[0].memory_bytes"),
        ({"vendor": ["x"]}, "gpu_devices[0].vendor"),
    ],
)
def test_gpu_devices_are_checked_key_by_key(value, field):
    with pytest.raises(ClientError) as err:
        v.get_object_list({"gpu_devices": [value]}, "gpu_devices", v.GPU_DEVICE, max_items=4)
    assert field in err.value.message


def test_agent_shaped_objects_pass():
    devices = [{"model": "RTX 4090", "count": 2, "memory_bytes": 24 << 30, "index": 0}]
    assert v.get_object_list({"g": devices}, "g", v.GPU_DEVICE, max_items=4) == devices
    system = {"os": "Linux 6.1", "cpu_model": "EPYC", "cpu_count": 64, "memory_bytes": 1 << 40}
    assert v.get_object({"system": system}, "system", v.SYSTEM) == system


def test_repair_resets_each_wrongly_typed_field_and_names_it():
    node = Node(id="n", machine_name="m", ip_address="127.0.0.1")
    node.gpu_devices = [{"count": "two"}]
    node.system = {"os": {"nested": 1}}
    node.models = ["ok", 3]  # type: ignore[list-item]
    node.max_concurrency = "lots"  # type: ignore[assignment]
    node.stats = NodeStats(total_requests="x")  # type: ignore[arg-type]
    node.runtime_port = 70000
    bad = repair(node)
    assert set(bad) == {"gpu_devices", "system", "models", "max_concurrency", "stats",
                        "runtime_port"}  # fmt: skip
    assert (node.gpu_devices, node.system, node.models, node.max_concurrency) == ([], {}, [], None)
    assert node.enabled is False  # no usable port: nothing is sent there


def test_repair_leaves_a_sound_record_alone():
    node = Node(id="n", machine_name="m", ip_address="127.0.0.1", models=["a"], tags=["t"])
    node.gpu_devices = [{"model": "g", "count": 1, "memory_bytes": None}]
    assert repair(node) == []
    assert node.models == ["a"] and node.enabled
