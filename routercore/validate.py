"""Small field readers for JSON bodies: each failure is a ClientError naming the field."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from routercore.errors import ClientError


def _type_error(name: str, expected: str, value: Any) -> ClientError:
    got = type(value).__name__ if value is not None else "null"
    return ClientError(f"field '{name}' must be {expected}, got {got}")


def _list_field(
    data: dict[str, Any],
    name: str,
    expected: str,
    max_items: int,
    *,
    each: Callable[[Any], bool] | None = None,
) -> list[Any] | None:
    """The list under `name` (None when absent or null), of at most `max_items` items each
    passing `each`; the list readers below check their items further."""
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or (each is not None and not all(each(v) for v in value)):
        raise _type_error(name, expected, value)
    if len(value) > max_items:
        raise ClientError(f"field '{name}' has more than {max_items} items")
    return value


def _of_type(data: dict[str, Any], name: str, kind: type, expected: str) -> Any:
    """The value under `name` (None when absent or null), which must be a `kind`."""
    value = data.get(name)
    if value is not None and not isinstance(value, kind):
        raise _type_error(name, expected, value)
    return value


def get_str(
    data: dict[str, Any],
    name: str,
    *,
    required: bool = False,
    max_len: int = 1024,
    default: str | None = None,
) -> str | None:
    value: str | None = _of_type(data, name, str, "a string")
    if value is None:
        if required:
            raise ClientError(f"field '{name}' is required")
        return default
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
    value = data.get(name)
    if value is None:
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
    value: bool | None = _of_type(data, name, bool, "true or false")
    return default if value is None else value


def get_str_list(
    data: dict[str, Any], name: str, *, max_items: int = 4096, max_len: int = 512
) -> list[str] | None:
    value = _list_field(data, name, "a list of strings", max_items)
    if value is None:
        return None
    for item in value:
        if not isinstance(item, str) or len(item) > max_len:
            raise ClientError(f"field '{name}' must hold strings of at most {max_len} characters")
    return list(dict.fromkeys(value))  # first occurrence wins, in linear time


def get_dict(data: dict[str, Any], name: str) -> dict[str, Any] | None:
    value: dict[str, Any] | None = _of_type(data, name, dict, "an object")
    return value


def get_dict_list(
    data: dict[str, Any], name: str, *, max_items: int = 256
) -> list[dict[str, Any]] | None:
    return _list_field(
        data, name, "a list of objects", max_items, each=lambda v: isinstance(v, dict)
    )


# -- nested objects --------------------------------------------------------------------------

# Known keys of a nested object: key -> (kind, maximum). Other keys may hold short scalars.
Spec = dict[str, tuple[str, int]]
MAX_EXTRA_KEYS = 16
MAX_KEY_LEN = 64
MAX_SCALAR_LEN = 256
MAX_COUNT = 1 << 62  # byte counts, core counts: far above any machine, inside 64 bits


def check_object(value: Any, name: str, spec: Spec) -> dict[str, Any]:
    """A flat JSON object whose known keys have the spec's types and bounds and whose other
    keys are few and hold short scalars; the ClientError names the offending field, so a
    record that would break whoever reads it later is refused at the door."""
    if not isinstance(value, dict):
        raise _type_error(name, "an object", value)
    extra = 0
    for key, item in value.items():
        where = f"{name}.{key}"
        rule = spec.get(key)
        if item is None:
            continue
        if rule is None:
            extra += 1
            if extra > MAX_EXTRA_KEYS or len(key) > MAX_KEY_LEN:
                raise ClientError(
                    f"field '{name}' may hold at most {MAX_EXTRA_KEYS} keys besides "
                    f"{', '.join(spec)}, with names of at most {MAX_KEY_LEN} characters"
                )
            if isinstance(item, str):
                rule = ("str", MAX_SCALAR_LEN)
            elif isinstance(item, bool | int | float):
                continue
            else:
                raise ClientError(f"field '{where[:100]}' must be a string, number or boolean")
        kind, maximum = rule
        if kind == "str":
            if not isinstance(item, str):
                raise _type_error(where, "a string", item)
            if len(item) > maximum:
                raise ClientError(f"field '{where}' is longer than {maximum} characters")
        elif isinstance(item, bool) or not isinstance(item, int):
            raise _type_error(where, "an integer", item)
        elif not 0 <= item <= maximum:
            raise ClientError(f"field '{where}' must be between 0 and {maximum}")
    return value


GPU_DEVICE: Spec = {
    "model": ("str", 256),
    "count": ("int", 1024),
    "memory_bytes": ("int", MAX_COUNT),
}
SYSTEM: Spec = {
    "os": ("str", 256),
    "cpu_model": ("str", 256),
    "cpu_count": ("int", 1 << 20),
    "memory_bytes": ("int", MAX_COUNT),
}


def get_object(data: dict[str, Any], name: str, spec: Spec) -> dict[str, Any] | None:
    value = data.get(name)
    return None if value is None else check_object(value, name, spec)


def get_object_list(
    data: dict[str, Any], name: str, spec: Spec, *, max_items: int
) -> list[dict[str, Any]] | None:
    value = _list_field(data, name, "a list of objects", max_items)
    if value is None:
        return None
    return [check_object(item, f"{name}[{i}]", spec) for i, item in enumerate(value)]
