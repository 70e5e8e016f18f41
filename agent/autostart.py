"""Start the agent at login: the Windows Run key, an XDG autostart entry, or a macOS LaunchAgent.

Each backend answers enable/disable/is_enabled. The Windows one talks to the registry through a
small `RunKey` interface so it can be exercised off Windows with a fake.
"""

from __future__ import annotations

import os
import plistlib
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

APP_NAME = "LLMRouterAgent"
DESKTOP_FILE = "llm-router-agent.desktop"
LAUNCH_AGENT_LABEL = "io.llm-router.agent"
RUN_KEY_PATH = r"Software\Microsoft\Windows\CurrentVersion\Run"


class Autostart(Protocol):
    def is_enabled(self) -> bool: ...
    def enable(self) -> None: ...
    def disable(self) -> None: ...


def launch_command(platform: str | None = None, executable: str | None = None) -> list[str]:
    """How the login session should start the agent: this interpreter with `-m agent`.

    On Windows `pythonw.exe` is preferred so no console window opens at login.
    """
    platform = platform or sys.platform
    exe = executable or sys.executable
    if platform == "win32":
        candidate = Path(exe).with_name("pythonw.exe")
        if candidate.is_file():
            exe = str(candidate)
    return [exe, "-m", "agent"]


# --- Windows ------------------------------------------------------------------------------------


class RunKey(Protocol):
    """The few registry operations needed on HKCU\\...\\CurrentVersion\\Run."""

    def get(self, name: str) -> str | None: ...
    def set(self, name: str, value: str) -> None: ...
    def delete(self, name: str) -> None: ...


class WinregRunKey:
    """RunKey on the real registry (Windows only; `winreg` is imported when first used)."""

    def get(self, name: str) -> str | None:
        if sys.platform != "win32":
            raise OSError("the Windows registry exists only on Windows")
        import winreg

        try:
            with winreg.OpenKey(winreg.HKEY_CURRENT_USER, RUN_KEY_PATH) as key:
                value, _ = winreg.QueryValueEx(key, name)
                return str(value)
        except FileNotFoundError:
            return None

    def set(self, name: str, value: str) -> None:
        if sys.platform != "win32":
            raise OSError("the Windows registry exists only on Windows")
        import winreg

        with winreg.CreateKeyEx(
            winreg.HKEY_CURRENT_USER, RUN_KEY_PATH, 0, winreg.KEY_SET_VALUE
        ) as key:
            winreg.SetValueEx(key, name, 0, winreg.REG_SZ, value)

    def delete(self, name: str) -> None:
        if sys.platform != "win32":
            raise OSError("the Windows registry exists only on Windows")
        import winreg

        try:
            with winreg.OpenKey(
                winreg.HKEY_CURRENT_USER, RUN_KEY_PATH, 0, winreg.KEY_SET_VALUE
            ) as key:
                winreg.DeleteValue(key, name)
        except FileNotFoundError:
            pass


class WindowsAutostart:
    def __init__(self, command: Sequence[str], run_key: RunKey | None = None) -> None:
        self.value = subprocess.list2cmdline(list(command))
        self.run_key = run_key or WinregRunKey()

    def is_enabled(self) -> bool:
        return self.run_key.get(APP_NAME) is not None

    def enable(self) -> None:
        self.run_key.set(APP_NAME, self.value)

    def disable(self) -> None:
        self.run_key.delete(APP_NAME)


# --- Linux and other XDG desktops ----------------------------------------------------------------


def _desktop_quote(arg: str) -> str:
    """Quote one Exec= argument as the Desktop Entry spec asks (and escape `%`)."""
    arg = arg.replace("%", "%%")
    if arg and not any(c in arg for c in " \t\n\"'\\><~|&;$*?#()`"):
        return arg
    escaped = arg.replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`").replace("$", "\\$")
    return f'"{escaped}"'


class XdgAutostart:
    """`$XDG_CONFIG_HOME/autostart/llm-router-agent.desktop`, read by GNOME, KDE, XFCE, ..."""

    def __init__(self, command: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        self.path = Path(base) / "autostart" / DESKTOP_FILE
        self.command = list(command)

    def desktop_entry(self) -> str:
        return "\n".join(
            [
                "[Desktop Entry]",
                "Type=Application",
                "Name=LLM Router Agent",
                "Comment=Registers this machine with an LLM Router",
                "Exec=" + " ".join(_desktop_quote(a) for a in self.command),
                "Terminal=false",
                "X-GNOME-Autostart-enabled=true",
                "",
            ]
        )

    def is_enabled(self) -> bool:
        if not self.path.is_file():
            return False
        text = self.path.read_text(encoding="utf-8", errors="replace")
        # A user can switch an entry off in their desktop's settings without deleting it.
        return "Hidden=true" not in text and "X-GNOME-Autostart-enabled=false" not in text

    def enable(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(self.desktop_entry(), encoding="utf-8")
        os.replace(tmp, self.path)

    def disable(self) -> None:
        self.path.unlink(missing_ok=True)


# --- macOS --------------------------------------------------------------------------------------


class LaunchAgentAutostart:
    """`~/Library/LaunchAgents/io.llm-router.agent.plist` with RunAtLoad: loaded at next login."""

    def __init__(self, command: Sequence[str], home: Path | None = None) -> None:
        self.path = (
            (home or Path.home()) / "Library" / "LaunchAgents" / f"{LAUNCH_AGENT_LABEL}.plist"
        )
        self.command = list(command)

    def plist(self) -> bytes:
        return plistlib.dumps(
            {
                "Label": LAUNCH_AGENT_LABEL,
                "ProgramArguments": self.command,
                "RunAtLoad": True,
                "KeepAlive": False,
                "ProcessType": "Interactive",
            }
        )

    def is_enabled(self) -> bool:
        return self.path.is_file()

    def enable(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_bytes(self.plist())

    def disable(self) -> None:
        self.path.unlink(missing_ok=True)


def for_platform(
    platform: str | None = None,
    env: Mapping[str, str] | None = None,
    command: Sequence[str] | None = None,
) -> Autostart:
    """The backend for this OS."""
    platform = platform or sys.platform
    command = list(command) if command is not None else launch_command(platform)
    if platform == "win32":
        return WindowsAutostart(command)
    if platform == "darwin":
        return LaunchAgentAutostart(command)
    return XdgAutostart(command, env)
