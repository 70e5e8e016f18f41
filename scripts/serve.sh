#!/usr/bin/env bash
# Installs the router into .venv and starts it on port 8080 with its embedded SQLite default.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q .
exec .venv/bin/llm-router serve "$@"
