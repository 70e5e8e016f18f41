"""Small field readers for JSON bodies: each failure is a ClientError naming the field."""

from __future__ import annotations

from typing import Any

from routercore.errors import ClientError

_MISSING = object()


def _type_error(name: str, expected: str, value: Any) -> ClientError:
    got = type(value).__name__ if value is not None else "null"
    return ClientError(f"field '{name}' must be {expected}, got {got}")


def get_str(
    data: dict[str, Any],
    name: str,
    *,
    required: bool = False,
    max_len: int = 1024,
    default: str | None = None,
) -> str | None:
    value = data.get(name, _MISSING)
    if value is _MISSING or value is None:
        if required:
            raise ClientError(f"field '{name}' is required")
        return default
    if not isinstance(value, str):
        raise _type_error(name, "a string", value)
    if required and not value.strip():
        raise ClientError(f"field '{name}' must not be empty")
    if len(value) > max_len:
        raise ClientError(f"field '{name}' is longer than {max_len} characters")
    return value


def get_int(
    data: dict[str, Any],
    name: str,
    *,
    default: int | None = None,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int | None:
    value = data.get(name, _MISSING)
    if value is _MISSING or value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type_error(name, "an integer", value)
    if minimum is not None and value < minimum:
        raise ClientError(f"field '{name}' must be >= {minimum}")
    if maximum is not None and value > maximum:
        raise ClientError(f"field '{name}' must be <= {maximum}")
    return value


def get_percent(data: dict[str, Any], name: str) -> float | None:
    """A percentage 0-100 or null."""
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _type_error(name, "a number or null", value)
    if not 0.0 <= float(value) <= 100.0:
        raise ClientError(f"field '{name}' must be between 0 and 100")
    return float(value)


def get_bool(data: dict[str, Any], name: str, *, default: bool | None = None) -> bool | None:
    value = data.get(name, _MISSING)
    if value is _MISSING or value is None:
        return default
    if not isinstance(value, bool):
        raise _type_error(name, "true or false", value)
    return value


def get_str_list(
    data: dict[str, Any], name: str, *, max_items: int = 4096, max_len: int = 512
) -> list[str] | None:
    value = data.get(name, _MISSING)
    if value is _MISSING or value is None:
        return None
    if not isinstance(value, list):
        raise _type_error(name, "a list of strings", value)
    if len(value) > max_items:
        raise ClientError(f"field '{name}' has more than {max_items} items")
    out: list[str] = []
    for item in value:
        if not isinstance(item, str) or len(item) > max_len:
            raise ClientError(f"field '{name}' must hold strings of at most {max_len} characters")
        if item not in out:
            out.append(item)
    return out


def get_dict(data: dict[str, Any], name: str) -> dict[str, Any] | None:
    value = data.get(name, _MISSING)
    if value is _MISSING or value is None:
        return None
    if not isinstance(value, dict):
        raise _type_error(name, "an object", value)
    return value


def get_dict_list(
    data: dict[str, Any], name: str, *, max_items: int = 256
) -> list[dict[str, Any]] | None:
    value = data.get(name, _MISSING)
    if value is _MISSING or value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise _type_error(name, "a list of objects", value)
    if len(value) > max_items:
        raise ClientError(f"field '{name}' has more than {max_items} items")
    return value
