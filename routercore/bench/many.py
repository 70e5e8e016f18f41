"""The `many` section: thousands of streams at once through one router process (issue 18: 10,000).

A fresh router in the default configuration (on-disk SQLite, access log on), so that its peak
RSS (the kernel's VmHWM) belongs to this section alone. A stamping node (bare.py) answers every
request with `many_chunks` SSE events, holding each stream after its first event until all the
requests have arrived (so that they are certainly open together, however long opening them
takes), then `many_delay` s apart; it runs with the client on the load core. The client
(clients.py `many`) reads each stream to its end and says how many completed, the errors and
the most open at one moment.

The router holds two sockets per stream (client and node), so the count is capped by the hard
limit on open files, which a process without CAP_SYS_RESOURCE cannot raise; the cap is reported.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path
from typing import Any

from routercore.bench.measure import Measure
from routercore.bench.nodes import register
from routercore.bench.procs import free_port, port_open, wait_until

# Files the router opens besides the streams' sockets: listener, loop, database, logs, ...
_FD_RESERVE = 64


def raise_fd_limit() -> int:
    """Soft limit on open files up to the hard one (children inherit it); the hard limit."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def peak_rss_mb(pid: int) -> float | None:
    """The process's peak resident set size so far (VmHWM), in MB; None off Linux."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) * 1024 / 1e6, 1)
    except OSError:
        pass
    return None


def run(m: Measure) -> dict[str, Any]:
    s, p = m.s, m.p
    hard = raise_fd_limit()
    count = min(s.many_streams, (hard - _FD_RESERVE) // 2)
    rport, nport = free_port(), free_port()
    router = p.router(
        rport,
        tuned=False,
        name="router-many",
        extra_env={"LLM_ROUTER_HEARTBEAT_TIMEOUT": "86400"},  # bare.py sends no heartbeats
    )
    node = p.start(
        "stamp-many",
        [
            sys.executable,
            "-m",
            "routercore.bench.bare",
            "--port",
            str(nport),
            "--stamp-chunks",
            str(s.many_chunks),
            "--stamp-delay",
            str(s.many_delay),
            "--stamp-barrier",
            str(count),
        ],
        s.load_cores,
    )
    wait_until(lambda: node.alive() and port_open(nport), 30, "the stamping node")
    register(rport, "stamp-many", nport, ["stamp-many"])
    p.wait_online(rport, 1)
    idle_rss = p.rss_mb(router)
    cpu0 = p.cpu_times(router)
    row = m.many(rport, "stamp-many", count, timeout=s.many_chunks * s.many_delay + 300)
    row.update(
        requested=s.many_streams,
        fd_hard_limit=hard,
        stream_seconds=round((s.many_chunks - 2) * s.many_delay, 2),  # after the barrier
        router_idle_rss_mb=round(idle_rss, 1),
        router_peak_rss_mb=peak_rss_mb(router.pid),
        router_cpu_s=round(p.cpu_times(router) - cpu0, 2),
    )
    p.stop(router)
    p.stop(node)
    return row
