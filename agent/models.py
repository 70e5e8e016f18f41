"""Model pulls through the runtime's own pull API, and the default model chosen by memory size."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from agent.backoff import Backoff
from agent.httpjson import TransportError, stream_ndjson
from agent.progress import ProgressCallback

log = logging.getLogger(__name__)
GIB = 1024**3


class PullError(Exception):
    pass


def choose_default_model(total_memory_bytes: int, table: Sequence[tuple[float, str]]) -> str:
    """The model of the largest table row whose `min_memory_gb` this machine has."""
    rows = sorted(table, key=lambda r: -r[0])
    if not rows:
        raise ValueError("empty model table")
    for min_gb, model in rows:
        if total_memory_bytes >= min_gb * GIB:
            return model
    return rows[-1][1]  # smaller than every row: the smallest model is the best bet


def has_model(models: Sequence[str], name: str) -> bool:
    """Ollama names default to the `latest` tag: `llama3` and `llama3:latest` are the same."""

    def norm(n: str) -> str:
        return n if ":" in n else n + ":latest"

    return norm(name) in {norm(m) for m in models}


def pull_model(
    runtime_url: str,
    name: str,
    *,
    progress: ProgressCallback | None = None,
    on_status: Callable[[str], None] | None = None,
    retries: int = 3,
    timeout: float = 60.0,
    sleep: Callable[[float], None] = time.sleep,
    cancel: threading.Event | None = None,
) -> None:
    """`POST /api/pull` with streamed progress; retried with backoff when the stream breaks.

    Ollama resumes layer downloads itself, so a retry does not start from zero.
    """
    url = runtime_url.rstrip("/") + "/api/pull"
    backoff = Backoff(1.0, 30.0)
    attempt = 0
    while True:
        try:
            for event in stream_ndjson(
                "POST", url, {"model": name, "stream": True}, timeout=timeout
            ):
                if cancel is not None and cancel.is_set():
                    raise PullError(f"pull {name}: cancelled")
                if not isinstance(event, dict):
                    continue
                if event.get("error"):
                    raise PullError(f"pull {name}: {event['error']}")
                status = str(event.get("status", ""))
                if on_status and status:
                    on_status(status)
                total, completed = event.get("total"), event.get("completed")
                if progress and isinstance(total, int) and total > 0:
                    progress(int(completed or 0), total)
                if status == "success":
                    log.info("model_pulled model=%s", name)
                    return
            raise TransportError(f"pull {name}: stream ended without success")
        except TransportError as exc:
            attempt += 1
            if attempt > retries:
                raise PullError(f"pull {name} failed after {attempt} attempts: {exc}") from exc
            delay = backoff.next_delay()
            log.warning("model_pull_retry model=%s delay=%.1fs error=%s", name, delay, exc)
            sleep(delay)
