"""A fake LLM runtime speaking the Ollama and OpenAI protocols, for tests, demos and benchmarks.

`FakeNode` runs inside the caller's event loop; `run_in_thread` gives it a loop of its own for
sync code. Settings and faults change at run time from Python or over `POST /_fake/config`.
This module is the public surface (and `python -m routercore.testing.fakenode`). The pieces:
fake_runtime (`FakeNode` itself), fake_state (settings/faults/stats), fake_api + fake_bodies
(sans-IO handlers), fake_server (asyncio + h11 transport), fake_register (router registration
and heartbeats), fake_cli (the console script). They import downwards only, none of them this.

Control endpoints (never counted in the stats, never hit by faults):
  GET  /_fake/stats   counters (requests by path, in_flight, completed, cancelled, dropped,
                      errors, last_body_size, connections) + settings, faults, registration
  GET  /_fake/config  {"settings": {...}, "faults": {...}}
  POST /_fake/config  {"tokens": 3, "token_delay": 0.01, "models": [...], "clear_faults": true,
                       "faults": {"status500": true, "drop_after": 3,
                                  "refuse": {"value": true, "seconds": 2, "times": null}}}
  POST /_fake/reset   zero the counters
"""

from __future__ import annotations

import sys

from routercore.errors import ConfigError
from routercore.testing.fake_cli import main
from routercore.testing.fake_runtime import FakeNode, ThreadedFakeNode, run_in_thread

__all__ = ["ConfigError", "FakeNode", "ThreadedFakeNode", "main", "run_in_thread"]

if __name__ == "__main__":
    sys.exit(main())
