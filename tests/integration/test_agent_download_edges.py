"""Download edges: a checksum file that is missing or garbage, an install with no checksum, an
authenticated proxy (plain and CONNECT) whose credentials never reach a log, proxy URLs from the
environment. Local servers only; nothing touches the internet."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.download import (
    ChecksumUnavailable,
    Downloader,
    ProxyError,
    ProxySettings,
)
from agent.install import InstallError, install_runtime
from tests.support.netservers import FileServer, ForwardProxy, https_file_server

DATA = os.urandom(200_000)
SHA = hashlib.sha256(DATA).hexdigest()
SCRIPT = b"#!/bin/sh\necho fake-runtime\n"
USER, PASSWORD = "builder", "s3cr@t:pass/word"  # '@', ':' and '/' must be percent-encoded
QUOTED = "s3cr%40t%3Apass%2Fword"


@pytest.fixture
def server() -> Iterator[FileServer]:
    with FileServer(files={"/rt/runtime.bin": DATA, "/rt/ollama": SCRIPT}) as s:
        yield s


@pytest.fixture
def auth_proxy() -> Iterator[ForwardProxy]:
    with ForwardProxy(auth=(USER, PASSWORD)) as p:
        yield p


def fast(**kw: object) -> Downloader:
    return Downloader(sleep=lambda _d: None, retries=2, timeout=5, **kw)  # type: ignore[arg-type]


def with_credentials(proxy: ForwardProxy, password: str = QUOTED) -> str:
    return proxy.url.replace("http://", f"http://{USER}:{password}@")


def assert_no_secret(text: str) -> None:
    for secret in (PASSWORD, QUOTED, "s3cr"):
        assert secret not in text


# -- checksums -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("checksum", "why"),
    [
        (None, "HTTP 404"),  # the checksum URL answers 404
        (b"<html><body>Welcome to the mirror</body></html>", "holds no SHA-256"),
        (bytes(range(256)) * 8, "holds no SHA-256"),  # binary garbage
        (b"0123abc  runtime.bin\n", "holds no SHA-256"),  # too short to be a SHA-256
    ],
)
def test_unusable_checksum_file_fails_the_install_before_downloading(
    server: FileServer, tmp_path: Path, checksum: bytes | None, why: str
) -> None:
    if checksum is not None:
        server.files["/rt/SHA256SUMS"] = checksum
    with pytest.raises(InstallError) as err:
        install_runtime(
            server.url("/rt/ollama"),
            tmp_path / "rt",
            "ollama",
            fast(),
            sha256_url=server.url("/rt/SHA256SUMS"),
        )
    message = str(err.value)
    assert isinstance(err.value.__cause__, ChecksumUnavailable)
    assert f"the checksum file {server.url('/rt/SHA256SUMS')} is not usable" in message
    assert why in message and "nothing was downloaded" in message
    assert [r["path"] for r in server.requests] == ["/rt/SHA256SUMS"]  # no runtime download
    assert not (tmp_path / "rt" / "ollama").exists()


def test_no_checksum_is_refused_unless_allowed_then_warned(
    server: FileServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = server.url("/rt/ollama")
    with pytest.raises(InstallError, match=r"without a checksum.*allow_unverified = true"):
        install_runtime(url, tmp_path / "rt", "ollama", fast())
    assert server.requests == []  # refused before any byte was fetched
    caplog.set_level(logging.WARNING, logger="agent.install")
    exe = install_runtime(url, tmp_path / "rt", "ollama", fast(), allow_unverified=True)
    assert exe.read_bytes() == SCRIPT
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert (
        "runtime_install_unverified" in warnings[0]
        and "can run code on this machine" in warnings[0]
    )


def test_service_honours_allow_unverified(server: FileServer, tmp_path: Path) -> None:
    from agent.config import load_config
    from agent.service import AgentService

    env = {"XDG_CONFIG_HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path)}
    flags = {"install_url": server.url("/rt/ollama")}
    with pytest.raises(InstallError, match="without a checksum"):
        AgentService(load_config(flags, env), env={}).install()
    flags["allow_unverified"] = "true"
    command = AgentService(load_config(flags, env), env={}).install()
    assert Path(command[0]).read_bytes() == SCRIPT


# -- authenticated proxies -------------------------------------------------------------------


def test_download_through_an_authenticated_proxy(
    server: FileServer, auth_proxy: ForwardProxy, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    proxies = ProxySettings.resolve(with_credentials(auth_proxy), None, None, {})
    url = server.url("/rt/runtime.bin")
    server.faults["/rt/runtime.bin"] = ["503"]  # a retry goes through the proxy again
    dest = fast(proxies=proxies).fetch(url, tmp_path / "r.bin", sha256=SHA)
    assert dest.read_bytes() == DATA
    assert auth_proxy.seen == [url, url] and auth_proxy.refused == []
    assert_no_secret(caplog.text)


def test_wrong_proxy_password_fails_at_once_without_showing_it(
    server: FileServer, auth_proxy: ForwardProxy, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    proxies = ProxySettings.resolve(with_credentials(auth_proxy, "s3cr-wrong"), None, None, {})
    with pytest.raises(ProxyError, match=r"HTTP 407.*check the user and password") as err:
        fast(proxies=proxies).fetch(server.url("/rt/runtime.bin"), tmp_path / "r.bin", sha256=SHA)
    assert len(auth_proxy.refused) == 1  # not retried: a password does not fix itself
    assert_no_secret(str(err.value) + caplog.text)
    assert "s3cr-wrong" not in str(err.value) + caplog.text


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[FileServer, Path]]:
    with https_file_server(tmp_path, {"/rt/runtime.bin": DATA}) as served:
        yield served


def test_https_tunnel_through_an_authenticated_proxy(
    tls_server: tuple[FileServer, Path],
    auth_proxy: ForwardProxy,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    server, cert = tls_server
    env = {"HTTPS_PROXY": with_credentials(auth_proxy)}  # from the environment this time
    proxies = ProxySettings.resolve(None, None, None, env)
    out = fast(proxies=proxies, cafile=str(cert)).fetch(
        server.url("/rt/runtime.bin"), tmp_path / "r.bin", sha256=SHA
    )
    assert out.read_bytes() == DATA
    assert auth_proxy.seen == [f"CONNECT 127.0.0.1:{server.port}"]
    bad = ProxySettings.resolve(
        None, None, None, {"HTTPS_PROXY": with_credentials(auth_proxy, "x")}
    )
    with pytest.raises(ProxyError, match="407") as err:
        fast(proxies=bad, cafile=str(cert)).fetch(
            server.url("/rt/runtime.bin"), tmp_path / "r2.bin", sha256=SHA
        )
    assert_no_secret(str(err.value) + caplog.text)


# -- proxy URLs from the environment ---------------------------------------------------------


@pytest.mark.parametrize(
    ("var", "value", "why"),
    [
        ("HTTPS_PROXY", "socks5://127.0.0.1:1080", "only http:// and https://"),
        ("http_proxy", "http://127.0.0.1:99999", "invalid host or port"),
        ("HTTP_PROXY", "http://:3128", "names no proxy host"),
        ("https_proxy", "http://proxy.corp:3128/some/path", "without a path"),
        ("HTTPS_PROXY", f"socks5://{USER}:{QUOTED}@proxy:1", "only http://"),
    ],
)
def test_environment_proxy_urls_are_validated(var: str, value: str, why: str) -> None:
    with pytest.raises(ProxyError) as err:
        ProxySettings.resolve(None, None, None, {var: value})
    assert f"invalid proxy in environment {var}" in str(err.value) and why in str(err.value)
    assert_no_secret(str(err.value))


def test_environment_proxy_forms_accepted() -> None:
    s = ProxySettings.resolve(None, None, None, {"http_proxy": "proxy.corp:3128"})
    assert s.http == "http://proxy.corp:3128"  # curl's reading of a bare host:port
    s = ProxySettings.resolve(None, None, None, {"HTTPS_PROXY": f"http://{USER}:{QUOTED}@p:8/"})
    assert s.https == f"http://{USER}:{QUOTED}@p:8"


def test_service_install_reports_a_bad_environment_proxy(tmp_path: Path) -> None:
    from agent.config import load_config
    from agent.service import AgentService

    env = {"XDG_CONFIG_HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path)}
    cfg = load_config({"install_url": "http://127.0.0.1:9/ollama", "install_sha256": "a" * 64}, env)
    svc = AgentService(cfg, env={"HTTPS_PROXY": "socks5://127.0.0.1:1080"})
    with pytest.raises(InstallError, match="invalid proxy in environment HTTPS_PROXY"):
        svc.install()
