"""The Locust scenario runs headless against a local router with fake nodes, without failures."""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, join

# Not imported here: importing locust monkey-patches the process with gevent.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("locust") is None, reason="locust not installed"),
]


def test_locust_headless_run_has_requests_and_no_failures(router_factory, fake_nodes, tmp_path):
    router = router_factory()
    join(router, fake_nodes, 2)
    prefix = tmp_path / "run"
    env = {
        **os.environ,
        "LLM_ROUTER_MODEL": "llama3",
        "LLM_ROUTER_THINK_MIN": "0.05",
        "LLM_ROUTER_THINK_MAX": "0.2",
    }
    cmd = [
        sys.executable, "-m", "locust", "-f", str(ROOT / "loadtests" / "locustfile.py"),
        "--headless", "-H", router.url, "-u", "12", "-r", "12", "-t", "5s",
        "--csv", str(prefix), "--only-summary", "--stop-timeout", "5",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, cwd=str(tmp_path), capture_output=True, text=True,
                          timeout=90)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]

    rows = list(csv.DictReader(Path(f"{prefix}_stats.csv").read_text().splitlines()))
    by_name = {(r["Type"], r["Name"]): r for r in rows}
    total = by_name[("", "Aggregated")]
    assert int(total["Request Count"]) > 0
    assert int(total["Failure Count"]) == 0, Path(f"{prefix}_failures.csv").read_text()
    names = {name for (_type, name) in by_name}
    # Every user class ran: OpenAI chat, Ollama generate, model listing.
    assert names & {"openai chat", "openai chat stream"}
    assert names & {"ollama generate", "ollama generate (no stream)"}
    assert names & {"openai models", "ollama tags"}
    # Streamed requests also report their time to first token.
    assert any(t == "TTFT" for (t, _name) in by_name)
