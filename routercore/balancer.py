"""Node-selection balancer facade: the compiled routercore._balancer, or its pure-Python twin.

The compiled balancer keeps its prompt-prefix index in routercore._prefix_index (the twin's:
routercore._prefix_index_py); the two extensions are used together or not at all.

The LLM_ROUTER_NO_EXTENSIONS / LLM_ROUTER_REQUIRE_EXTENSIONS switches are read in
extensions.py.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from routercore import _balancer_py, _prefix_index_py, extensions
from routercore._balancer_py import (
    ALGORITHMS,
    LATENCY,
    LEAST_LOADED,
    ROUND_ROBIN,
)

__all__ = [
    "ALGORITHMS",
    "COMPILED_AVAILABLE",
    "COMPILED_UNAVAILABLE_REASON",
    "IMPLEMENTATION",
    "LATENCY",
    "LEAST_LOADED",
    "ROUND_ROBIN",
    "Balancer",
    "make_balancer",
    "make_prefix_index",
]

log = logging.getLogger("routercore.balancer")

_loaded, COMPILED_UNAVAILABLE_REASON = extensions.load(
    "routercore._prefix_index", "routercore._balancer"
)
_compiled_index: Any = _loaded[0] if _loaded else None
_compiled: Any = _loaded[1] if _loaded else None
COMPILED_AVAILABLE: bool = _compiled is not None
IMPLEMENTATION: str = "cython" if COMPILED_AVAILABLE else "python"

if TYPE_CHECKING:
    # Both classes share one API; the twin is the one mypy can read.
    _Selected = _balancer_py.Balancer
else:
    _Selected = _compiled.Balancer if COMPILED_AVAILABLE else _balancer_py.Balancer

_logged = False


class Balancer(_Selected):
    """The balancer the router uses; says once at INFO which implementation that is."""

    __slots__ = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # The twin's signature (algorithm, prefix_entries=, affinity_epsilon=) is the one.
        global _logged
        super().__init__(*args, **kwargs)
        if not _logged:
            _logged = True
            log.info("balancer implementation=%s algorithm=%s", IMPLEMENTATION, self.algorithm)


def make_balancer(
    algorithm: str = LEAST_LOADED, implementation: str | None = None, **affinity: Any
) -> _balancer_py.Balancer:
    """A balancer of the selected implementation, or of an explicit one ("cython"/"python");
    `affinity` takes prefix_entries and affinity_epsilon."""
    if implementation is None:
        return Balancer(algorithm, **affinity)
    if implementation == "python":
        return _balancer_py.Balancer(algorithm, **affinity)
    if implementation == "cython":
        if _compiled is None:
            raise ImportError(f"cython balancer unavailable: {COMPILED_UNAVAILABLE_REASON}")
        compiled: _balancer_py.Balancer = _compiled.Balancer(algorithm, **affinity)
        return compiled
    raise ValueError(f"unknown implementation {implementation!r}; valid choices: cython, python")


def make_prefix_index(capacity: int, implementation: str) -> _prefix_index_py.PrefixIndex:
    """A bare prefix index of one implementation ("cython"/"python"), for tests and the bench."""
    if implementation == "python":
        return _prefix_index_py.PrefixIndex(capacity)
    if implementation == "cython":
        if _compiled_index is None:
            raise ImportError(f"cython prefix index unavailable: {COMPILED_UNAVAILABLE_REASON}")
        index: _prefix_index_py.PrefixIndex = _compiled_index.PrefixIndex(capacity)
        return index
    raise ValueError(f"unknown implementation {implementation!r}; valid choices: cython, python")
