"""Installing the runtime into the per-user directory from a local server; pulling models."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.download import Downloader
from agent.install import InstallError, find_installed, install_runtime
from agent.models import PullError, pull_model
from routercore.testing.fakenode import run_in_thread
from tests.support.commands import run_python
from tests.support.netservers import FileServer

SCRIPT = b"#!/bin/sh\necho fake-runtime\n"


def tgz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zipped(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o755 << 16
            zf.writestr(info, data)
    return buf.getvalue()


@pytest.fixture
def server() -> Iterator[FileServer]:
    files = {
        "/dl/rt-linux.tgz": tgz({"bin/ollama": SCRIPT, "lib/libfake.so": b"x"}),
        "/dl/rt-windows.zip": zipped({"ollama": SCRIPT, "README": b"r"}),
        "/dl/ollama-linux-amd64": SCRIPT,
        "/dl/evil.tgz": tgz({"../escape": b"x"}),
        "/dl/empty.tgz": tgz({"README": b"x"}),
    }
    with FileServer(files=files) as s:
        yield s


def sha(server: FileServer, path: str) -> str:
    return hashlib.sha256(server.files[path]).hexdigest()


def fast() -> Downloader:
    return Downloader(sleep=lambda _d: None, retries=3, timeout=5)


@pytest.mark.parametrize(
    "path", ["/dl/rt-linux.tgz", "/dl/rt-windows.zip", "/dl/ollama-linux-amd64"]
)
def test_install_forms(server: FileServer, tmp_path: Path, path: str) -> None:
    install_dir = tmp_path / "runtime"
    data = server.files[path]
    progress: list[tuple[int, int | None]] = []
    exe = install_runtime(
        server.url(path),
        install_dir,
        "ollama",
        fast(),
        sha256=hashlib.sha256(data).hexdigest(),
        progress=lambda d, t: progress.append((d, t)),
    )
    assert exe.name == "ollama" and install_dir in exe.parents
    assert os.access(exe, os.X_OK)
    assert subprocess.run([str(exe)], capture_output=True, text=True).stdout == "fake-runtime\n"
    assert progress[-1] == (len(data), len(data))
    assert find_installed(install_dir, "ollama") == exe
    assert not any((install_dir / "downloads").iterdir())  # the download is removed


def test_install_checksum_mismatch_leaves_nothing(server: FileServer, tmp_path: Path) -> None:
    with pytest.raises(InstallError, match="SHA-256 mismatch"):
        install_runtime(
            server.url("/dl/rt-linux.tgz"), tmp_path / "rt", "ollama", fast(), sha256="1" * 64
        )
    assert find_installed(tmp_path / "rt", "ollama") is None
    assert list((tmp_path / "rt" / "downloads").iterdir()) == []


def test_archive_escaping_the_directory_is_refused(server: FileServer, tmp_path: Path) -> None:
    with pytest.raises(InstallError, match="escapes"):
        install_runtime(
            server.url("/dl/evil.tgz"),
            tmp_path / "rt",
            "ollama",
            fast(),
            sha256=sha(server, "/dl/evil.tgz"),
        )
    assert not (tmp_path / "escape").exists()


def test_archive_without_the_binary(server: FileServer, tmp_path: Path) -> None:
    with pytest.raises(InstallError, match="runtime_binary"):
        install_runtime(
            server.url("/dl/empty.tgz"),
            tmp_path / "rt",
            "ollama",
            fast(),
            sha256=sha(server, "/dl/empty.tgz"),
        )


def test_cli_install_runtime_shows_progress(server: FileServer, tmp_path: Path) -> None:
    data = server.files["/dl/rt-linux.tgz"]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LLM_AGENT_")},
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
    }
    done = run_python(
        "-m",
        "agent",
        "--install-runtime",
        "--install-url",
        server.url("/dl/rt-linux.tgz"),
        "--install-sha256",
        hashlib.sha256(data).hexdigest(),
        env=env,
    )
    assert done.returncode == 0, done.stderr
    exe = tmp_path / "data" / "llm-router" / "runtime" / "bin" / "ollama"
    assert done.stdout.strip() == f"runtime installed: {exe}"
    assert "runtime [" in done.stderr and "100%" in done.stderr
    assert exe.is_file()


def test_cli_install_runtime_checksum_failure_exit_code(server: FileServer, tmp_path: Path) -> None:
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "d"), "XDG_CONFIG_HOME": str(tmp_path)}
    done = run_python(
        "-m", "agent", "--install-runtime", "--install-url", server.url("/dl/rt-linux.tgz"),
        "--install-sha256", "2" * 64, env=env,
    )  # fmt: skip
    assert done.returncode == 1
    assert "SHA-256 mismatch" in done.stderr and "deleted" in done.stderr


def test_pull_model_streams_progress_from_runtime() -> None:
    node = run_in_thread(models=["llama3"])
    try:
        progress: list[tuple[int, int | None]] = []
        statuses: list[str] = []
        pull_model(
            node.url,
            "qwen2:7b",
            progress=lambda d, t: progress.append((d, t)),
            on_status=statuses.append,
        )
        assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
        total = progress[-1][1]
        assert total and progress[-1][0] == total and progress[0][0] < total
        from agent.runtime import RuntimeProbe

        assert "qwen2:7b" in RuntimeProbe(node.url).probe().models
    finally:
        node.close()


def test_pull_model_gives_up_when_runtime_is_gone() -> None:
    delays: list[float] = []
    with pytest.raises(PullError, match="after 3 attempts"):
        pull_model("http://127.0.0.1:9", "x", retries=2, sleep=delays.append)
    assert len(delays) == 2


def test_service_install_reports_percentage_for_tray(server: FileServer, tmp_path: Path) -> None:
    from agent.config import load_config
    from agent.service import AgentService
    from agent.state import Snapshot
    from agent.tray import tooltip

    data = server.files["/dl/rt-linux.tgz"]
    cfg = load_config(
        {
            "install_url": server.url("/dl/rt-linux.tgz"),
            "install_sha256": hashlib.sha256(data).hexdigest(),
            "install_dir": str(tmp_path / "rt"),
        },
        {"XDG_CONFIG_HOME": str(tmp_path)},
    )
    service = AgentService(cfg, env={})
    tips: list[str] = []
    activities: list[str | None] = []

    def listener(snap: Snapshot) -> None:
        activities.append(snap.activity)
        tips.append(tooltip(snap, cfg.router_url))

    service.state.subscribe(listener)
    command = service.install()
    assert command == [str(tmp_path / "rt" / "bin" / "ollama"), "serve"]
    assert "installing runtime 100%" in activities
    assert any(t.endswith("installing runtime 100%") for t in tips)
    assert activities[-1] is None  # cleared when done
