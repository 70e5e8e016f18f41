"""Server-side HTTP/1.1 wire facade: the compiled routercore._wire (ext/wire.pyx), or its
pure-Python twin routercore._wire_py, which documents the fast path and its h11 fallback.

Both have one API and frame the same bytes (tests/unit/test_wire.py runs every case on both and
compares them with each other and with h11). The LLM_ROUTER_NO_EXTENSIONS /
LLM_ROUTER_REQUIRE_EXTENSIONS switches are read in routercore/extensions.py. The event markers
(NEED_DATA, END, ...) are the twin's objects in both, so `event is END` holds for either.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from routercore import _wire_py, extensions
from routercore._wire_py import CLOSED, NEED_DATA, NOT_SIMPLE, PAUSED, Event
from routercore.sentinel import END

_choice = extensions.Choice("routercore._wire", _wire_py)
COMPILED_AVAILABLE, COMPILED_UNAVAILABLE_REASON, IMPLEMENTATION = _choice.status()
implementation = _choice.implementation

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


if TYPE_CHECKING:
    # Both modules share one API; the twin is the one mypy can read.
    Head = _wire_py.Head
    ServerWire = _wire_py.ServerWire
    parse_simple_head = _wire_py.parse_simple_head
else:
    Head = _choice.selected.Head
    ServerWire = _choice.selected.ServerWire
    parse_simple_head = _choice.selected.parse_simple_head
