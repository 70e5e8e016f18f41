"""The release installs: the sdist builds with and without a C compiler and installs in a fresh
venv, and the Linux bundle installs offline and runs a router that answers /healthz."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import orjson
import pytest

from routercore.testing.processes import free_port
from tests.support.release import VERSION, Release, clean_env, run

pytestmark = pytest.mark.release


def balancer_of(python: Path) -> str:
    """Which balancer an installed router uses: "cython" (compiled) or "python" (the twin).

    python -I: the checkout (the current directory) must not stand in for what was installed.
    """
    code = "from routercore.balancer import IMPLEMENTATION; print(IMPLEMENTATION)"
    return run([str(python), "-I", "-c", code], env=clean_env()).stdout.strip()


def build_from_sdist(release: Release, out: Path, **env: str) -> tuple[Path, str]:
    """`pip wheel` the sdist with this interpreter's build tools; the wheel and pip's log."""
    proc = run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v",
         "-w", str(out), str(release.sdist)],
        env=clean_env(**env),
    )  # fmt: skip
    (wheel,) = out.glob("llm_router-*.whl")
    return wheel, proc.stdout + proc.stderr


def test_sdist_builds_with_a_compiler_and_without_one(release: Release, tmp_path: Path) -> None:
    with_cc, _ = build_from_sdist(release, tmp_path / "cc")
    assert [n for n in zipfile.ZipFile(with_cc).namelist() if n.endswith(".so")]
    # CC=false: every compile fails, as on a machine without gcc; the twin takes over.
    without, log = build_from_sdist(release, tmp_path / "nocc", CC="false")
    assert not [n for n in zipfile.ZipFile(without).namelist() if n.endswith(".so")]
    assert "C extension not built" in log
    assert "routercore/_balancer_py.py" in zipfile.ZipFile(without).namelist()


def venv(path: Path) -> Path:
    run([sys.executable, "-m", "venv", str(path)], env=clean_env())
    return path / "bin" / "python"


def test_sdist_installs_in_a_fresh_venv_offline(
    release: Release, linux_bundle: Path, tmp_path: Path
) -> None:
    python = venv(tmp_path / "venv")
    # Build isolation takes setuptools, wheel and Cython from the bundle's wheelhouse too.
    run(
        [str(python), "-m", "pip", "--isolated", "install", "-q", "--no-cache-dir", "--no-index",
         "--find-links", str(linux_bundle / "wheelhouse"), str(release.sdist)],
        env=clean_env(), timeout=600,
    )  # fmt: skip
    assert balancer_of(python) == "cython"
    out = run([str(tmp_path / "venv" / "bin" / "llm-router"), "--version"], env=clean_env())
    assert out.stdout.strip() == f"llm-router {VERSION}"


def test_bundle_builds_from_source_without_a_compiler(linux_bundle: Path, tmp_path: Path) -> None:
    prefix = tmp_path / "from-source"
    env = clean_env(LLM_ROUTER_FROM_SOURCE="1", CC="false")
    run([str(linux_bundle / "install.sh"), str(prefix)], env=env, timeout=600)
    assert balancer_of(prefix / "bin" / "python") == "python"
    agent = run([str(prefix / "bin" / "llm-router-agent"), "--version"], env=clean_env())
    assert agent.stdout.strip() == f"llm-router-agent {VERSION}"


def test_linux_bundle_installs_offline_and_the_router_answers_healthz(
    linux_bundle: Path, tmp_path: Path
) -> None:
    prefix = tmp_path / "opt" / "llm-router"
    proc = run([str(linux_bundle / "install.sh"), str(prefix)], env=clean_env(), timeout=600)
    assert f"installed in {prefix}" in proc.stdout
    # this interpreter is CPython 3.11: the compiled wheel was chosen over the pure one
    assert balancer_of(prefix / "bin" / "python") == "cython"
    port = free_port()
    log = tmp_path / "router.log"
    with log.open("wb") as out:
        router = subprocess.Popen(
            [str(prefix / "bin" / "llm-router"), "serve", "--host", "127.0.0.1", "--port",
             str(port), "--db", str(tmp_path / "router.db")],
            stdout=out, stderr=subprocess.STDOUT, env=clean_env(), cwd=tmp_path,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while f"listening on http://127.0.0.1:{port}" not in log.read_text(errors="replace"):
            assert router.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as resp:
            assert resp.status == 200
            assert orjson.loads(resp.read()) == {"status": "ok"}
    finally:
        router.terminate()
        assert router.wait(30) == 0, log.read_text()


def test_install_sh_refuses_a_missing_prefix(linux_bundle: Path) -> None:
    proc = subprocess.run(
        [str(linux_bundle / "install.sh")], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 2 and "usage:" in proc.stderr
