"""Load figures for heartbeats: psutil CPU/memory, and NVIDIA GPUs through `nvidia-smi` if present.

A machine without nvidia-smi (or where it fails) simply reports GPU figures as null.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import psutil

log = logging.getLogger(__name__)

# Name last: it is the only field that could contain a comma.
NVIDIA_SMI_QUERY = "utilization.gpu,memory.used,memory.total,name"
NVIDIA_SMI_ARGS = (f"--query-gpu={NVIDIA_SMI_QUERY}", "--format=csv,noheader,nounits")
MIB = 1024 * 1024


@dataclass(frozen=True)
class GpuSample:
    """One GPU as nvidia-smi reported it; None where the driver said N/A."""

    name: str
    utilization: float | None  # percent
    memory_used_mib: float | None
    memory_total_mib: float | None


@dataclass(frozen=True)
class GpuSummary:
    usage: float | None  # mean utilization over GPUs, percent
    memory_usage: float | None  # used / total over all GPUs, percent
    devices: list[dict[str, object]]  # registration's gpu_devices: {model, count, memory_bytes}


def _number(text: str) -> float | None:
    text = text.strip()
    if not text or text.startswith("[") or text.upper() in ("N/A", "NOT SUPPORTED"):
        return None
    try:
        return float(text)
    except ValueError:
        return None


def parse_nvidia_smi(output: str) -> list[GpuSample]:
    """Parse `nvidia-smi --query-gpu=<NVIDIA_SMI_QUERY> --format=csv,noheader,nounits` output."""
    samples = []
    for line in output.splitlines():
        if not line.strip():
            continue
        fields = line.split(",", 3)
        if len(fields) != 4:
            log.debug("nvidia_smi_unparsed line=%r", line)
            continue
        util, used, total, name = fields
        samples.append(GpuSample(name.strip(), _number(util), _number(used), _number(total)))
    return samples


def summarize_gpus(samples: Sequence[GpuSample]) -> GpuSummary:
    """Fold per-GPU samples into the heartbeat's two percentages and the device list."""
    utils = [s.utilization for s in samples if s.utilization is not None]
    usage = round(sum(utils) / len(utils), 1) if utils else None
    pairs = [
        (s.memory_used_mib, s.memory_total_mib)
        for s in samples
        if s.memory_used_mib is not None and s.memory_total_mib
    ]
    total = sum(t for _, t in pairs if t)
    memory_usage = round(100.0 * sum(u for u, _ in pairs if u) / total, 1) if total else None
    grouped: dict[tuple[str, int], int] = {}
    for s in samples:
        key = (s.name, int((s.memory_total_mib or 0) * MIB))
        grouped[key] = grouped.get(key, 0) + 1
    devices: list[dict[str, object]] = [
        {"model": name, "count": count, "memory_bytes": mem}
        for (name, mem), count in grouped.items()
    ]
    return GpuSummary(usage, memory_usage, devices)


Runner = Callable[[Sequence[str]], str]


def run_nvidia_smi(args: Sequence[str]) -> str:
    """Run nvidia-smi and return stdout; raises OSError/CalledProcessError/TimeoutExpired."""
    flags = getattr(subprocess, "CREATE_NO_WINDOW", 0) if sys.platform == "win32" else 0
    done = subprocess.run(
        list(args),
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
        creationflags=flags,
    )
    return done.stdout


def query_gpus(
    runner: Runner = run_nvidia_smi, which: Callable[[str], str | None] = shutil.which
) -> GpuSummary:
    """GPU figures, or all-null when there is no nvidia-smi or it fails (not an error)."""
    exe = which("nvidia-smi")
    if exe is None:
        return GpuSummary(None, None, [])
    try:
        return summarize_gpus(parse_nvidia_smi(runner([exe, *NVIDIA_SMI_ARGS])))
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("nvidia_smi_failed error=%s", exc)
        return GpuSummary(None, None, [])


@dataclass(frozen=True)
class LoadSample:
    cpu_usage: float
    memory_usage: float
    gpu_usage: float | None
    gpu_memory_usage: float | None


class MetricsCollector:
    """Samples load; psutil's CPU figure is the average since the previous call, so keep one."""

    def __init__(self, gpu_query: Callable[[], GpuSummary] = query_gpus) -> None:
        self._gpu_query = gpu_query
        psutil.cpu_percent(interval=None)  # prime: the first call always returns 0.0

    def sample(self) -> LoadSample:
        gpu = self._gpu_query()
        return LoadSample(
            cpu_usage=float(psutil.cpu_percent(interval=None)),
            memory_usage=float(psutil.virtual_memory().percent),
            gpu_usage=gpu.usage,
            gpu_memory_usage=gpu.memory_usage,
        )

    def gpu_devices(self) -> list[dict[str, object]]:
        return self._gpu_query().devices


def cpu_model() -> str:
    """A readable CPU name: /proc/cpuinfo on Linux, platform.processor() elsewhere."""
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    if line.lower().startswith("model name"):
                        return line.split(":", 1)[1].strip()
        except OSError:
            pass
    return platform.processor() or platform.machine() or "unknown"


def system_info() -> dict[str, object]:
    """Registration's `system` object."""
    return {
        "os": f"{platform.system()} {platform.release()}".strip(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count() or 1,
        "memory_bytes": int(psutil.virtual_memory().total),
    }


def total_memory_bytes() -> int:
    return int(psutil.virtual_memory().total)
