"""Server-side HTTP/1.1 wire facade: the compiled routercore._wire (ext/wire.pyx), or its
pure-Python twin routercore._wire_py, which documents the fast path and its h11 fallback.

Both have one API and frame the same bytes (tests/unit/test_wire.py runs every case on both and
compares them with each other and with h11). The LLM_ROUTER_NO_EXTENSIONS /
LLM_ROUTER_REQUIRE_EXTENSIONS switches are read in routercore/extensions.py. The event markers
(NEED_DATA, END, ...) are the twin's objects in both, so `event is END` holds for either.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any

from routercore import _wire_py, extensions
from routercore._wire_py import CLOSED, NEED_DATA, NOT_SIMPLE, PAUSED, Event
from routercore.sentinel import END

__all__ = [
    "CLOSED",
    "COMPILED_AVAILABLE",
    "COMPILED_UNAVAILABLE_REASON",
    "END",
    "IMPLEMENTATION",
    "NEED_DATA",
    "NOT_SIMPLE",
    "PAUSED",
    "Event",
    "Head",
    "ServerWire",
    "implementation",
    "parse_simple_head",
]

_loaded, COMPILED_UNAVAILABLE_REASON = extensions.load("routercore._wire")
_compiled: Any = _loaded[0] if _loaded else None
COMPILED_AVAILABLE: bool = _compiled is not None
IMPLEMENTATION: str = "cython" if COMPILED_AVAILABLE else "python"

if TYPE_CHECKING:
    # Both modules share one API; the twin is the one mypy can read.
    Head = _wire_py.Head
    ServerWire = _wire_py.ServerWire
    parse_simple_head = _wire_py.parse_simple_head
else:
    _selected = _compiled if COMPILED_AVAILABLE else _wire_py
    Head = _selected.Head
    ServerWire = _selected.ServerWire
    parse_simple_head = _selected.parse_simple_head


def implementation(name: str) -> ModuleType:
    """The wire module of one implementation ("cython"/"python"), for tests and the bench."""
    if name == "python":
        return _wire_py
    if name == "cython":
        if _compiled is None:
            raise ImportError(f"cython wire unavailable: {COMPILED_UNAVAILABLE_REASON}")
        module: ModuleType = _compiled
        return module
    raise ValueError(f"unknown implementation {name!r}; valid choices: cython, python")
