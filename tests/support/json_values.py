"""A Hypothesis strategy for any small JSON value: what an odd upstream may put in a field the
translators read, so the property tests can check they cope (translate or refuse, never crash)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

SHORT_TEXT = st.text(max_size=5)


def json_values(keys: st.SearchStrategy[str] = SHORT_TEXT) -> st.SearchStrategy[Any]:
    """Nulls, booleans, 64-bit integers, finite-or-infinite floats (no NaN), short strings, and
    lists and objects of them (object keys drawn from `keys`)."""
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**63 - 1)
        | st.floats(allow_nan=False)
        | SHORT_TEXT
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
        max_leaves=10,
    )


def some_of(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """An object holding any subset of `fields`, each drawn from its own strategy."""
    return st.fixed_dictionaries({}, optional=fields)
