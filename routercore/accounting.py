"""What a finished request leaves behind: live stats, the node's record, one history row.

Kept apart from the request path (proxy.py), which only fills an `Attempt` and hands it over.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from routercore.stats import METRIC_LABEL_MAX, OTHER_MODEL, LiveStats

if TYPE_CHECKING:
    from routercore.http.messages import Request
    from routercore.prefix import PromptPrefix
    from routercore.providers import Providers
    from routercore.registry import NodeRegistry
    from routercore.store import Store
    from routercore.usage import TailScanner

# History rows are handed to the store in batches: one wake-up of its writer thread (and one
# transaction) per batch instead of per request. Flushed when full, on a timer, and at shutdown
# (RouterService.stop).
_ROWS_BATCH = 256
# Stored model names and error texts are cut to these lengths (characters).
HISTORY_MODEL_MAX = 256
HISTORY_ERROR_MAX = 1024
_ROWS_DELAY = 0.05

_ids = random.Random()  # seeded from os.urandom; request ids need to be unique, not secret
# The id's first 13 hex digits (the millisecond and the version), formatted once per millisecond.
_ms_text: tuple[int, str] = (-1, "")


def request_id() -> str:
    """A version 7 UUID (RFC 9562): milliseconds since the epoch, then 74 random bits.

    Time-ordered, so the history table's unique id index grows at its end instead of at a
    random place per row (cheaper for the store's writer, which shares the router's core);
    the random bits come from a seeded PRNG instead of an os.urandom system call. The text is
    formatted in parts (the millisecond's part reused), not as one 128-bit number cut in five.
    """
    global _ms_text
    ms = int(time.time() * 1000) & 0xFFFF_FFFF_FFFF
    cached = _ms_text
    if cached[0] != ms:
        h = f"{ms:012x}"
        cached = _ms_text = (ms, f"{h[:8]}-{h[8:]}-7")
    rand_a = _ids.getrandbits(12)
    rand_b = _ids.getrandbits(62)  # after the variant bits, 0b10
    # %-formatting: one C call, a third cheaper here than the f-string with three specs.
    return "%s%03x-%04x-%012x" % (  # noqa: UP031
        cached[1],
        rand_a,
        0x8000 | rand_b >> 48,
        rand_b & 0xFFFF_FFFF_FFFF,
    )


@dataclass(slots=True)
class Attempt:
    """One forwarded request: what the client asked (set when it arrives) and what forwarding
    it measured (filled in on the way, read by `Accounting.record`). Slotted: one is made
    per request and its fields are read and set a few dozen times on the way."""

    api: str  # the client's API: "openai" or "ollama"
    endpoint: str
    model: str
    streaming: bool
    started: float  # time.perf_counter() when the request arrived
    node_id: str | None = None
    status: int = 0
    ttfb_ms: float | None = None
    outcome: str = "error"
    error: str | None = None
    scanner: TailScanner | None = None
    sent_to_client: bool = False
    tried: list[str] = field(default_factory=list)
    prefix: PromptPrefix | None = None
    affinity: bool | None = None  # the pick was a prefix-affinity hit (None: no prefix)


class Accounting:
    """Records finished requests: live stats, the node's result, batched history rows."""

    def __init__(
        self,
        registry: NodeRegistry,
        store: Store,
        stats: LiveStats,
        providers: Providers | None,
    ) -> None:
        self.registry = registry
        self.store = store
        self.stats = stats
        self.providers = providers
        self._rows: list[tuple[object, ...]] = []  # in store.REQUEST_COLUMNS order
        self._rows_timer: asyncio.TimerHandle | None = None

    def record(self, request: Request, att: Attempt, ts: str) -> None:
        """Account one finished request (`ts`: when it arrived, RFC 3339)."""
        model, endpoint, node_id = att.model, att.endpoint, att.node_id
        duration = (time.perf_counter() - att.started) * 1000.0
        if att.scanner is not None and att.outcome != "rejected":
            prompt_tokens, completion_tokens = att.scanner.usage()
        else:
            prompt_tokens = completion_tokens = None
        # Labels and per-model counters only for models some node lists; what a client
        # invents is counted under one label (else every made-up name lives until restart).
        known = self.registry.knows_model(model) or self._provider_lists(model)
        if not known:
            self.stats.unknown_model_requests += 1
        self.stats.record(
            endpoint,
            model[:METRIC_LABEL_MAX] if known else OTHER_MODEL,
            node_id or "",
            att.status,
            att.outcome,
            duration,
            att.ttfb_ms,
            prompt_tokens,
            completion_tokens,
        )
        if node_id is not None and att.sent_to_client:
            self.registry.record_result(node_id, att.outcome == "ok", duration)
        if not known and node_id is None:
            # A name nothing lists, answered by the router itself: counted above
            # (llm_router_unknown_model_requests_total), no row per invented name.
            return
        self._rows.append(
            (
                request_id(),
                ts,
                node_id,
                model[:HISTORY_MODEL_MAX],
                endpoint,
                request.method,
                att.status,
                att.outcome,
                round(duration, 3),
                round(att.ttfb_ms, 3) if att.ttfb_ms is not None else None,
                prompt_tokens,
                completion_tokens,
                int(att.streaming),
                request.peer,
                att.error[:HISTORY_ERROR_MAX] if att.error else att.error,
                None if att.affinity is None else int(att.affinity),
            )
        )
        if len(self._rows) >= _ROWS_BATCH:
            self.flush_rows()
        elif self._rows_timer is None:
            self._rows_timer = asyncio.get_running_loop().call_later(_ROWS_DELAY, self.flush_rows)

    def _provider_lists(self, model: str) -> bool:
        """`model` is a configured provider's prefix plus a model that provider lists."""
        if not self.providers:
            return False
        resolved = self.providers.resolve(model)
        return resolved is not None and resolved[1] in resolved[0].models

    def flush_rows(self) -> None:
        """Hand the finished requests' history rows to the store."""
        if self._rows_timer is not None:
            self._rows_timer.cancel()
            self._rows_timer = None
        rows, self._rows = self._rows, []
        self.store.add_request_rows(rows)  # one queue item; the store owns the list now
