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


class Choice:
    """One facade's pick: the compiled module if it loaded, else the twin; both on request."""

    def __init__(self, compiled_name: str, twin: ModuleType) -> None:
        loaded, self.unavailable_reason = load(compiled_name)
        self.compiled: ModuleType | None = loaded[0] if loaded else None
        self.twin = twin
        self.compiled_name = compiled_name

    @property
    def available(self) -> bool:
        return self.compiled is not None

    def status(self) -> tuple[bool, str | None, str]:
        """What a facade exports about its pick: available, why not, "cython"/"python"."""
        return self.available, self.unavailable_reason, "cython" if self.available else "python"

    @property
    def selected(self) -> ModuleType:
        return self.compiled if self.compiled is not None else self.twin

    def implementation(self, name: str) -> ModuleType:
        """The module of one implementation ("cython"/"python"), for tests and the bench."""
        if name == "python":
            return self.twin
        if name == "cython":
            if self.compiled is None:
                raise ImportError(
                    f"cython {self.compiled_name} unavailable: {self.unavailable_reason}"
                )
            return self.compiled
        raise ValueError(f"unknown implementation {name!r}; valid choices: cython, python")
