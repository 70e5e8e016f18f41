"""Collecting the ERROR records a test provokes, from every thread: the routers the tests start
run on threads of their own, where pytest's caplog does not look. The `error_log` fixture (in
tests/conftest.py) installs one on the root logger for a test."""

from __future__ import annotations

import logging


class ErrorLog(logging.Handler):
    """Keeps every ERROR (and worse) record it sees, in order."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
