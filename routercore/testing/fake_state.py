"""The fake node's mutable state: settings, faults and counters (sans-IO, no loop needed)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from routercore.errors import ConfigError

APIS = ("both", "ollama", "openai")
FAULTS = ("refuse", "status500", "status429", "drop_after", "hang", "garbage")
DEFAULT_MODELS = ("fake-model",)
RUNTIME_VERSION = "0.0.0-fake"
_MAX_PATHS = 256  # distinct paths counted before the rest are lumped under "other"


def _non_negative_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"{name} must be a number >= 0")
    return float(value)


def _non_negative_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name} must be an integer >= 0")
    return value


def _percent_or_none(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 100:
        raise ConfigError(f"{name} must be a percentage 0-100 or null")
    return float(value)


def parse_models(value: Any) -> list[str]:
    """Accept a list of names or a comma-separated string; reject empties and duplicates."""
    if isinstance(value, str):
        value = [m.strip() for m in value.split(",") if m.strip()]
    if not isinstance(value, list | tuple) or not all(isinstance(m, str) and m for m in value):
        raise ConfigError("models must be a list of non-empty strings")
    return list(dict.fromkeys(value))


def model_digest(name: str) -> str:
    """A stable fake digest so /api/tags and /api/ps look like a real runtime's."""
    return hashlib.sha256(name.encode()).hexdigest()


@dataclass
class Settings:
    """What the node serves and how fast; changed at run time via `FakeNode.configure`."""

    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    api: str = "both"
    tokens: int = 8
    token_delay: float = 0.0
    first_token_delay: float = 0.0
    embedding_dim: int = 8
    cpu_usage: float | None = None  # reported in heartbeats; None: measure with psutil
    memory_usage: float | None = None
    _lookup: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.update({})

    def update(self, changes: dict[str, Any]) -> None:
        """Validate everything first, then apply, so a bad request changes nothing."""
        new: dict[str, Any] = {}
        for key, value in changes.items():
            if key == "models":
                new[key] = parse_models(value)
            elif key == "api":
                if value not in APIS:
                    raise ConfigError(f"api must be one of {', '.join(APIS)}")
                new[key] = value
            elif key in ("tokens",):
                new[key] = _non_negative_int(key, value)
            elif key == "embedding_dim":
                if _non_negative_int(key, value) < 1:
                    raise ConfigError("embedding_dim must be >= 1")
                new[key] = value
            elif key in ("token_delay", "first_token_delay"):
                new[key] = _non_negative_float(key, value)
            elif key in ("cpu_usage", "memory_usage"):
                new[key] = _percent_or_none(key, value)
            else:
                raise ConfigError(f"unknown setting {key!r}")
        for key, value in new.items():
            setattr(self, key, value)
        self.models = parse_models(self.models)
        lookup: dict[str, str] = {}
        for name in self.models:
            lookup[name] = name
            # Ollama treats "x" and "x:latest" as the same model.
            alias = name[: -len(":latest")] if name.endswith(":latest") else name + ":latest"
            lookup.setdefault(alias, name)
        self._lookup = lookup

    def resolve(self, model: str) -> str | None:
        """The configured name for `model`, or None when this node does not serve it."""
        return self._lookup.get(model)

    def add_model(self, name: str) -> bool:
        """Add a model (as /api/pull does); False when it was already there."""
        if self.resolve(name) is not None:
            return False
        self.update({"models": [*self.models, name]})
        return True

    def remove_model(self, name: str) -> bool:
        """Remove a model (as /api/delete does); False when this node does not have it."""
        found = self.resolve(name)
        if found is None:
            return False
        self.update({"models": [m for m in self.models if m != found]})
        return True

    def serves(self, api: str) -> bool:
        return self.api == "both" or self.api == api

    def snapshot(self) -> dict[str, Any]:
        return {
            "models": list(self.models),
            "api": self.api,
            "tokens": self.tokens,
            "token_delay": self.token_delay,
            "first_token_delay": self.first_token_delay,
            "embedding_dim": self.embedding_dim,
            "cpu_usage": self.cpu_usage,
            "memory_usage": self.memory_usage,
        }


@dataclass
class Faults:
    """Injected failures. `times[name]` limits a fault to the next N requests it hits."""

    refuse: bool = False
    status500: bool = False
    status429: bool = False  # a rate limit: 429 with Retry-After, as cloud providers answer
    drop_after: int | None = None
    hang: bool = False
    garbage: bool = False
    times: dict[str, int] = field(default_factory=dict)

    def set(self, name: str, value: Any = True, times: int | None = None) -> None:
        """Switch one fault on (or off with a false value / None)."""
        if name not in FAULTS:
            raise ConfigError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}")
        if name == "drop_after":
            if value is not None and value is not False:
                value = _non_negative_int("drop_after", value)
            else:
                value = None
        elif not isinstance(value, bool):
            raise ConfigError(f"fault {name} takes true or false")
        if times is not None and (_non_negative_int("times", times) < 1):
            raise ConfigError("times must be >= 1")
        setattr(self, name, value)
        if times is not None and value not in (None, False):
            self.times[name] = times
        else:
            self.times.pop(name, None)

    def clear(self) -> None:
        for name in FAULTS:
            setattr(self, name, None if name == "drop_after" else False)
        self.times.clear()

    def take(self, name: str) -> bool:
        """True when fault `name` hits this request; spends one of its `times`."""
        value = getattr(self, name)
        if value is None or value is False:
            return False
        left = self.times.get(name)
        if left is not None:
            if left <= 1:
                self.set(name, None if name == "drop_after" else False)
            else:
                self.times[name] = left - 1
        return True

    def any_request_fault(self) -> bool:
        """Cheap check for the hot path: is any per-request fault on?"""
        return (
            self.status500
            or self.status429
            or self.hang
            or self.garbage
            or self.drop_after is not None
        )

    def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: getattr(self, name) for name in FAULTS}
        out["times"] = dict(self.times)
        return out


@dataclass
class Stats:
    """Counters served by GET /_fake/stats; every field is plain data."""

    requests: dict[str, int] = field(default_factory=dict)
    requests_total: int = 0
    in_flight: int = 0
    completed: int = 0
    cancelled: int = 0
    dropped: int = 0
    errors: int = 0
    last_body_size: int = 0
    connections_total: int = 0
    connections_open: int = 0

    def count_request(self, path: str, body_size: int) -> None:
        requests = self.requests
        if path in requests:
            requests[path] += 1
        elif len(requests) < _MAX_PATHS:
            requests[path] = 1
        else:
            requests["other"] = requests.get("other", 0) + 1
        self.requests_total += 1
        self.last_body_size = body_size

    def reset(self) -> None:
        """Zero the counters but keep the live gauges (in-flight, open connections)."""
        self.requests = {}
        self.requests_total = self.completed = self.cancelled = self.dropped = self.errors = 0
        self.last_body_size = self.connections_total = 0

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "requests_total": self.requests_total,
            "in_flight": self.in_flight,
            "completed": self.completed,
            "cancelled": self.cancelled,
            "dropped": self.dropped,
            "errors": self.errors,
            "last_body_size": self.last_body_size,
            "connections_total": self.connections_total,
            "connections_open": self.connections_open,
        }
