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


def _per_user_dir(
    env: Mapping[str, str] | None,
    platform: str | None,
    windows: tuple[str, str],
    xdg: tuple[str, str],
) -> Path:
    """APP_DIR in a per-user base directory: on Windows and elsewhere an environment variable
    names it, else the fallback below the home directory (`windows`, `xdg`: variable, fallback);
    macOS keeps config and data alike in Application Support."""
    env = os.environ if env is None else env
    platform = platform or sys.platform
    if platform == "darwin":
        return Path.home() / "Library" / "Application Support" / APP_DIR
    variable, fallback = windows if platform == "win32" else xdg
    return Path(env.get(variable) or str(Path.home() / fallback)) / APP_DIR


def user_config_dir(env: Mapping[str, str] | None = None, platform: str | None = None) -> Path:
    """Where the agent's TOML config lives unless `--config` says otherwise."""
    return _per_user_dir(
        env, platform, ("APPDATA", "AppData/Roaming"), ("XDG_CONFIG_HOME", ".config")
    )


def user_data_dir(env: Mapping[str, str] | None = None, platform: str | None = None) -> Path:
    """Where a downloaded runtime is installed: per user, so no administrator rights are needed."""
    return _per_user_dir(
        env, platform, ("LOCALAPPDATA", "AppData/Local"), ("XDG_DATA_HOME", ".local/share")
    )


def default_config_path(env: Mapping[str, str] | None = None, platform: str | None = None) -> Path:
    return user_config_dir(env, platform) / "agent.toml"
