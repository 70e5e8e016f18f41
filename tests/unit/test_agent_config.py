"""AgentConfig layering (defaults < TOML < env < flags) and validation naming the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import (
    DEFAULT_MODEL_TABLE,
    ConfigError,
    load_config,
    save_settings,
    validate_editable,
    with_overrides,
)

# Never read the developer's real per-user agent.toml.
NOFILE = {"XDG_CONFIG_HOME": "/nonexistent/agent-tests", "APPDATA": "/nonexistent/agent-tests"}


def test_defaults_without_file(tmp_path: Path) -> None:
    cfg = load_config({}, {"XDG_CONFIG_HOME": str(tmp_path)})
    assert cfg.router_url == ("http://127.0.0.1:8080",)
    assert cfg.runtime_url == "http://127.0.0.1:11434"
    assert cfg.runtime_port == 11434
    assert cfg.tray is True
    assert cfg.model_table == DEFAULT_MODEL_TABLE
    assert cfg.config_path == tmp_path / "llm-router" / "agent.toml"
    assert cfg.dashboard_url == "http://127.0.0.1:8080/dashboard"


def test_precedence_file_env_flags(tmp_path: Path) -> None:
    f = tmp_path / "agent.toml"
    f.write_text(
        'router_url = "http://file:1"\nnode_name = "from-file"\nruntime_url = "http://file:2"\n'
        "heartbeat_interval = 3\n"
    )
    env = {"LLM_AGENT_NODE_NAME": "from-env", "LLM_AGENT_RUNTIME_URL": "http://env:3/"}
    cfg = load_config({"runtime_url": "http://flag:4", "node_name": None}, env, f)
    assert cfg.router_url == ("http://file:1",)
    assert cfg.node_name == "from-env"
    assert cfg.runtime_url == "http://flag:4"
    assert cfg.runtime_port == 4
    assert cfg.heartbeat_interval == 3.0
    assert cfg.config_path == f


def test_router_url_comma_list_and_toml_list(tmp_path: Path) -> None:
    cfg = load_config({}, {**NOFILE, "LLM_AGENT_ROUTER_URL": "http://a:1, http://b:2/,http://a:1"})
    assert cfg.router_url == ("http://a:1", "http://b:2")
    f = tmp_path / "a.toml"
    f.write_text('router_url = ["http://x:1", "https://y"]\n')
    assert load_config({}, {}, f).router_url == ("http://x:1", "https://y")


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"LLM_AGENT_ROUTER_URL": "ftp://x"}, "router_url"),
        ({"LLM_AGENT_ROUTER_URL": ""}, "router_url"),
        ({"LLM_AGENT_RUNTIME_URL": "http://x:99999"}, "runtime_url"),
        ({"LLM_AGENT_HEARTBEAT_INTERVAL": "0"}, "heartbeat_interval"),
        ({"LLM_AGENT_MANAGE_RUNTIME": "maybe"}, "manage_runtime"),
        ({"LLM_AGENT_RUNTIME_KIND": "tgi"}, "runtime_kind"),
        ({"LLM_AGENT_INSTALL_SHA256": "abc"}, "install_sha256"),
        ({"LLM_AGENT_IP_ADDRESS": "not-an-ip"}, "ip_address"),
        ({"LLM_AGENT_MAX_CONCURRENCY": "0"}, "max_concurrency"),
        ({"LLM_AGENT_MODEL_TABLE": "16"}, "model_table"),
        ({"LLM_AGENT_LOG_LEVEL": "chatty"}, "log_level"),
    ],
)
def test_invalid_values_name_the_setting(env: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config({}, {**NOFILE, **env})
    assert setting in str(err.value)
    assert "LLM_AGENT_" in str(err.value)


def test_flag_errors_name_the_flag() -> None:
    with pytest.raises(ConfigError, match=r"router_url \(--router\)"):
        load_config({"router_url": "nope"}, NOFILE)


def test_toml_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("router_url = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config({}, {}, bad)
    typo = tmp_path / "typo.toml"
    typo.write_text('routr_url = "http://x"\n')
    with pytest.raises(ConfigError, match=r"unknown setting.*routr_url"):
        load_config({}, {}, typo)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config({}, {}, tmp_path / "missing.toml")
    wrong = tmp_path / "wrong.toml"
    wrong.write_text("heartbeat_interval = -2\n")
    with pytest.raises(ConfigError, match=r"heartbeat_interval \(config file"):
        load_config({}, {}, wrong)


def test_model_table_forms(tmp_path: Path) -> None:
    cfg = load_config({}, {**NOFILE, "LLM_AGENT_MODEL_TABLE": "0=tiny:1b,16=big:8b"})
    assert cfg.model_table == ((16.0, "big:8b"), (0.0, "tiny:1b"))
    f = tmp_path / "t.toml"
    f.write_text(
        '[[model_table]]\nmin_memory_gb = 4\nmodel = "a"\n'
        '[[model_table]]\nmin_memory_gb = 32\nmodel = "b"\n'
    )
    assert load_config({}, {}, f).model_table == ((32.0, "b"), (4.0, "a"))


def test_runtime_command_and_booleans() -> None:
    cfg = load_config(
        {},
        {
            **NOFILE,
            "LLM_AGENT_RUNTIME_COMMAND": "ollama serve --x 'a b'",
            "LLM_AGENT_MANAGE_RUNTIME": "yes",
        },
    )
    assert cfg.runtime_command == ("ollama", "serve", "--x", "a b")
    assert cfg.manage_runtime is True


def test_save_settings_round_trip_keeps_other_keys(tmp_path: Path) -> None:
    f = tmp_path / "sub" / "agent.toml"
    f.parent.mkdir()
    f.write_text('install_url = "http://dl/x.tgz"\nheartbeat_interval = 7.5\n')
    save_settings(
        f,
        {
            "router_url": ("http://r1:8080", "http://r2:8080"),
            "node_name": 'gpu "box" \\ 1',
            "registration_token": None,
            "runtime_url": "http://127.0.0.1:8000",
        },
    )
    cfg = load_config({}, {}, f)
    assert cfg.router_url == ("http://r1:8080", "http://r2:8080")
    assert cfg.node_name == 'gpu "box" \\ 1'
    assert cfg.registration_token is None
    assert cfg.install_url == "http://dl/x.tgz"
    assert cfg.heartbeat_interval == 7.5
    save_settings(f, {"model_table": ((8.0, "m:3b"),), "registration_token": "s3cret"})
    cfg = load_config({}, {}, f)
    assert cfg.model_table == ((8.0, "m:3b"),)
    assert cfg.registration_token == "s3cret"
    assert not f.with_name("agent.toml.tmp").exists()


def test_validate_editable() -> None:
    parsed, errors = validate_editable(
        {"router_url": "http://r:1", "node_name": "", "runtime_url": "localhost:11434"}
    )
    assert set(errors) == {"node_name", "runtime_url"}
    assert parsed["router_url"] == ("http://r:1",)
    assert parsed["registration_token"] is None


def test_with_overrides_validates() -> None:
    cfg = load_config({}, NOFILE)
    assert with_overrides(cfg, node_name="n2").node_name == "n2"
    with pytest.raises(ConfigError):
        with_overrides(cfg, runtime_url="bad")


def test_ca_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ca_file"):
        load_config({}, {**NOFILE, "LLM_AGENT_CA_FILE": str(tmp_path / "nope.pem")})
    pem = tmp_path / "ca.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\n")
    assert load_config({}, {**NOFILE, "LLM_AGENT_CA_FILE": str(pem)}).ca_file == pem


def test_split_command_per_platform() -> None:
    from agent.config import split_command

    assert split_command("ollama serve --x 'a b'", "linux") == ("ollama", "serve", "--x", "a b")
    win = r'"C:\Program Files\Ollama\ollama.exe" serve C:\data\x'
    assert split_command(win, "win32") == (
        r"C:\Program Files\Ollama\ollama.exe",
        "serve",
        r"C:\data\x",
    )
