"""GPU figures from recorded nvidia-smi output; absent nvidia-smi gives nulls; psutil figures."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from agent.metrics import (
    NVIDIA_SMI_ARGS,
    MetricsCollector,
    parse_nvidia_smi,
    query_gpus,
    summarize_gpus,
    system_info,
)

# Output in the shape nvidia-smi prints for `--query-gpu=utilization.gpu,memory.used,
# memory.total,name --format=csv,noheader,nounits`: two RTX 4090s, a T4 whose driver reports
# utilization as [N/A], and an old card that supports none of the fields.
TWO_4090 = "35, 10240, 24564, NVIDIA GeForce RTX 4090\n0, 3, 24564, NVIDIA GeForce RTX 4090\n"
T4_NA = "[N/A], 1024, 15360, Tesla T4\n"
NOT_SUPPORTED = "[Not Supported], [Not Supported], [Not Supported], NVIDIA GeForce GT 710\n"
GIB_MIB = 1024 * 1024


def test_parse_two_gpus() -> None:
    samples = parse_nvidia_smi(TWO_4090)
    assert [s.name for s in samples] == ["NVIDIA GeForce RTX 4090"] * 2
    assert samples[0].utilization == 35 and samples[0].memory_used_mib == 10240
    s = summarize_gpus(samples)
    assert s.usage == 17.5
    assert s.memory_usage == round(100 * 10243 / (2 * 24564), 1)
    assert s.devices == [
        {"model": "NVIDIA GeForce RTX 4090", "count": 2, "memory_bytes": 24564 * GIB_MIB}
    ]


def test_not_available_fields_become_none() -> None:
    s = summarize_gpus(parse_nvidia_smi(T4_NA))
    assert s.usage is None
    assert s.memory_usage == round(100 * 1024 / 15360, 1)
    n = summarize_gpus(parse_nvidia_smi(NOT_SUPPORTED))
    assert (n.usage, n.memory_usage) == (None, None)
    assert n.devices == [{"model": "NVIDIA GeForce GT 710", "count": 1, "memory_bytes": 0}]


def test_garbage_lines_are_skipped() -> None:
    assert parse_nvidia_smi("\nNVIDIA-SMI has failed because it couldn't communicate\n") == []
    assert summarize_gpus([]).usage is None


def test_no_nvidia_smi_is_null_not_error() -> None:
    calls: list[Sequence[str]] = []

    def runner(args: Sequence[str]) -> str:
        calls.append(args)
        return ""

    s = query_gpus(runner=runner, which=lambda _n: None)
    assert (s.usage, s.memory_usage, s.devices) == (None, None, [])
    assert calls == []


def test_runner_gets_query_args_and_failure_is_null() -> None:
    seen: list[Sequence[str]] = []

    def runner(args: Sequence[str]) -> str:
        seen.append(args)
        return TWO_4090

    assert query_gpus(runner=runner, which=lambda _n: "/usr/bin/nvidia-smi").usage == 17.5
    assert list(seen[0]) == ["/usr/bin/nvidia-smi", *NVIDIA_SMI_ARGS]

    def broken(args: Sequence[str]) -> str:
        raise subprocess.CalledProcessError(9, list(args))

    assert query_gpus(runner=broken, which=lambda _n: "/x").usage is None


def test_collector_uses_psutil_and_gpu_query() -> None:
    c = MetricsCollector(gpu_query=lambda: summarize_gpus(parse_nvidia_smi(T4_NA)))
    sample = c.sample()
    assert 0.0 <= sample.cpu_usage <= 100.0
    assert 0.0 < sample.memory_usage <= 100.0
    assert sample.gpu_usage is None and sample.gpu_memory_usage is not None
    assert c.gpu_devices()[0]["model"] == "Tesla T4"


def test_system_info_shape() -> None:
    info = system_info()
    assert set(info) == {"os", "cpu_model", "cpu_count", "memory_bytes"}
    assert isinstance(info["cpu_count"], int) and info["cpu_count"] >= 1
    assert isinstance(info["memory_bytes"], int) and info["memory_bytes"] > 0


@pytest.mark.skipif(sys.platform == "win32", reason="a POSIX shell script stands in")
def test_real_subprocess_with_a_stand_in_nvidia_smi(tmp_path: Path) -> None:
    """The default runner really executes the binary: a script stands in for nvidia-smi."""
    args_file = tmp_path / "args"
    script = tmp_path / "nvidia-smi"
    script.write_text(f'#!/bin/sh\necho "$@" > {args_file}\nprintf "{T4_NA.strip()}\\n"\n')
    script.chmod(0o755)
    summary = query_gpus(which=lambda _n: str(script))
    assert summary.devices[0]["model"] == "Tesla T4"
    assert args_file.read_text().split() == list(NVIDIA_SMI_ARGS)
    failing = tmp_path / "broken-smi"
    failing.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    failing.chmod(0o755)
    assert query_gpus(which=lambda _n: str(failing)).usage is None
