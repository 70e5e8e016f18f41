"""Start at login: XDG autostart for real, macOS plist in a temp home, Windows via a fake RunKey."""

from __future__ import annotations

import plistlib
import shlex
import subprocess
from pathlib import Path

import pytest

from agent.autostart import (
    APP_NAME,
    LAUNCH_AGENT_LABEL,
    LaunchAgentAutostart,
    WindowsAutostart,
    WinregRunKey,
    XdgAutostart,
    for_platform,
    launch_command,
)

COMMAND = ["/opt/my python/bin/python3", "-m", "agent", "--config", "/home/u/agent 100%.toml"]


def test_xdg_enable_query_disable(tmp_path: Path) -> None:
    auto = XdgAutostart(COMMAND, {"XDG_CONFIG_HOME": str(tmp_path)})
    assert not auto.is_enabled()
    auto.enable()
    path = tmp_path / "autostart" / "llm-router-agent.desktop"
    assert path.is_file() and auto.is_enabled()
    text = path.read_text()
    assert "[Desktop Entry]" in text and "Type=Application" in text
    exec_line = next(line for line in text.splitlines() if line.startswith("Exec="))
    # The desktop spec's quoting is shell-like once `%%` is unescaped.
    assert shlex.split(exec_line[5:].replace("%%", "%")) == COMMAND
    auto.enable()  # idempotent
    auto.disable()
    assert not path.exists() and not auto.is_enabled()
    auto.disable()  # idempotent


def test_xdg_entry_switched_off_by_desktop_counts_as_disabled(tmp_path: Path) -> None:
    auto = XdgAutostart(COMMAND, {"XDG_CONFIG_HOME": str(tmp_path)})
    auto.enable()
    auto.path.write_text(auto.path.read_text() + "Hidden=true\n")
    assert not auto.is_enabled()


def test_launch_agent_plist(tmp_path: Path) -> None:
    auto = LaunchAgentAutostart(COMMAND, home=tmp_path)
    assert not auto.is_enabled()
    auto.enable()
    data = plistlib.loads(auto.path.read_bytes())
    assert data["Label"] == LAUNCH_AGENT_LABEL
    assert data["ProgramArguments"] == COMMAND and data["RunAtLoad"] is True
    assert auto.path == tmp_path / "Library" / "LaunchAgents" / f"{LAUNCH_AGENT_LABEL}.plist"
    auto.disable()
    assert not auto.is_enabled()


class FakeRunKey:
    """Stands in for HKCU\\Software\\Microsoft\\Windows\\CurrentVersion\\Run."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def get(self, name: str) -> str | None:
        return self.values.get(name)

    def set(self, name: str, value: str) -> None:
        self.values[name] = value

    def delete(self, name: str) -> None:
        self.values.pop(name, None)


def test_windows_run_key_through_fake() -> None:
    key = FakeRunKey()
    cmd = [r"C:\Program Files\Python311\pythonw.exe", "-m", "agent"]
    auto = WindowsAutostart(cmd, key)
    assert not auto.is_enabled()
    auto.enable()
    assert key.values[APP_NAME] == r'"C:\Program Files\Python311\pythonw.exe" -m agent'
    assert auto.is_enabled()
    auto.disable()
    assert key.values == {} and not auto.is_enabled()
    auto.disable()


def test_real_winreg_refuses_off_windows() -> None:
    with pytest.raises(OSError):
        WinregRunKey().get(APP_NAME)


def test_launch_command_prefers_pythonw_on_windows(tmp_path: Path) -> None:
    exe = tmp_path / "python.exe"
    exe.write_text("")
    assert launch_command("win32", str(exe)) == [str(exe), "-m", "agent"]
    (tmp_path / "pythonw.exe").write_text("")
    assert launch_command("win32", str(exe))[0] == str(tmp_path / "pythonw.exe")
    assert launch_command("linux", "/usr/bin/python3") == ["/usr/bin/python3", "-m", "agent"]


def test_for_platform_picks_backend(tmp_path: Path) -> None:
    assert isinstance(for_platform("win32", command=["x"]), WindowsAutostart)
    assert isinstance(for_platform("darwin", command=["x"]), LaunchAgentAutostart)
    assert isinstance(
        for_platform("linux", {"XDG_CONFIG_HOME": str(tmp_path)}, ["x"]), XdgAutostart
    )


def test_windows_quoting_matches_list2cmdline() -> None:
    cmd = ["C:\\a b\\python.exe", "-m", "agent", "--config", 'C:\\x "y".toml']
    assert WindowsAutostart(cmd, FakeRunKey()).value == subprocess.list2cmdline(cmd)
