"""RouterConfig layering and validation."""

from __future__ import annotations

import subprocess
import sys

import pytest

from routercore.config import ConfigError, RouterConfig, load_config, settings


def test_defaults_match_the_contract():
    cfg = load_config(env={})
    assert (cfg.host, cfg.port) == ("0.0.0.0", 8080)
    assert (cfg.heartbeat_interval, cfg.heartbeat_timeout) == (10.0, 30.0)
    assert cfg.balancer == "least_loaded" and cfg.open_reads is True
    assert cfg.max_body_bytes == 33554432
    assert (cfg.queue_max, cfg.queue_timeout) == (1024, 30.0)
    assert cfg.api_keys == () and cfg.registration_token == ""
    assert cfg.db_path().endswith("router.db")


def test_precedence_defaults_toml_env_flags(tmp_path):
    toml = tmp_path / "router.toml"
    toml.write_text('[router]\nport = 9000\nbalancer = "round_robin"\nqueue_max = 5\n')
    env = {"LLM_ROUTER_PORT": "9100", "LLM_ROUTER_QUEUE_MAX": "7"}
    cfg = load_config(config_file=str(toml), env=env, overrides={"port": "9200"})
    assert cfg.port == 9200  # flag beats env and TOML
    assert cfg.queue_max == 7  # env beats TOML
    assert cfg.balancer == "round_robin"  # TOML beats default
    assert cfg.heartbeat_timeout == 30.0  # default
    via_env = load_config(env={"LLM_ROUTER_CONFIG": str(toml)})
    assert via_env.port == 9000


def test_lists_and_bools_from_env():
    cfg = load_config(env={"LLM_ROUTER_API_KEYS": "a, b,,c", "LLM_ROUTER_OPEN_READS": "false"})
    assert cfg.api_keys == ("a", "b", "c") and cfg.open_reads is False


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"LLM_ROUTER_PORT": "http"}, "port"),
        ({"LLM_ROUTER_PORT": "70000"}, "port"),
        ({"LLM_ROUTER_HEARTBEAT_TIMEOUT": "-1"}, "heartbeat_timeout"),
        ({"LLM_ROUTER_HEARTBEAT_TIMEOUT": "nan"}, "heartbeat_timeout"),
        ({"LLM_ROUTER_HEARTBEAT_INTERVAL": "40"}, "heartbeat_timeout"),
        ({"LLM_ROUTER_BALANCER": "random"}, "balancer"),
        ({"LLM_ROUTER_OPEN_READS": "maybe"}, "open_reads"),
        ({"LLM_ROUTER_MAX_BODY_BYTES": "0"}, "max_body_bytes"),
        ({"LLM_ROUTER_LOG_LEVEL": "loud"}, "log_level"),
    ],
)
def test_invalid_values_name_the_setting(env, name):
    with pytest.raises(ConfigError) as err:
        load_config(env=env)
    assert name in str(err.value)


def test_toml_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("port = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(config_file=str(bad), env={})
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("prot = 1\n")
    with pytest.raises(ConfigError, match="unknown setting 'prot'"):
        load_config(config_file=str(unknown), env={})
    typed = tmp_path / "typed.toml"
    typed.write_text("port = 1.5\n")
    with pytest.raises(ConfigError, match="port"):
        load_config(config_file=str(typed), env={})
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(config_file=str(tmp_path / "missing.toml"), env={})


def test_config_is_frozen():
    cfg = RouterConfig()
    with pytest.raises(AttributeError):
        cfg.port = 1  # type: ignore[misc]


def test_serve_help_lists_every_setting():
    out = subprocess.run(
        [sys.executable, "-m", "routercore", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for f in settings():
        assert "--" + f.name.replace("_", "-") in out
        assert "LLM_ROUTER_" + f.name.upper() in out


def test_invalid_setting_stops_the_router_with_a_message():
    proc = subprocess.run(
        [sys.executable, "-m", "routercore", "serve", "--port", "x"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "port" in proc.stderr and "configuration error" in proc.stderr
