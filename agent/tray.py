"""The tray icon: colour by state, a tooltip with router and state, and the agent's menu.

pystray is imported only when a tray is built: on a machine without a display importing it
raises, and the headless agent must not depend on it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import subprocess
import sys
import threading
import webbrowser
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from agent.autostart import Autostart
from agent.config import AgentConfig, load_config
from agent.paths import ICON_DIR
from agent.service import AgentService
from agent.state import DEGRADED, OFFLINE, ONLINE, Snapshot
from agent.status_file import status_path, write_status

log = logging.getLogger(__name__)

# The disc colour of each state's icon (agent/icons/tray-*.png, drawn by scripts/make_icons.py).
COLOURS = {ONLINE: (46, 160, 67), DEGRADED: (230, 160, 20), OFFLINE: (200, 45, 45)}
TOOLTIP_MAX = 127  # Windows truncates tray tooltips at 128 characters


def icon_path(status: str) -> Path:
    return ICON_DIR / f"tray-{status if status in COLOURS else OFFLINE}.png"


@functools.cache
def icon_image(status: str) -> Image.Image:
    """The state's tray icon (64 x 64 RGBA), read once per state; unknown states look offline."""
    with Image.open(icon_path(status)) as image:
        return image.convert("RGBA")


def tooltip(snapshot: Snapshot, router_urls: tuple[str, ...]) -> str:
    """`LLM Router agent: online` + router URL(s) + what is going on, within Windows' limit."""
    lines = [f"LLM Router agent: {'paused' if snapshot.paused else snapshot.status}"]
    lines.append(router_urls[0] + (f" (+{len(router_urls) - 1})" if len(router_urls) > 1 else ""))
    if not snapshot.runtime_up:
        lines.append("runtime not answering")
    if snapshot.activity:
        lines.append(snapshot.activity)
    text = "\n".join(lines)
    return text if len(text) <= TOOLTIP_MAX else text[: TOOLTIP_MAX - 1] + "…"


def pystray_available() -> bool:
    """Whether a tray can be shown (pystray picks a backend, needing a display, at import)."""
    try:
        import pystray  # noqa: F401
    except Exception as exc:  # Xlib raises its own error types when there is no display
        log.info("tray_unavailable error=%s", exc)
        return False
    return True


def settings_command(config_path: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "agent.settings_window",
        "--config",
        str(config_path),
        "--status",
        str(status_path(config_path)),
    ]


