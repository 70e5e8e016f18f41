"""The tray with pystray's dummy backend: icon colours, tooltip, and every menu action.

The service behind it is real (its loop runs in a thread against closed ports), so pause,
settings reload and quit are checked on the service itself.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from agent.autostart import XdgAutostart
from agent.cli import run_service
from agent.config import AgentConfig, load_config
from agent.paths import APP_ICON, ICON_DIR
from agent.service import AgentService
from agent.state import DEGRADED, OFFLINE, ONLINE, RouterLink, Snapshot
from agent.tray import (
    COLOURS,
    TrayApp,
    icon_image,
    icon_path,
    settings_command,
    tooltip,
)
from routercore.testing.processes import free_port
from tests.support import ROOT
from tests.support.polling import wait_until


@pytest.fixture(autouse=True, scope="module")
def dummy_pystray() -> None:
    """pystray picks its backend at first import: import it with the dummy one, env restored."""
    saved = os.environ.get("PYSTRAY_BACKEND")
    os.environ["PYSTRAY_BACKEND"] = "dummy"
    try:
        import pystray
    finally:
        if saved is None:
            del os.environ["PYSTRAY_BACKEND"]
        else:
            os.environ["PYSTRAY_BACKEND"] = saved
    if pystray.Icon.__module__ != "pystray._base":
        pytest.skip(f"pystray already loaded with {pystray.Icon.__module__}")


def make_config(tmp_path: Path) -> AgentConfig:
    cfg_file = tmp_path / "agent.toml"
    cfg_file.write_text(
        f'router_url = "http://127.0.0.1:{free_port()}"\n'
        f'runtime_url = "http://127.0.0.1:{free_port()}"\n'
        'node_name = "tray-node"\nruntime_poll_interval = 0.2\n'
        f'install_dir = "{tmp_path / "rt"}"\n'
    )
    return load_config({}, {}, cfg_file)


@pytest.fixture
def running_service(tmp_path: Path) -> Iterator[AgentService]:
    service = AgentService(make_config(tmp_path), env={})
    thread = threading.Thread(target=run_service, args=(service,), daemon=True)
    thread.start()
    wait_until(lambda: service._stop is not None, message="service loop")
    yield service
    service.request_stop()
    thread.join(20)
    assert not thread.is_alive()


class Launcher:
    """Stands in for subprocess.Popen of the settings window: runs a script that saves."""

    def __init__(self, script: str) -> None:
        self.script = script
        self.commands: list[list[str]] = []

    def __call__(self, command: list[str]) -> subprocess.Popen[bytes]:
        self.commands.append(command)
        return subprocess.Popen([sys.executable, "-c", self.script])


# A pixel of the disc below the hub, clear of the white glyph.
DISC = (32, 52)


def test_icon_colours_by_state() -> None:
    for status, colour in COLOURS.items():
        img = icon_image(status)
        assert img.size == (64, 64) and img.mode == "RGBA"
        assert img.getpixel(DISC) == (*colour, 255)
        assert img.getpixel((32, 32)) == (255, 255, 255, 255)  # the hub
        corner = img.getpixel((0, 0))
        assert isinstance(corner, tuple) and corner[3] == 0  # transparent corner
    assert icon_image("weird").getpixel(DISC) == (*COLOURS[OFFLINE], 255)


def test_icon_files_are_what_the_script_draws() -> None:
    """The committed icons are reproducible: a redraw gives the same pixels, same colours."""
    spec = importlib.util.spec_from_file_location("make_icons", ROOT / "scripts" / "make_icons.py")
    assert spec is not None and spec.loader is not None
    make_icons = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_icons)
    assert make_icons.STATE_COLOURS == COLOURS
    assert make_icons.differences(ICON_DIR) == []
    assert icon_path(ONLINE).parent == ICON_DIR and APP_ICON.parent == ICON_DIR
    with Image.open(APP_ICON) as ico:
        assert ico.format == "ICO"
        assert {(16, 16), (32, 32), (48, 48), (256, 256)} <= set(ico.info["sizes"])


def test_snapshot_status_rules() -> None:
    up = RouterLink("http://a", registered=True)
    down = RouterLink("http://b")
    assert Snapshot(routers=(down,), runtime_up=True).status == OFFLINE
    assert Snapshot(routers=(up,), runtime_up=True).status == ONLINE
    assert Snapshot(routers=(up, down), runtime_up=True).status == DEGRADED
    assert Snapshot(routers=(up,), runtime_up=False).status == DEGRADED
    assert Snapshot(routers=(up,), runtime_up=True, paused=True).status == DEGRADED


def test_tooltip_has_router_state_and_activity() -> None:
    snap = Snapshot(routers=(RouterLink("http://r:8080"),), activity="installing runtime 45%")
    text = tooltip(snap, ("http://r:8080", "http://r2:8080"))
    assert text.splitlines() == [
        "LLM Router agent: offline",
        "http://r:8080 (+1)",
        "runtime not answering",
        "installing runtime 45%",
    ]
    long = tooltip(Snapshot(activity="x" * 300), ("http://r",))
    assert len(long) <= 127


def test_menu_actions(running_service: AgentService, tmp_path: Path) -> None:
    service = running_service
    opened: list[str] = []
    autostart = XdgAutostart(["python3", "-m", "agent"], {"XDG_CONFIG_HOME": str(tmp_path / "xdg")})
    new_router = f"http://127.0.0.1:{free_port()}"
    launcher = Launcher(
        "from pathlib import Path; from agent.config import save_settings; "
        f"save_settings(Path({str(service.config.config_path)!r}), "
        f"{{'node_name': 'renamed', 'router_url': [{new_router!r}]}})"
    )
    tray = TrayApp(service, autostart, open_url=opened.append, launch=launcher)
    icon = tray.build()
    items = {item.text: item for item in icon.menu.items}
    assert list(items) == [
        "Open dashboard",
        "Settings…",
        "Start at login",
        "Pause serving",
        "- - - -",
        "Quit",
    ]
    assert icon.title.startswith("LLM Router agent: offline")
    assert icon.icon.getpixel(DISC) == (*COLOURS[OFFLINE], 255)

    items["Open dashboard"](icon)
    assert opened == [service.config.dashboard_url]

    assert not items["Start at login"].checked
    items["Start at login"](icon)
    assert autostart.path.is_file() and items["Start at login"].checked
    items["Start at login"](icon)
    assert not autostart.path.exists() and not items["Start at login"].checked

    assert not items["Pause serving"].checked
    items["Pause serving"](icon)
    assert service.state.snapshot.paused and items["Pause serving"].checked
    wait_until(lambda: icon.title.startswith("LLM Router agent: paused"), message="paused title")
    items["Pause serving"](icon)
    assert not service.state.snapshot.paused

    items["Settings…"](icon)
    assert launcher.commands == [settings_command(service.config.config_path)]
    wait_until(lambda: service.config.node_name == "renamed", message="settings applied")
    assert service.config.router_url == (new_router,)
    wait_until(lambda: [r.url for r in service.state.snapshot.routers] == [new_router])

    items["Quit"](icon)
    wait_until(lambda: service._stop is not None and service._stop.is_set(), message="stop")
    assert tray._closed.is_set()


def test_state_changes_recolour_icon(tmp_path: Path) -> None:
    service = AgentService(make_config(tmp_path), env={})
    tray = TrayApp(service, XdgAutostart(["x"], {"XDG_CONFIG_HOME": str(tmp_path)}))
    icon: Any = tray.build()
    url = service.config.router_url[0]

    def colour() -> object:
        return icon.icon.getpixel(DISC)

    service.state.update_router(url, registered=True)
    service.state.update(runtime_up=True)
    wait_until(lambda: colour() == (*COLOURS[ONLINE], 255), message="green")
    assert icon.title.startswith("LLM Router agent: online")
    service.state.update(runtime_up=False)
    wait_until(lambda: colour() == (*COLOURS[DEGRADED], 255), message="amber")
    service.state.update(activity="installing runtime 12%")
    wait_until(lambda: "installing runtime 12%" in icon.title, message="tooltip")
    tray.stop()
