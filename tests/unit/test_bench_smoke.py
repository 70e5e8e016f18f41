"""Smoke run of `python -m routercore.bench --quick`: every section runs and reports sane shapes.

Correctness only: no assertion about speed (numbers depend on the machine and its load).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(420),
    pytest.mark.skipif(shutil.which("wrk") is None, reason="the benchmark needs wrk"),
]


def test_quick_benchmark_runs_every_section(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "routercore.bench", "--quick", "--json", str(out),
         "--keep", str(tmp_path / "work")],
        cwd=str(ROOT), capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    logs = "\n".join(
        p.read_text(errors="replace")[-1500:] for p in (tmp_path / "work").glob("*.log")
    )
    assert proc.returncode == 0, proc.stderr[-3000:] + logs
    r = json.loads(out.read_text())

    tp = r["throughput"]
    for name in ("direct", "router_default", "router_default_nolog", "router", "bare"):
        assert tp[name]["rps"] > 0 and tp[name]["errors"] == 0, (name, tp[name])
    assert tp["router"]["cpu_us_per_req"] > 0 and tp["router_default"]["cpu_us_per_req"] > 0
    with_nginx = bool(shutil.which("nginx") or Path("/usr/sbin/nginx").exists())
    if with_nginx:
        assert tp["nginx"]["rps"] > 0 and tp["nginx"]["errors"] == 0
    for name in ("router_default", "router_default_nolog", "router"):  # rows of the same run
        ratio = r["ratios"][name]
        assert ratio["bare"] == round(tp[name]["rps"] / tp["bare"]["rps"], 3)
        assert (ratio["nginx"] is not None) == with_nginx

    c1 = r["latency_c1"]  # one connection: router (both configurations) against nginx
    for name in ("direct", "router_default", "router", *(["nginx"] if with_nginx else [])):
        assert c1[name]["errors"] == 0 and 0 < c1[name]["p50_ms"] <= c1[name]["p99_ms"], name

    lat = r["latency_at_half_max"]
    for name in ("direct", "router_default", "router", "bare"):
        row = lat[name]
        assert row["errors"] == 0 and row["achieved_rps"] > 0
        assert 0 < row["p50_ms"] <= row["p99_ms"]

    for name in ("direct", "router", *(["nginx"] if with_nginx else [])):
        st = r["streams"][name]
        assert st["streams"] > 0 and st["chunks"] > 0
        assert 0 < st["ttft_p50_ms"] <= st["ttft_p99_ms"]

    tr = r["translated"]
    for name in ("native", "translated"):
        st = tr[name]
        assert st["streams"] > 0 and st["chunks"] >= st["streams"] * 10, (name, st)
        assert 0 < st["ttft_p50_ms"] <= st["ttft_p99_ms"]
    assert tr["chunk_us"] > 0

    held = r["concurrent_streams"]
    assert [h["streams"] for h in held] == [100, 1000, 2000]
    assert all(h["rss_mb"] > 0 and h["lost"] == 0 for h in held)

    many = r["many_streams"]  # all at once through one router, each read to its end
    assert many["streams"] == many["requested"] == 600
    assert many["complete"] == 600 and many["errors"] == 0, many
    assert 0 < many["peak_open"] <= 600  # all at once unless opening them outlasted a stream
    assert many["router_peak_rss_mb"] >= many["router_idle_rss_mb"] > 0

    sizes = [b["nodes"] for b in r["balancer"]]
    assert sizes == [16, 256, 1000]
    assert all(b["python_ns"] > 0 for b in r["balancer"])

    relay = r["relay"]
    for name in ("router", "router_relay"):
        st, tp_row = relay["streams"][name], relay["throughput"][name]
        assert st["streams"] > 0 and st["chunks"] > 0 and st["ttft_p50_ms"] > 0
        assert tp_row["rps"] > 0 and tp_row["errors"] == 0 and tp_row["cpu_us_per_req"] > 0
    assert relay["relay_cpu_us_per_stream"] > 0
    assert "| router -> relay -> node |" in proc.stdout and "Relay adds:" in proc.stdout

    # Prefix affinity on two real llama.cpp nodes (short conversations in --quick).
    aff = r["affinity"]
    for mode in ("with", "without"):
        m = aff[mode]
        assert m["follow_ups"] == 2 and 0 < m["follow_up_min_s"] <= m["follow_up_max_s"]
        assert sum(m["requests_per_node"].values()) == 4
    assert aff["with"]["conversations_on_one_node"] == aff["with"]["conversations"] == 2
    assert aff["follow_up_ratio"] > 0
    assert aff["pick"]["python"]["hit_ns"] > 0 and aff["pick"]["prefix_hash_us"] > 0
    assert "Prefix affinity on two llama.cpp nodes" in proc.stdout

    names = {t["target"] for t in r["targets"]}
    # The access log's cost: the default configuration against itself with only the log off,
    # which is measured for throughput alone.
    assert any(n.startswith("req/s the access log costs") for n in names)
    assert "router_default_nolog" not in c1 and "router_default_nolog" not in lat
    assert len(names) >= 6 and all(isinstance(t["met"], bool) for t in r["targets"])
    # The table went to stdout, with the target verdicts.
    assert "| through the router, default configuration |" in proc.stdout
    assert "| through the router, tuned |" in proc.stdout and "Targets:" in proc.stdout
    assert "Streams at once through one router process" in proc.stdout
