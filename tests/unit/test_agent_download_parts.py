"""Pure pieces of agent/download.py: sha256_file, proxy URL parsing, URL redaction."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from agent.config import ConfigError, load_config
from agent.download import proxy_url, redact_url, sha256_file


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        (b"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
    ],
)
def test_sha256_file_known_vectors(tmp_path: Path, data: bytes, expected: str) -> None:
    path = tmp_path / "f"
    path.write_bytes(data)
    assert sha256_file(path) == expected


def test_sha256_file_reads_in_blocks_across_boundaries(tmp_path: Path) -> None:
    # 1 MiB blocks: exactly one block, one byte over, and several blocks plus a tail.
    for size in (1024 * 1024, 1024 * 1024 + 1, 3 * 1024 * 1024 + 12345):
        data = bytes(i % 251 for i in range(size))
        path = tmp_path / f"f{size}"
        path.write_bytes(data)
        assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_sha256_file_missing_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        sha256_file(tmp_path / "absent")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://proxy:3128", "http://proxy:3128"),
        ("  http://proxy:3128/  ", "http://proxy:3128"),
        ("https://proxy.corp", "https://proxy.corp"),
        ("proxy.corp:8080", "http://proxy.corp:8080"),
        ("http://user:p%40ss@10.0.0.1:3128", "http://user:p%40ss@10.0.0.1:3128"),
        ("http://[::1]:3128", "http://[::1]:3128"),
    ],
)
def test_proxy_url_accepts(text: str, expected: str) -> None:
    assert proxy_url(text) == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("socks5://proxy:1080", "only http:// and https://"),
        ("ftp://proxy", "only http:// and https://"),
        ("http://proxy:70000", "invalid host or port"),
        ("http://proxy:port", "invalid host or port"),
        ("http://[::1:3128", "invalid host or port"),
        ("http://", "names no proxy host"),
        ("http://proxy:3128/path", "without a path"),
        ("http://proxy:3128?x=1", "without a path"),
        ("http://user:hunter2@proxy:99999", "invalid host or port"),
    ],
)
def test_proxy_url_rejects_without_echoing_credentials(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why) as err:
        proxy_url(text)
    assert "hunter2" not in str(err.value)


def test_config_and_environment_proxies_share_the_rules(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    cfg = load_config({"http_proxy": "proxy.corp:3128"}, env)
    assert cfg.http_proxy == "http://proxy.corp:3128"
    with pytest.raises(ConfigError, match="https_proxy") as err:
        load_config({}, {**env, "LLM_AGENT_HTTPS_PROXY": "socks5://u:hunter2@p:1"})
    assert "hunter2" not in str(err.value)
    toml = tmp_path / "agent.toml"
    toml.write_text('http_proxy = "http://u:hunter2@p:99999"\n')
    with pytest.raises(ConfigError, match="http_proxy") as err:
        load_config({}, env, toml)
    assert "hunter2" not in str(err.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://u:p@h:1/x?y#z", "http://***@h:1/x?y#z"),
        ("http://u@h/", "http://***@h/"),
        ("http://h:1/a@b", "http://h:1/a@b"),  # an @ in the path is not userinfo
        ("u:p@h:1", "***@h:1"),
        ("https://h/p", "https://h/p"),
        ("http://a@b:c@h", "http://***@h"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
