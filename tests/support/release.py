"""The release artifacts scripts/release.sh builds (issue 14): their names, running a command
that must succeed, a clean environment for installs, and what pip resolves from a wheelhouse.
The session fixtures that build or unpack them are in tests/release/conftest.py."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.support import ROOT

VERSION = re.search(
    r'^__version__ = "(.+)"$', (ROOT / "routercore" / "__init__.py").read_text(), re.M
).group(1)  # type: ignore[union-attr]
PYTHONS = ("3.11", "3.12", "3.13")

sys.path.insert(0, str(ROOT / "scripts"))
import wheelhouse  # noqa: E402  (scripts/wheelhouse.py: the same checker release.sh runs)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without pip's or the project's settings: installs see only what we give."""
    dropped = ("PIP_", "LLM_ROUTER_", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return {**env, **extra}


def run(cmd: list[str], timeout: float = 300, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run `cmd`; fail with its output when it exits non-zero."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)  # type: ignore[call-overload]
    output = f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}\n{output}"
    return proc


@dataclass(frozen=True)
class Release:
    dist: Path

    @property
    def sdist(self) -> Path:
        return self.dist / f"llm_router-{VERSION}.tar.gz"

    @property
    def pure_wheel(self) -> Path:
        return self.dist / f"llm_router-{VERSION}-py3-none-any.whl"

    @property
    def compiled_wheel(self) -> Path:
        (wheel,) = self.dist.glob(f"llm_router-{VERSION}-cp3*.whl")
        return wheel

    @property
    def linux_bundle(self) -> Path:
        return self.dist / f"llm-router-{VERSION}-linux-x86_64.tar.gz"

    @property
    def windows_zip(self) -> Path:
        return self.dist / f"llm-router-agent-{VERSION}-windows-x64.zip"

    @property
    def msi(self) -> Path:
        return self.dist / f"llm-router-agent-{VERSION}-x64.msi"


def pip_resolve(folder: Path, python: str, platform: str, requirement: str) -> list[str]:
    """The wheel file names pip itself picks from `folder` alone for `python` on `platform`."""
    report = folder.parent / f"resolve-{platform}-{python}.json"
    platforms = [arg for p in wheelhouse.PLATFORMS[platform] for arg in ("--platform", p)]
    run(
        [sys.executable, "-m", "pip", "install", "-q", "--dry-run", "--ignore-installed",
         "--no-index", "--find-links", str(folder), "--only-binary=:all:",
         "--python-version", python, *platforms, "--report", str(report), requirement],
        env=clean_env(),
    )  # fmt: skip
    data = json.loads(report.read_text())
    return [item["download_info"]["url"].rsplit("/", 1)[1] for item in data["install"]]
