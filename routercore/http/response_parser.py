"""Upstream response parser facade: the compiled routercore._response_parser
(ext/response_parser.pyx), or its pure-Python twin routercore._response_parser_py, which
documents the parser.

Both parse alike, event for event and error for error (tests/unit/test_upstream_oracle.py runs
on both, against h11 and against each other). The LLM_ROUTER_NO_EXTENSIONS /
LLM_ROUTER_REQUIRE_EXTENSIONS switches are read in routercore/extensions.py. ResponseHead and
ProtocolError are the twin's objects in both, END is routercore.sentinel's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from routercore import _response_parser_py, extensions
from routercore._response_parser_py import (
    HOP_BY_HOP,
    MAX_HEAD_BYTES,
    BadStatusLine,
    Event,
    ProtocolError,
    ResponseHead,
)
from routercore.sentinel import END

_choice = extensions.Choice("routercore._response_parser", _response_parser_py)
COMPILED_AVAILABLE, COMPILED_UNAVAILABLE_REASON, IMPLEMENTATION = _choice.status()
implementation = _choice.implementation

__all__ = [
    "COMPILED_AVAILABLE",
    "COMPILED_UNAVAILABLE_REASON",
    "END",
    "HOP_BY_HOP",
    "IMPLEMENTATION",
    "MAX_HEAD_BYTES",
    "BadStatusLine",
    "Event",
    "ProtocolError",
    "ResponseHead",
    "ResponseParser",
    "implementation",
]


if TYPE_CHECKING:
    # Both parsers share one API; the twin is the one mypy can read.
    ResponseParser = _response_parser_py.ResponseParser
else:
    ResponseParser = _choice.selected.ResponseParser
