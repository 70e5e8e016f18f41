"""`pip install .` builds the Cython balancer when a compiler exists and still installs without."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support import ROOT


def build_wheel(tmp_path: Path, env_extra: dict[str, str]) -> zipfile.ZipFile:
    src = tmp_path / "src"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".venv",
            ".git",
            "build",
            "dist",
            "*.so",
            "*.c",
            "__pycache__",
            "test-artifacts",
            "*.egg-info",
        ),
    )
    out = tmp_path / "wheels"
    env = {**os.environ, **env_extra}
    env.pop("LLM_ROUTER_REQUIRE_EXTENSIONS", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(src),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    (wheel,) = out.glob("llm_router-*.whl")
    return zipfile.ZipFile(wheel)


@pytest.mark.slow
def test_wheel_has_the_compiled_balancer_and_console_scripts(tmp_path):
    wheel = build_wheel(tmp_path, {})
    names = wheel.namelist()
    for module in ("_balancer", "_prefix_index", "_wire", "_response_parser"):
        assert any(n.startswith(f"routercore/{module}.") and n.endswith(".so") for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = wheel.read(entry_points).decode()
    for script in ("llm-router =", "llm-router-agent =", "llm-router-fakenode ="):
        assert script in text
    assert "routercore/_balancer_py.py" in names and "agent/cli.py" in names
    assert "routercore/_wire_py.py" in names and "routercore/_response_parser_py.py" in names
    for icon in ("tray-online.png", "tray-degraded.png", "tray-offline.png", "llm-router.ico"):
        assert f"agent/icons/{icon}" in names


@pytest.mark.slow
def test_install_without_a_compiler_falls_back_to_the_twin(tmp_path):
    wheel = build_wheel(tmp_path, {"CC": "/nonexistent-cc"})
    names = wheel.namelist()
    assert not any(n.endswith(".so") for n in names)
    target = tmp_path / "site"
    wheel.extractall(target)
    code = (
        "import logging; logging.basicConfig(level=logging.INFO);"
        "from routercore.balancer import IMPLEMENTATION, Balancer;"
        "Balancer('round_robin'); print(IMPLEMENTATION)"
    )
    # -S: no site hooks, so an editable install of the project cannot shadow the wheel.
    env = {**os.environ, "PYTHONPATH": str(target)}
    env.pop("LLM_ROUTER_REQUIRE_EXTENSIONS", None)
    proc = subprocess.run(
        [sys.executable, "-S", "-c", code],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert proc.stdout.strip() == "python"
    assert "implementation=python" in proc.stderr
