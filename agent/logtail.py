"""The agent's recent log lines, kept in memory so a router can ask for them (the router
asks in a heartbeat answer; the lines go back in the next heartbeat)."""

from __future__ import annotations

import collections
import logging
import threading

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class LogTail(logging.Handler):
    """A logging handler holding the newest `size` formatted lines (any thread may log)."""

    def __init__(self, size: int = 2000) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter(FORMAT))
        self._lines: collections.deque[str] = collections.deque(maxlen=size)
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:
            self.handleError(record)
            return
        with self._guard:
            self._lines.append(text)

    def tail(self, lines: int) -> list[str]:
        with self._guard:
            if lines <= 0:
                return []
            return list(self._lines)[-lines:]
