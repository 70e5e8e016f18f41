"""Per-user directories for the agent's config file and installed runtime, per platform; and
where the agent's own icons are (drawn by scripts/make_icons.py, shipped in the package)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

APP_DIR = "llm-router"
ICON_DIR = Path(__file__).resolve().parent / "icons"
APP_ICON = ICON_DIR / "llm-router.ico"  # Windows shortcut and installer (16 to 256 px)
APP_ICON_PNG = ICON_DIR / "llm-router.png"  # the agent's windows (tkinter wants PNG)


def user_config_dir(env: Mapping[str, str] | None = None, platform: str | None = None) -> Path:
    """Where the agent's TOML config lives unless `--config` says otherwise."""
    env = os.environ if env is None else env
    platform = platform or sys.platform
    if platform == "win32":
        base = env.get("APPDATA") or str(Path.home() / "AppData" / "Roaming")
    elif platform == "darwin":
        base = str(Path.home() / "Library" / "Application Support")
    else:
        base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / APP_DIR


def user_data_dir(env: Mapping[str, str] | None = None, platform: str | None = None) -> Path:
    """Where a downloaded runtime is installed: per user, so no administrator rights are needed."""
    env = os.environ if env is None else env
    platform = platform or sys.platform
    if platform == "win32":
        base = env.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
    elif platform == "darwin":
        base = str(Path.home() / "Library" / "Application Support")
    else:
        base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / APP_DIR


def default_config_path(env: Mapping[str, str] | None = None, platform: str | None = None) -> Path:
    return user_config_dir(env, platform) / "agent.toml"
