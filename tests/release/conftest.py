"""The release artifacts, built once per test session by scripts/release.sh (or reused).

LLM_ROUTER_RELEASE_DIST=PATH verifies an existing dist/ instead of building one (for example
after `./scripts/release.sh`: `LLM_ROUTER_RELEASE_DIST=dist pytest -m release`).
"""

from __future__ import annotations

import os
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.support import ROOT
from tests.support.release import VERSION, Release, clean_env, run


@pytest.fixture(scope="session")
def release(tmp_path_factory: pytest.TempPathFactory) -> Release:
    given = os.environ.get("LLM_ROUTER_RELEASE_DIST")
    if given:
        return Release(Path(given).resolve())
    dist = tmp_path_factory.mktemp("dist")
    run([str(ROOT / "scripts" / "release.sh")], timeout=1200, env=clean_env(DIST=str(dist)))
    return Release(dist)


@pytest.fixture(scope="session")
def linux_bundle(release: Release, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Linux bundle unpacked; its top folder."""
    out = tmp_path_factory.mktemp("linux-bundle")
    with tarfile.open(release.linux_bundle) as tar:
        tar.extractall(out, filter="tar")
    return out / f"llm-router-{VERSION}-linux-x86_64"


@pytest.fixture(scope="session")
def windows_payload(release: Release, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Windows zip unpacked; its top folder (the MSI carries the same files)."""
    out = tmp_path_factory.mktemp("windows-zip")
    with zipfile.ZipFile(release.windows_zip) as zf:
        zf.extractall(out)
    return out / f"llm-router-agent-{VERSION}-windows-x64"
