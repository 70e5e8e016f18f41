#!/bin/sh
# Installs LLM Router @VERSION@ offline into a new virtualenv at PREFIX, from the wheelhouse
# beside this script (pip install --no-index --find-links: nothing is downloaded).
#
#   ./install.sh PREFIX              # then: PREFIX/bin/llm-router serve
#   PYTHON=python3.12 ./install.sh PREFIX
#   LLM_ROUTER_FROM_SOURCE=1 ./install.sh PREFIX
#
# CPython 3.11 gets the compiled balancer wheel; 3.12 and 3.13 get the pure-Python wheel (same
# behaviour, the balancer's pure twin). LLM_ROUTER_FROM_SOURCE=1 builds the bundled sdist instead
# (offline too: setuptools and Cython are in the wheelhouse), compiling the balancer when a C
# compiler and the Python headers are there and falling back to the twin when not.
set -eu

if [ $# -ne 1 ] || [ -z "$1" ]; then
  echo "usage: $0 PREFIX   (installs LLM Router into a virtualenv at PREFIX)" >&2
  exit 2
fi
PREFIX=$1
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-python3}

if ! command -v "$PY" >/dev/null 2>&1; then
  echo "install.sh: $PY not found; install CPython 3.11, 3.12 or 3.13 (or set PYTHON=...)" >&2
  exit 1
fi
version=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
case "$version" in
  3.11|3.12|3.13) ;;
  *) echo "install.sh: $PY is Python $version; this bundle carries wheels for 3.11, 3.12 and 3.13" >&2
     exit 1 ;;
esac

"$PY" -m venv "$PREFIX" || {
  echo "install.sh: could not create a virtualenv (on Debian/Ubuntu: apt install python3-venv)" >&2
  exit 1
}
set -- --no-index --find-links "$HERE/wheelhouse" --disable-pip-version-check
if [ "${LLM_ROUTER_FROM_SOURCE:-0}" = 1 ]; then
  # no cache: a wheel cached from another build (with or without a compiler) must not stand in
  set -- "$@" --no-binary llm-router --no-cache-dir
fi
# --isolated and no config file: only this bundle's wheelhouse is looked at, whatever pip is set to.
PIP_CONFIG_FILE=/dev/null "$PREFIX/bin/python" -m pip --isolated install -q "$@" "llm-router==@VERSION@"
echo "LLM Router @VERSION@ installed in $PREFIX (Python $version)."
echo "Start it with: $PREFIX/bin/llm-router serve"
