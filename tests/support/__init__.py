"""Helpers the tests share, so that no test module imports another (issue 17 item 4).

One concept per module: `polling` (waiting with a deadline), `routers` (a router in a thread or
as a process, the blocking HTTP client), `agents` (the agent's child processes), `netservers`
(a file server with faults, a forward proxy, a test certificate), `raw_http` (a strict raw
HTTP/1.1 client around an in-loop server), `websocket` (raw frames and a wsproto client),
`browser` (Playwright's chromium and the dashboard page), `nodes` (a registration body),
`logs` (collecting ERROR records), `release` (the release artifacts), `registry_fakes` (a fake
clock and an in-memory node store). Fixtures stay in the conftest.py files.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
