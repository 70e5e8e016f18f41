"""Persistence through APSW: schema migrations, one batching writer thread, off-loop reads.

The event loop only ever enqueues: every write method turns its arguments into bound SQL
parameters at once (a copy) and puts them on a `queue.SimpleQueue`; the proxy's history rows
go as one list per batch (`add_request_rows`), which the store owns from then on. A single
writer thread commits them in batches and survives busy/locked/full/IO errors by keeping the
batch and retrying with backoff. A caller that must not answer before its change is on disk (a
registration) awaits `committed()`, a marker queued behind it. Dashboard reads run on a
dedicated reader thread with its own connection.

A package split along those seams: `schema` (migrations, connections), `rows` (columns,
statements, row mapping), `writer` (the writer thread) and `database` (`Store`: life cycle,
enqueue, reads). Every name is re-exported here, so callers import from `routercore.store`.
"""

from routercore.store.database import Store
from routercore.store.rows import (
    API_KEY_COLUMNS,
    METRIC_COLUMNS,
    NODE_COLUMNS,
    OUTCOMES,
    REQUEST_COLUMNS,
    SAMPLE_COLUMNS,
)
from routercore.store.schema import MIGRATIONS, connect, migrate
from routercore.store.writer import _SQL_SEQ_RANGE

__all__ = [
    "API_KEY_COLUMNS",
    "METRIC_COLUMNS",
    "MIGRATIONS",
    "NODE_COLUMNS",
    "OUTCOMES",
    "REQUEST_COLUMNS",
    "SAMPLE_COLUMNS",
    "_SQL_SEQ_RANGE",
    "Store",
    "connect",
    "migrate",
]
