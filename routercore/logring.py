"""The router's recent log lines, kept in memory for `GET /api/logs`, and the masking every
log line gets before the API returns it (the router's own and the agents' alike): the same
`mask_secrets` as every log record's (routercore.logsafe)."""

from __future__ import annotations

import collections
import logging

from routercore.logsafe import mask_secrets

__all__ = ["FORMAT", "LEVELS", "LogRing", "mask_secrets", "parse_level"]

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


def parse_level(text: str | None) -> int:
    """`debug`..`critical` (any case) to a logging level; empty: everything."""
    if not text:
        return 0
    level = LEVELS.get(text.strip().lower())
    if level is None:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}")
    return level


class LogRing(logging.Handler):
    """A logging handler keeping the newest `size` records as formatted lines."""

    def __init__(self, size: int) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter(FORMAT))
        self.records: collections.deque[tuple[int, str]] = collections.deque(maxlen=size)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.records.append((record.levelno, self.format(record)))
        except Exception:  # a bad format argument must not break the caller
            self.handleError(record)

    def extend(self, lines: list[str], level: int = logging.INFO) -> None:
        """Lines already formatted as FORMAT (the access log's batches)."""
        self.records.extend((level, line) for line in lines)

    def tail(self, lines: int, min_level: int = 0) -> list[str]:
        """The newest `lines` lines at or above `min_level`, oldest first, masked."""
        picked: list[str] = []
        for level, text in reversed(self.records):
            if level >= min_level:
                picked.append(text)
                if len(picked) >= lines:
                    break
        picked.reverse()
        return [mask_secrets(text) for text in picked]
