"""The agent's observable state, shared between the asyncio loops and the tray thread."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace

ONLINE = "online"
DEGRADED = "degraded"
OFFLINE = "offline"


@dataclass(frozen=True)
class RouterLink:
    url: str
    registered: bool = False
    agent_id: str | None = None
    error: str | None = None
    last_heartbeat: float | None = None  # time.time() of the last heartbeat the router took


@dataclass(frozen=True)
class Snapshot:
    routers: tuple[RouterLink, ...] = ()
    runtime_up: bool = False
    runtime_kind: str | None = None
    models: tuple[str, ...] = ()
    paused: bool = False
    activity: str | None = None  # e.g. "installing runtime 45%", shown in the tooltip
    runtime_started_by_agent: bool = False

    @property
    def status(self) -> str:
        """online: every router has us and the runtime serves; offline: no router has us."""
        registered = [r for r in self.routers if r.registered]
        if not registered:
            return OFFLINE
        if len(registered) < len(self.routers) or not self.runtime_up or self.paused:
            return DEGRADED
        return ONLINE


Listener = Callable[[Snapshot], None]


class AgentState:
    """Holds the latest Snapshot; listeners run on the thread that made the change."""

    def __init__(self, router_urls: tuple[str, ...] = ()) -> None:
        self._lock = threading.Lock()
        self._snap = Snapshot(routers=tuple(RouterLink(u) for u in router_urls))
        self._listeners: list[Listener] = []

    @property
    def snapshot(self) -> Snapshot:
        with self._lock:
            return self._snap

    def subscribe(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def update(self, **changes: object) -> Snapshot:
        with self._lock:
            new = replace(self._snap, **changes)  # type: ignore[arg-type]
            changed = new != self._snap
            self._snap = new
            listeners = list(self._listeners)
        if changed:
            for listener in listeners:
                listener(new)
        return new

    def set_routers(self, urls: tuple[str, ...]) -> None:
        self.update(routers=tuple(RouterLink(u) for u in urls))

    def update_router(self, url: str, **changes: object) -> Snapshot:
        with self._lock:
            routers = tuple(
                replace(r, **changes) if r.url == url else r  # type: ignore[arg-type]
                for r in self._snap.routers
            )
        return self.update(routers=routers)
