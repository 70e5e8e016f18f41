"""Settings: the form validates and saves the TOML the agent reads back; the window opens."""

from __future__ import annotations

import os
import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import load_config
from agent.settings_window import SettingsForm
from tests.support.agents import xvfb_display
from tests.support.commands import run_python

GOOD = {
    "router_url": "http://10.0.0.5:8080, http://10.0.0.6:8080",
    "registration_token": "reg-secret",
    "node_name": "gpu-box-1",
    "runtime_url": "http://127.0.0.1:8000",
}


def test_form_starts_from_config(tmp_path: Path) -> None:
    f = tmp_path / "agent.toml"
    f.write_text('router_url = ["http://a:1", "http://b:2"]\nnode_name = "n"\n')
    form = SettingsForm(load_config({}, {}, f))
    assert form.initial == {
        "router_url": "http://a:1,http://b:2",
        "registration_token": "",
        "node_name": "n",
        "runtime_url": "http://127.0.0.1:11434",
    }
    assert form.path == f


def test_save_then_read_back(tmp_path: Path) -> None:
    f = tmp_path / "cfg" / "agent.toml"
    form = SettingsForm(load_config({"config_path": str(f)}, {"XDG_CONFIG_HOME": str(tmp_path)}))
    assert form.save(GOOD) == {}
    cfg = load_config({}, {}, f)
    assert cfg.router_url == ("http://10.0.0.5:8080", "http://10.0.0.6:8080")
    assert cfg.registration_token == "reg-secret"
    assert cfg.node_name == "gpu-box-1"
    assert cfg.runtime_url == "http://127.0.0.1:8000"
    # Clearing the token removes it from the file.
    assert SettingsForm(cfg).save({**GOOD, "registration_token": ""}) == {}
    assert load_config({}, {}, f).registration_token is None


def test_invalid_fields_are_reported_and_nothing_is_written(tmp_path: Path) -> None:
    f = tmp_path / "agent.toml"
    form = SettingsForm(load_config({"config_path": str(f)}, {"XDG_CONFIG_HOME": str(tmp_path)}))
    bad = {**GOOD, "router_url": "10.0.0.5:8080", "node_name": "  ", "runtime_url": "http://x:0x"}
    errors = form.save(bad)
    assert set(errors) == {"router_url", "node_name", "runtime_url"}
    assert "http" in errors["router_url"]
    assert not f.exists()
    assert form.validate(GOOD) == {}


@pytest.fixture
def xvfb() -> Iterator[str]:
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb not installed")
    with xvfb_display() as display:
        yield display


def test_window_opens_validates_and_saves_on_xvfb(xvfb: str, tmp_path: Path) -> None:
    f = tmp_path / "agent.toml"
    f.write_text('node_name = "before"\n')
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from agent.config import load_config
        from agent.settings_window import SettingsForm, SettingsWindow
        w = SettingsWindow(SettingsForm(load_config({{}}, {{}}, Path({str(f)!r}))))
        w.root.update()
        assert w.root.winfo_viewable()
        assert w.vars["node_name"].get() == "before"
        w.vars["runtime_url"].set("nonsense")
        w.on_save()
        assert "runtime_url" in w.error.cget("text") and not w.saved
        w.vars["runtime_url"].set("http://127.0.0.1:9000")
        w.vars["node_name"].set("after")
        w.root.after(0, w.on_save)
        print("saved" if w.run() else "cancelled")
        """
    )
    env = {**os.environ, "DISPLAY": xvfb}
    done = run_python("-c", script, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "saved"
    cfg = load_config({}, {}, f)
    assert (cfg.node_name, cfg.runtime_url) == ("after", "http://127.0.0.1:9000")


def test_settings_entry_point_without_display_fails_cleanly(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    done = run_python("-m", "agent.settings_window", "--config", str(tmp_path / "a.toml"), env=env)
    assert done.returncode == 2
    assert "cannot open a window" in done.stderr
