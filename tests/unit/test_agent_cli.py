"""Command line: flags map onto settings, bad values exit 2 naming the setting, autostart."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.cli import build_parser, flags_from_args, has_display, main
from agent.config import load_config


def test_flags_override_env(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        ["--router", "http://a:1", "--router", "http://b:2", "--name", "n", "--no-tray"]
    )
    cfg = load_config(
        flags_from_args(args), {"LLM_AGENT_NODE_NAME": "env", "XDG_CONFIG_HOME": str(tmp_path)}
    )
    assert cfg.router_url == ("http://a:1", "http://b:2")
    assert cfg.node_name == "n" and cfg.tray is False


def test_unset_flags_leave_lower_layers() -> None:
    flags = flags_from_args(build_parser().parse_args([]))
    assert all(v is None for v in flags.values())


def test_pull_model_flag_turns_pulling_on() -> None:
    flags = flags_from_args(build_parser().parse_args(["--pull-model", "llama3.2:3b"]))
    assert flags["default_model"] == "llama3.2:3b" and flags["pull_default_model"] is True


def test_bad_value_exits_2_naming_setting(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path), "LLM_AGENT_RUNTIME_URL": "localhost:11434"}
    assert main(["--no-tray"], env) == 2
    err = capsys.readouterr().err
    assert "runtime_url" in err and "LLM_AGENT_RUNTIME_URL" in err


def test_autostart_flag_on_linux(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    assert main(["--autostart", "status"], env) == 0
    assert capsys.readouterr().out.strip() == "disabled"
    assert main(["--autostart", "enable"], env) == 0
    assert capsys.readouterr().out.strip() == "enabled"
    assert (tmp_path / "autostart" / "llm-router-agent.desktop").is_file()
    assert main(["--autostart", "disable"], env) == 0
    assert capsys.readouterr().out.strip() == "disabled"


def test_has_display() -> None:
    assert has_display({}, "win32") and has_display({}, "darwin")
    assert not has_display({}, "linux")
    assert has_display({"DISPLAY": ":0"}, "linux") and has_display(
        {"WAYLAND_DISPLAY": "w"}, "linux"
    )


def test_managed_ollama_listens_where_the_router_can_reach_it(tmp_path: Path) -> None:
    from agent.service import AgentService

    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    svc = AgentService(load_config({"runtime_url": "http://127.0.0.1:11500"}, env), env={})
    assert svc._runtime_env()["OLLAMA_HOST"] == "0.0.0.0:11500"
    svc = AgentService(load_config({"runtime_url": "http://10.1.2.3:11434"}, env), env={})
    assert svc._runtime_env()["OLLAMA_HOST"] == "10.1.2.3:11434"
    own = AgentService(load_config({}, env), env={"OLLAMA_HOST": "192.168.0.9:1"})
    assert own._runtime_env()["OLLAMA_HOST"] == "192.168.0.9:1"


def test_settings_reload_keeps_flags_except_edited_ones(tmp_path: Path) -> None:
    from agent.cli import settings_reloader
    from agent.config import save_settings

    f = tmp_path / "agent.toml"
    save_settings(f, {"router_url": ["http://saved:1"], "node_name": "saved"})
    args = build_parser().parse_args(
        ["--router", "http://flag:1", "--manage-runtime", "--runtime-command", "rt serve"]
    )
    reload = settings_reloader(flags_from_args(args), {"XDG_CONFIG_HOME": str(tmp_path)})
    cfg = reload(f)
    assert cfg.router_url == ("http://saved:1",) and cfg.node_name == "saved"
    assert cfg.manage_runtime is True and cfg.runtime_command == ("rt", "serve")
