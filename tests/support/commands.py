"""Running `python -m ...` (or `python -c ...`) to its end, for the tests of a command line."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping

from tests.support import ROOT


def run_python(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """This interpreter with `args`, from the repository root, its output captured as text."""
    return subprocess.run(
        [sys.executable, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
