"""Helpers the tests share, so that no test module imports another (issue 17 item 4).

One concept per module; docs/architecture.md lists them. Fixtures stay in the conftest.py
files; child processes start through routercore.testing.processes, which the benchmark shares.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