class TrayApp:
    """Binds the service's state to a pystray Icon and its menu actions to the service."""

    def __init__(
        self,
        service: AgentService,
        autostart: Autostart,
        *,
        open_url: Callable[[str], object] = webbrowser.open,
        launch: Callable[[list[str]], subprocess.Popen[bytes]] = subprocess.Popen,
        reload_config: Callable[[Path], AgentConfig] | None = None,
    ) -> None:
        self.service = service
        self.autostart = autostart
        self.open_url = open_url
        self.launch = launch
        self.reload_config = reload_config or (lambda path: load_config(config_file=path))
        self.icon: Any = None
        self._settings_proc: subprocess.Popen[bytes] | None = None
        self._pending: Snapshot | None = None
        self._dirty = threading.Event()
        self._closed = threading.Event()

    # menu actions: pystray calls them as action(icon, item) on its own thread
    def on_open_dashboard(self, icon: Any = None, item: Any = None) -> None:
        self.open_url(self.service.config.dashboard_url)

    def on_settings(self, icon: Any = None, item: Any = None) -> None:
        """Open the settings window as its own process (tkinter wants its own main thread)."""
        if self._settings_proc is not None and self._settings_proc.poll() is None:
            return  # already open
        path = self.service.config.config_path
        proc = self.launch(settings_command(path))
        self._settings_proc = proc
        threading.Thread(target=self._await_settings, args=(proc, path), daemon=True).start()

    def _await_settings(self, proc: subprocess.Popen[bytes], path: Path) -> None:
        if proc.wait() != 0:
            return  # cancelled
        try:
            config = self.reload_config(path)
        except ValueError as exc:
            log.error("settings_reload_failed error=%s", exc)
            return
        self.service.apply_config(config)

    def on_toggle_autostart(self, icon: Any = None, item: Any = None) -> None:
        try:
            if self.autostart.is_enabled():
                self.autostart.disable()
            else:
                self.autostart.enable()
        except OSError as exc:
            log.error("autostart_change_failed error=%s", exc)

    def autostart_checked(self, item: Any = None) -> bool:
        try:
            return self.autostart.is_enabled()
        except OSError:
            return False

    def on_toggle_pause(self, icon: Any = None, item: Any = None) -> None:
        self.service.set_paused(not self.service.state.snapshot.paused)

    def paused_checked(self, item: Any = None) -> bool:
        return self.service.state.snapshot.paused

    def on_quit(self, icon: Any = None, item: Any = None) -> None:
        self.service.request_stop()
        self.stop()

    def menu(self) -> Any:
        import pystray

        item, separator = pystray.MenuItem, pystray.Menu.SEPARATOR
        return pystray.Menu(
            item("Open dashboard", self.on_open_dashboard, default=True),
            item("Settings…", self.on_settings),
            item("Start at login", self.on_toggle_autostart, checked=self.autostart_checked),
            item("Pause serving", self.on_toggle_pause, checked=self.paused_checked),
            separator,
            item("Quit", self.on_quit),
        )

    def build(self) -> Any:
        import pystray

        snap = self.service.state.snapshot
        self.icon = pystray.Icon(
            "llm-router-agent",
            icon=icon_image(snap.status),
            title=tooltip(snap, self.service.config.router_url),
            menu=self.menu(),
        )
        self.service.state.subscribe(self.refresh)
        threading.Thread(target=self._refresher, name="tray-refresh", daemon=True).start()
        self.refresh(snap)  # the settings window's status file exists from the start
        return self.icon

    def refresh(self, snapshot: Snapshot) -> None:
        """State listener: hand the snapshot to the refresher thread; never blocks.

        Some backends (X11) run icon updates on their own loop and wait for it: done on the
        agent's event loop that could stall heartbeats, so a separate thread does it.
        """
        self._pending = snapshot
        self._dirty.set()

    def _refresher(self) -> None:
        while True:
            self._dirty.wait()
            self._dirty.clear()
            if self._closed.is_set():
                return
            snapshot = self._pending
            if snapshot is not None:
                try:
                    self.apply(snapshot)
                except Exception:  # a tray hiccup must not end the refresher
                    log.debug("tray_refresh_failed", exc_info=True)
                self.write_status(snapshot)

    def write_status(self, snapshot: Snapshot) -> None:
        """For the settings window, which shows each router's connection (status_file.py)."""
        path = status_path(self.service.config.config_path)
        try:
            write_status(path, snapshot)
        except OSError as exc:
            log.debug("status_file_failed path=%s error=%s", path, exc)

    def apply(self, snapshot: Snapshot) -> None:
        """Recolour and retitle the icon for `snapshot`."""
        icon = self.icon
        if icon is None:
            return
        icon.icon = icon_image(snapshot.status)
        icon.title = tooltip(snapshot, self.service.config.router_url)
        try:
            icon.update_menu()
        except Exception:  # some backends cannot update before the icon is shown
            log.debug("tray_menu_update_failed", exc_info=True)

    def run(self, setup: Callable[[Any], None] | None = None) -> None:
        """Blocking: pystray's loop on this (the main) thread."""
        icon = self.icon or self.build()

        def guarded_setup(icon: Any) -> None:
            if not self._closed.is_set():
                if setup is not None:
                    setup(icon)
                else:
                    icon.visible = True

        try:
            icon.run(setup=guarded_setup)
        except Exception:
            self._closed.set()
            # pystray's setup thread (not a daemon) waits for "ready" forever after a failed
            # run, which would keep the process alive at exit: release it (it does nothing now).
            with contextlib.suppress(Exception):
                icon._mark_ready()
            raise

    def stop(self) -> None:
        self._closed.set()
        self._dirty.set()
        if self.icon is not None:
            try:
                self.icon.stop()
            except Exception:  # a backend whose loop never ran cannot stop it
                log.debug("tray_stop_failed", exc_info=True)
