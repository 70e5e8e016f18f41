"""Downloads from a local HTTP server: progress, retries after injected faults, resume,
checksum checks, and going through a local forward proxy. Nothing touches the internet."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.download import (
    ChecksumMismatch,
    Downloader,
    DownloadError,
    ProxySettings,
    bypass_proxy,
    parse_checksum_file,
)
from tests.support.netservers import FileServer, ForwardProxy, https_file_server

DATA = os.urandom(300_000)
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def server() -> Iterator[FileServer]:
    with FileServer(files={"/rt/runtime.bin": DATA}) as s:
        yield s


@pytest.fixture
def proxy() -> Iterator[ForwardProxy]:
    with ForwardProxy() as p:
        yield p


class Recorder:
    def __init__(self) -> None:
        self.delays: list[float] = []
        self.progress: list[tuple[int, int | None]] = []

    def sleep(self, delay: float) -> None:
        self.delays.append(delay)  # no real waiting: the sequence is what we check

    def on_progress(self, done: int, total: int | None) -> None:
        self.progress.append((done, total))


def downloader(rec: Recorder, **kw: object) -> Downloader:
    kw.setdefault("retries", 4)
    kw.setdefault("timeout", 5.0)
    return Downloader(sleep=rec.sleep, backoff_initial=0.5, backoff_max=30, **kw)  # type: ignore[arg-type]


def test_progress_callbacks_and_verified_result(server: FileServer, tmp_path: Path) -> None:
    rec = Recorder()
    dest = tmp_path / "dl" / "runtime.bin"
    out = downloader(rec).fetch(
        server.url("/rt/runtime.bin"), dest, sha256=SHA.upper(), progress=rec.on_progress
    )
    assert out == dest and dest.read_bytes() == DATA
    assert not dest.with_name("runtime.bin.part").exists()
    assert rec.progress[0] == (0, len(DATA)) and rec.progress[-1] == (len(DATA), len(DATA))
    dones = [d for d, _ in rec.progress]
    assert dones == sorted(dones) and len(dones) > 3
    assert rec.delays == []


def test_retries_5xx_with_exponential_backoff(server: FileServer, tmp_path: Path) -> None:
    rec = Recorder()
    server.faults["/rt/runtime.bin"] = ["503", "500", "503"]
    dest = downloader(rec).fetch(server.url("/rt/runtime.bin"), tmp_path / "r.bin", sha256=SHA)
    assert dest.read_bytes() == DATA
    assert len(rec.delays) == 3
    # base 0.5, 1, 2 with up to 50% jitter below
    for delay, base in zip(rec.delays, (0.5, 1.0, 2.0), strict=True):
        assert base / 2 <= delay <= base
    assert len(server.requests) == 4


def test_connection_reset_resumes_from_partial(server: FileServer, tmp_path: Path) -> None:
    rec = Recorder()
    server.faults["/rt/runtime.bin"] = ["reset"]
    dest = downloader(rec).fetch(
        server.url("/rt/runtime.bin"), tmp_path / "r.bin", sha256=SHA, progress=rec.on_progress
    )
    assert dest.read_bytes() == DATA
    assert [r["range"] for r in server.requests] == [None, f"bytes={len(DATA) // 2}-"]
    assert len(rec.delays) == 1


def test_read_timeout_is_retried_and_resumed(server: FileServer, tmp_path: Path) -> None:
    rec = Recorder()
    server.faults["/rt/runtime.bin"] = ["stall"]
    dest = downloader(rec, timeout=0.5).fetch(
        server.url("/rt/runtime.bin"), tmp_path / "r.bin", sha256=SHA
    )
    assert dest.read_bytes() == DATA
    # Resumed from what reached the disk before the read timed out (at most half).
    resumed_at = int(server.requests[1]["range"][6:-1])
    assert 0 < resumed_at <= len(DATA) // 2


def test_server_ignoring_range_means_clean_restart(server: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "r.bin"
    dest.with_name("r.bin.part").write_bytes(b"stale bytes from another file")
    server.faults["/rt/runtime.bin"] = ["ignore_range"]
    downloader(Recorder()).fetch(server.url("/rt/runtime.bin"), dest, sha256=SHA)
    assert dest.read_bytes() == DATA
    assert server.requests[0]["range"] == "bytes=29-"


def test_partial_longer_than_file_starts_over(server: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "r.bin"
    dest.with_name("r.bin.part").write_bytes(b"x" * (len(DATA) + 10))
    downloader(Recorder()).fetch(server.url("/rt/runtime.bin"), dest, sha256=SHA)
    assert dest.read_bytes() == DATA
    assert [r["range"] for r in server.requests] == [f"bytes={len(DATA) + 10}-", None]


def test_complete_partial_is_not_downloaded_again(server: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "r.bin"
    dest.with_name("r.bin.part").write_bytes(DATA)
    downloader(Recorder()).fetch(server.url("/rt/runtime.bin"), dest, sha256=SHA)
    assert dest.read_bytes() == DATA and len(server.requests) == 1


def test_checksum_mismatch_deletes_and_says_so(server: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "r.bin"
    with pytest.raises(ChecksumMismatch) as err:
        downloader(Recorder()).fetch(server.url("/rt/runtime.bin"), dest, sha256="0" * 64)
    message = str(err.value)
    assert "SHA-256 mismatch" in message and SHA in message and "deleted" in message
    assert not dest.exists() and not dest.with_name("r.bin.part").exists()


def test_checksum_from_url(server: FileServer, tmp_path: Path) -> None:
    server.files["/rt/SHA256SUMS"] = f"{'a' * 64}  other.tgz\n{SHA}  runtime.bin\n".encode()
    server.faults["/rt/SHA256SUMS"] = ["503"]  # the checksum fetch is retried too
    rec = Recorder()
    dest = downloader(rec).fetch(
        server.url("/rt/runtime.bin"),
        tmp_path / "runtime.bin",
        sha256_url=server.url("/rt/SHA256SUMS"),
    )
    assert dest.read_bytes() == DATA and len(rec.delays) == 1
    server.files["/rt/bad.sum"] = f"{'b' * 64} *runtime.bin\n".encode()
    with pytest.raises(ChecksumMismatch):
        downloader(rec).fetch(
            server.url("/rt/runtime.bin"),
            tmp_path / "again" / "runtime.bin",
            sha256_url=server.url("/rt/bad.sum"),
        )
    assert not (tmp_path / "again" / "runtime.bin").exists()


def test_404_fails_at_once(server: FileServer, tmp_path: Path) -> None:
    rec = Recorder()
    with pytest.raises(DownloadError, match="HTTP 404"):
        downloader(rec).fetch(server.url("/rt/missing.bin"), tmp_path / "m.bin")
    assert rec.delays == [] and len(server.requests) == 1


def test_gives_up_after_retries(server: FileServer, tmp_path: Path) -> None:
    rec = Recorder()
    server.faults["/rt/runtime.bin"] = ["503"] * 10
    with pytest.raises(DownloadError, match="failed after 3 attempts"):
        downloader(rec, retries=2).fetch(server.url("/rt/runtime.bin"), tmp_path / "r.bin")
    assert len(rec.delays) == 2


def test_connection_refused_is_retried(tmp_path: Path) -> None:
    rec = Recorder()
    with pytest.raises(DownloadError, match="failed after"):
        downloader(rec, retries=2).fetch("http://127.0.0.1:9/x.bin", tmp_path / "x.bin")
    assert len(rec.delays) == 2


def test_through_configured_proxy(server: FileServer, proxy: ForwardProxy, tmp_path: Path) -> None:
    proxies = ProxySettings.resolve(proxy.url, None, None, {})
    url = server.url("/rt/runtime.bin")
    dest = downloader(Recorder(), proxies=proxies).fetch(url, tmp_path / "r.bin", sha256=SHA)
    assert dest.read_bytes() == DATA
    assert proxy.seen == [url]


def test_through_proxy_from_environment(
    server: FileServer, proxy: ForwardProxy, tmp_path: Path
) -> None:
    url = server.url("/rt/runtime.bin")
    server.faults["/rt/runtime.bin"] = ["reset"]  # resume works through the proxy as well
    proxies = ProxySettings.resolve(None, None, None, {"HTTP_PROXY": proxy.url})
    dest = downloader(Recorder(), proxies=proxies).fetch(url, tmp_path / "r.bin", sha256=SHA)
    assert dest.read_bytes() == DATA
    assert proxy.seen == [url, url]


def test_no_proxy_bypasses(server: FileServer, proxy: ForwardProxy, tmp_path: Path) -> None:
    env = {"http_proxy": proxy.url, "NO_PROXY": "example.org,127.0.0.1"}
    proxies = ProxySettings.resolve(None, None, None, env)
    downloader(Recorder(), proxies=proxies).fetch(
        server.url("/rt/runtime.bin"), tmp_path / "r.bin", sha256=SHA
    )
    assert proxy.seen == []


def test_config_proxy_wins_over_environment() -> None:
    s = ProxySettings.resolve("http://cfg:1", None, "a", {"HTTP_PROXY": "http://env:2"})
    assert s.http == "http://cfg:1" and s.no_proxy == "a"
    assert s.for_url("http://x/") == {"http": "http://cfg:1"}
    assert s.for_url("http://a/") == {}


@pytest.mark.parametrize(
    ("host", "no_proxy", "bypass"),
    [
        ("dl.corp.example", ".corp.example", True),
        ("dl.corp.example", "corp.example", True),
        ("corp.example", "corp.example", True),
        ("notcorp.example", "corp.example", False),
        ("anything", "*", True),
        ("10.1.2.3", "10.1.2.3:8080", True),
        ("host", "", False),
    ],
)
def test_bypass_proxy_rules(host: str, no_proxy: str, bypass: bool) -> None:
    assert bypass_proxy(host, no_proxy) is bypass


def test_parse_checksum_file_forms() -> None:
    assert parse_checksum_file(f"{SHA}\n", "x") == SHA
    assert (
        parse_checksum_file(f"{SHA.upper()}  ./dir/runtime.bin\n{'c' * 64}  y", "runtime.bin")
        == SHA
    )
    with pytest.raises(DownloadError, match="no SHA-256"):
        parse_checksum_file("<html>not found</html>", "x")
    with pytest.raises(DownloadError, match="for x"):
        parse_checksum_file(f"{'a' * 64}  y\n{'b' * 64}  z\n", "x")


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[FileServer, Path]]:
    with https_file_server(tmp_path, {"/rt/runtime.bin": DATA}) as served:
        yield served


def test_https_through_proxy_tunnel(
    tls_server: tuple[FileServer, Path], proxy: ForwardProxy, tmp_path: Path
) -> None:
    server, cert = tls_server
    url = server.url("/rt/runtime.bin")
    assert url.startswith("https://")
    proxies = ProxySettings.resolve(None, None, None, {"HTTPS_PROXY": proxy.url})
    rec = Recorder()
    out = downloader(rec, proxies=proxies, cafile=str(cert)).fetch(
        url, tmp_path / "r.bin", sha256=SHA, progress=rec.on_progress
    )
    assert out.read_bytes() == DATA
    assert proxy.seen == [f"CONNECT 127.0.0.1:{server.port}"]
    assert rec.progress[-1] == (len(DATA), len(DATA))


def test_untrusted_certificate_fails_at_once_with_advice(
    tls_server: tuple[FileServer, Path], tmp_path: Path
) -> None:
    server, _cert = tls_server
    rec = Recorder()
    with pytest.raises(DownloadError, match=r"certificate not trusted.*ca_file"):
        downloader(rec).fetch(server.url("/rt/runtime.bin"), tmp_path / "r.bin")
    assert rec.delays == []
