"""The Locust scenario runs headless against a local router with fake nodes, without failures."""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT
from tests.support.routers import join

# Not imported here: importing locust monkey-patches the process with gevent.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("locust") is None, reason="locust not installed"),
]


def _run_locust(url: str, tmp_path: Path, *args: str) -> dict[tuple[str, str], dict[str, str]]:
    """A short headless run against `url`; its stats rows by (type, name)."""
    prefix = tmp_path / "run"
    env = {
        **os.environ,
        "LLM_ROUTER_MODEL": "llama3",
        "LLM_ROUTER_THINK_MIN": "0.05",
        "LLM_ROUTER_THINK_MAX": "0.2",
    }
    cmd = [
        sys.executable, "-m", "locust", "-f", str(ROOT / "loadtests" / "locustfile.py"),
        "--headless", "-H", url, "-t", "5s", "--csv", str(prefix), "--only-summary",
        "--stop-timeout", "5", *args,
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, cwd=str(tmp_path), capture_output=True, text=True,
                          timeout=90)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(csv.DictReader(Path(f"{prefix}_stats.csv").read_text().splitlines()))
    by_name = {(r["Type"], r["Name"]): r for r in rows}
    total = by_name[("", "Aggregated")]
    assert int(total["Request Count"]) > 0
    assert int(total["Failure Count"]) == 0, Path(f"{prefix}_failures.csv").read_text()
    return by_name


def test_locust_headless_run_has_requests_and_no_failures(router_factory, fake_nodes, tmp_path):
    router = router_factory()
    join(router, fake_nodes, 2)
    by_name = _run_locust(router.url, tmp_path, "-u", "12", "-r", "12")
    names = {name for (_type, name) in by_name}
    # Every user class ran: OpenAI chat, Ollama generate, model listing.
    assert names & {"openai chat", "openai chat stream"}
    assert names & {"ollama generate", "ollama generate (no stream)"}
    assert names & {"openai models", "ollama tags"}
    # Streamed requests also report their time to first token.
    assert any(t == "TTFT" for (t, _name) in by_name)


def test_locust_streamed_rows_time_the_whole_stream(router_factory, fake_nodes, tmp_path):
    """Locust stops a stream=True request's clock at the response head, which the fake node
    sends with the first token; the streamed rows must cover every chunk after it. The node
    waits DELAY between chunks, so no stream can take less than (TOKENS - 1) * DELAY: the
    fastest one (Min, an exact figure in Locust's CSV) shows it. Behaviour, not speed."""
    tokens, delay = 4, 0.15
    router = router_factory()
    join(router, fake_nodes, 1, tokens=tokens, token_delay=delay)
    # Tags leave every user class a task (a class without one fails the run).
    by_name = _run_locust(router.url, tmp_path, "-u", "6", "-r", "6", "--tags", "stream", "models")
    floor_ms = (tokens - 1) * delay * 1000
    for name in ("openai chat stream", "ollama generate"):
        row, ttft = by_name[("POST", name)], by_name[("TTFT", name)]
        assert int(row["Request Count"]) > 0, name
        assert float(row["Min Response Time"]) >= floor_ms, (name, row)
        # Each stream's first line comes before its end: the TTFT row is the shorter one.
        assert float(ttft["Min Response Time"]) < float(row["Min Response Time"]), (name, ttft)
