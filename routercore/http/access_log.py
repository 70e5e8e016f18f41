"""The access log: one `routercore.access` line per answered request.

Format: `METHOD PATH STATUS 12.3ms node=NODE peer=PEER` (`-` for an unknown status or node),
with ` aborted` appended when the response was cut. The connection calls `AccessLog.record`
once per request and nothing else here, so how the line is written (today: a logging call on
the loop; later perhaps batched off it) can change in this module alone.
"""

from __future__ import annotations

import logging
import time

_log = logging.getLogger("routercore.access")


class AccessLog:
    """Writes the access lines of one server; `enabled=False` writes none."""

    __slots__ = ("enabled",)

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def record(
        self,
        method: str,
        path: str,
        status: int,
        started: float | None,
        *,
        node: str,
        peer: str,
        aborted: bool = False,
    ) -> None:
        """`started`: `time.perf_counter()` when the request was read (None: answered at once,
        logged as 0.0 ms). The duration is taken here, after the `enabled` check."""
        if not self.enabled:
            return
        ms = 0.0 if started is None else (time.perf_counter() - started) * 1000.0
        _log.info(
            "%s %s %s %.1fms node=%s peer=%s%s",
            method,
            path,
            status or "-",
            ms,
            node or "-",
            peer,
            " aborted" if aborted else "",
        )
