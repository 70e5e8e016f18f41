"""json_limits: request JSON bounded in arrays/objects and values before orjson builds it."""

from __future__ import annotations

import json

import pytest

from routercore.errors import ClientError
from routercore.http import json_limits
from routercore.http.json_limits import MAX_CONTAINERS, MAX_VALUES


@pytest.mark.parametrize(
    "body",
    [
        b"[" + b"[]," * MAX_CONTAINERS + b"[]]",
        b"[" + b"{}," * MAX_CONTAINERS + b"{}]",
        b'{"a": [' + b"[1]," * MAX_CONTAINERS + b"[1]]}",
    ],
)
def test_too_many_containers_are_refused(body: bytes) -> None:
    with pytest.raises(ClientError, match="arrays and objects") as info:
        json_limits.loads(body)
    assert info.value.status == 400 and info.value.code == "json_too_complex"


@pytest.mark.parametrize(
    "body",
    [
        b"[" + b"0," * MAX_VALUES + b"0]",
        b"[" + b'"",' * MAX_VALUES + b'""]',
        b"[" + b'"\\"",' * MAX_VALUES + b'""]',  # escaped quotes do not hide strings
    ],
)
def test_too_many_values_are_refused(body: bytes) -> None:
    with pytest.raises(ClientError, match="JSON values"):
        json_limits.loads(body)


def test_commas_and_brackets_inside_strings_do_not_count() -> None:
    text = 'a, [b], {c}, "q" \\ ' * (MAX_VALUES // 2)
    data = {"model": "m", "messages": [{"content": text}, {"content": text}]}
    body = json.dumps(data).encode()
    assert json_limits.loads(body) == data


def test_within_the_bounds_everything_parses_as_before() -> None:
    data = {"model": "m", "input": [list(range(5)) for _ in range(MAX_CONTAINERS - 10)]}
    body = json.dumps(data).encode()
    assert json_limits.loads(body) == data
    assert json_limits.loads(b'{"model": "m"}') == {"model": "m"}


def test_deep_nesting_is_bounded_by_the_parser() -> None:
    with pytest.raises(json_limits.orjson.JSONDecodeError):
        json_limits.loads(b"[" * 5000 + b"]" * 5000)
