"""Progress reporting: a console bar, and a fan-out so the tray tooltip can show a percentage."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TextIO

ProgressCallback = Callable[[int, int | None], None]


def percent(done: int, total: int | None) -> int | None:
    if not total:
        return None
    return max(0, min(100, int(done * 100 / total)))


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"


def render_bar(label: str, done: int, total: int | None, width: int = 30) -> str:
    """One line such as `runtime [#########.....]  45%  12.3/27.0 MiB`."""
    pct = percent(done, total)
    if pct is None:
        return f"{label} {_mib(done)}"
    filled = width * pct // 100
    bar = "#" * filled + "." * (width - filled)
    return f"{label} [{bar}] {pct:3d}%  {_mib(done)}/{_mib(total or 0)}"


class ConsoleProgress:
    """Redraws one line on a terminal; on a pipe it prints a line per 10% so logs stay short."""

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last: int | None = -1
        self._last_bytes = 0

    def __call__(self, done: int, total: int | None) -> None:
        pct = percent(done, total)
        if self._tty:
            if pct != self._last or (pct is None and done - self._last_bytes >= 1 << 20):
                self.stream.write("\r" + render_bar(self.label, done, total))
                self.stream.flush()
                self._last, self._last_bytes = pct, done
            return
        step = None if pct is None else pct // 10
        if step != self._last and step is not None:
            self.stream.write(render_bar(self.label, done, total) + "\n")
            self.stream.flush()
            self._last = step

    def finish(self) -> None:
        if self._tty and self._last != -1:
            self.stream.write("\n")
            self.stream.flush()


def fan_out(*callbacks: ProgressCallback | None) -> ProgressCallback:
    """One callback that calls each of `callbacks`."""
    targets = [cb for cb in callbacks if cb is not None]

    def call(done: int, total: int | None) -> None:
        for cb in targets:
            cb(done, total)

    return call
