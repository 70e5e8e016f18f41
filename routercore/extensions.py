"""Loads the optional compiled modules (ext/*.pyx) for the facades that pick them over their
pure-Python twins (balancer.py, http/wire.py), with one meaning for the two switches.

The switch mirrors aiohttp's: a compiled module is used when it imports, unless
LLM_ROUTER_NO_EXTENSIONS=1 (then it is not even loaded); LLM_ROUTER_REQUIRE_EXTENSIONS=1 turns a
missing build into an ImportError so CI cannot silently test only the twins.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

NO_EXTENSIONS = os.environ.get("LLM_ROUTER_NO_EXTENSIONS") == "1"
REQUIRE_EXTENSIONS = os.environ.get("LLM_ROUTER_REQUIRE_EXTENSIONS") == "1"
_BUILD_HINT = "run `python setup.py build_ext --inplace`"


def load(*names: str) -> tuple[list[ModuleType] | None, str | None]:
    """The compiled modules `names` (all or none), or None and the reason they are not used."""
    if NO_EXTENSIONS:
        return None, "LLM_ROUTER_NO_EXTENSIONS=1"
    try:
        return [importlib.import_module(name) for name in names], None
    except ImportError as exc:
        if REQUIRE_EXTENSIONS:
            raise ImportError(
                f"LLM_ROUTER_REQUIRE_EXTENSIONS=1 but {' or '.join(names)} is not built "
                f"({_BUILD_HINT})"
            ) from exc
        return None, f"{names[-1]} not built ({exc}); {_BUILD_HINT}"
