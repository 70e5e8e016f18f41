"""The real llama.cpp runtime for the tests that run behind it (the runtime itself, its command
line and its model are routercore.bench.llama's, shared with the affinity benchmark)."""

from __future__ import annotations

import os

import pytest

from routercore.bench import llama


def llama_python() -> str:
    """The runtime venv's python; skips locally without one, fails in CI (nothing may skip)."""
    path = llama.runtime_python()
    if not path:
        if os.environ.get("CI") == "true":
            pytest.fail("CI runs the llama.cpp tests: scripts/test.sh sets LLM_ROUTER_LLAMA_PYTHON")
        pytest.skip("no llama.cpp runtime: run scripts/test.sh or set LLM_ROUTER_LLAMA_PYTHON")
    return path
