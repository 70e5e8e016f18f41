#!/usr/bin/env bash
# Installs everything the test suite needs into .venv (and Debian's chromium when missing and
# we are root), builds the Cython extensions, then runs the whole suite with the compiled
# modules required, and the balancer, wire, response-parser and HTTP fuzz suites once more with
# the pure-Python twins forced.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip setuptools wheel Cython
LLM_ROUTER_REQUIRE_EXTENSIONS=1 .venv/bin/python -m pip install -q -e '.[dev]'

# Debian packages the tests use: chromium (browser tests; no browser downloads are possible
# here), wrk and nginx (benchmark smoke test). Installed when missing and we are root.
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
# Release tests (issue 14) and the real tray/settings window: msitools' wixl/msiinfo, unzip,
# and Xvfb (the tests start their own display).
command -v wixl >/dev/null 2>&1 || need+=(wixl)
command -v msiinfo >/dev/null 2>&1 || need+=(msitools)
command -v unzip >/dev/null 2>&1 || need+=(unzip)
command -v Xvfb >/dev/null 2>&1 || need+=(xvfb)
# openssl makes the test CAs (the fake HTTPS cloud provider, the agent's HTTPS downloads).
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if [ ${#need[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}") >/dev/null
fi
if [ "${CI:-}" = true ]; then
  # In CI nothing may be skipped for a missing tool.
  for tool in chromium wrk wixl msiinfo unzip Xvfb openssl; do
    command -v "$tool" >/dev/null 2>&1 || { echo "CI needs $tool and could not install it" >&2; exit 1; }
  done
fi

# Style and types first (versions pinned in pyproject's dev extra; mypy's files are there too).
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy

# The real llama.cpp runtime the node-health tests run behind: its own cached virtualenv
# outside the project's (~6 minutes to build the first time on 2 cores, then reused).
LLM_ROUTER_LLAMA_PYTHON=$(./scripts/llama_runtime.sh)
export LLM_ROUTER_LLAMA_PYTHON

export LLM_ROUTER_REQUIRE_EXTENSIONS=1
.venv/bin/python -m pytest "$@"
# The balancer, wire and response-parser suites, and the HTTP fuzz suite, once more with the
# twins forced (the compiled cases have nothing to run on): the fuzz suite then drives the
# router's twin wire.
LLM_ROUTER_NO_EXTENSIONS=1 LLM_ROUTER_REQUIRE_EXTENSIONS=0 .venv/bin/python -m pytest -q -p no:cacheprovider \
  -k "not cython and not compiled_module_is_preferred" tests/unit/test_balancer.py \
  tests/unit/test_wire.py tests/unit/test_upstream_oracle.py tests/unit/test_upstream_parser.py \
  tests/fuzz/test_fuzz_http.py
