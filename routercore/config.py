"""One frozen RouterConfig: defaults < TOML file < LLM_ROUTER_* env < command-line flags."""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import tomllib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from routercore.errors import ConfigError

ENV_PREFIX = "LLM_ROUTER_"
# Cloud providers every router knows by prefix: enabled when their SDK's key variable is set.
# name -> (key variable, base URL variable, default base URL of its OpenAI-compatible API)
BUILTIN_PROVIDERS = {
    "openai": ("OPENAI_API_KEY", "OPENAI_BASE_URL", "https://api.openai.com/v1"),
    "anthropic": ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "https://api.anthropic.com/v1"),
    "google": (
        "GEMINI_API_KEY",
        "GEMINI_BASE_URL",
        "https://generativelanguage.googleapis.com/v1beta/openai",
    ),
}
_PROVIDER_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,31}$")
BALANCERS = ("round_robin", "least_loaded", "latency")
LOG_LEVELS = ("debug", "info", "warning", "error")


def default_db_path() -> str:
    """A file in the user's data directory (XDG on Linux, %LOCALAPPDATA% on Windows)."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return str(base / "llm-router" / "router.db")


def _opt(default: Any, help: str, *, minimum: float | None = None) -> Any:
    return field(default=default, metadata={"help": help, "minimum": minimum})


@dataclass(frozen=True)
class ProviderConfig:
    """A cloud (or any remote) OpenAI-compatible API reached by the model prefix `name:`.

    `api_key` is read from the variable `api_key_env` when the config is loaded; it is kept out
    of repr() so that printing a config never shows it."""

    name: str
    base_url: str
    api_key_env: str = ""
    api_key: str = field(default="", repr=False)
    models: tuple[str, ...] = ()  # fixed list; empty: fetched from the provider's /models
    ca_file: str = ""  # extra CA bundle for a private endpoint (system CAs otherwise)


def _provider(name: str, raw: Any, env: Mapping[str, str], where: str) -> ProviderConfig:
    if not _PROVIDER_NAME.match(name):
        raise ConfigError(f"invalid provider name {name!r} in {where} (a-z, 0-9, _ . -)")
    if not isinstance(raw, dict):
        raise ConfigError(f"[providers.{name}] in {where} must be a table")
    unknown = set(raw) - {"base_url", "api_key_env", "models", "ca_file"}
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(unknown)} in [providers.{name}] in {where}")
    builtin = BUILTIN_PROVIDERS.get(name)
    base_url = raw.get("base_url") or (env.get(builtin[1]) or builtin[2] if builtin else "")
    key_env = raw.get("api_key_env") or (builtin[0] if builtin else "")
    models = raw.get("models", [])
    if not isinstance(base_url, str) or not base_url:
        raise ConfigError(f"[providers.{name}] in {where} needs base_url")
    if not isinstance(key_env, str):
        raise ConfigError(f"[providers.{name}].api_key_env in {where} must be a string")
    if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
        raise ConfigError(f"[providers.{name}].models in {where} must be a list of names")
    ca_file = raw.get("ca_file", "")
    if not isinstance(ca_file, str):
        raise ConfigError(f"[providers.{name}].ca_file in {where} must be a path")
    return _checked_provider(
        ProviderConfig(
            name=name,
            base_url=base_url,
            api_key_env=key_env,
            api_key=env.get(key_env, "") if key_env else "",
            models=tuple(models),
            ca_file=ca_file,
        )
    )


def _checked_provider(p: ProviderConfig) -> ProviderConfig:
    url = urllib.parse.urlsplit(p.base_url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ConfigError(f"provider {p.name}: base_url must be an http(s) URL, not {p.base_url!r}")
    if url.query or url.fragment or url.username:
        raise ConfigError(f"provider {p.name}: base_url takes no query, fragment or credentials")
    if p.ca_file and not os.path.isfile(p.ca_file):
        raise ConfigError(f"provider {p.name}: ca_file {p.ca_file!r} does not exist")
    return p


def load_providers(
    tables: Mapping[str, Any], env: Mapping[str, str], where: str = "the config file"
) -> tuple[ProviderConfig, ...]:
    """`[providers.NAME]` tables, plus each built-in provider whose key variable is set."""
    out = {name: _provider(name, raw, env, where) for name, raw in tables.items()}
    for name, (key_env, url_env, default_url) in BUILTIN_PROVIDERS.items():
        if name not in out and env.get(key_env):
            out[name] = _checked_provider(
                ProviderConfig(
                    name=name,
                    base_url=env.get(url_env) or default_url,
                    api_key_env=key_env,
                    api_key=env[key_env],
                )
            )
    return tuple(out[name] for name in sorted(out))


@dataclass(frozen=True)
class RouterConfig:
    """Every router setting. Field names are the TOML keys; env is LLM_ROUTER_<NAME>."""

    host: str = _opt("0.0.0.0", "listen address")
    port: int = _opt(8080, "listen port", minimum=0)
    db: str = _opt("", "SQLite database path (':memory:' allowed); default: user data dir")
    log_level: str = _opt("info", "debug, info, warning or error")
    access_log: bool = _opt(True, "one log line per request")
    log_ring_lines: int = _opt(2000, "recent log lines kept in memory for GET /api/logs", minimum=1)
    heartbeat_interval: float = _opt(10.0, "seconds between agent heartbeats", minimum=0.1)
    heartbeat_timeout: float = _opt(30.0, "no heartbeat this long: node offline", minimum=0.2)
    balancer: str = _opt("least_loaded", "round_robin, least_loaded or latency")
    prefix_affinity: bool = _opt(
        True, "send a prompt to the node that served its longest prefix (false: balancer only)"
    )
    prefix_index_entries: int = _opt(
        65536, "prompt-prefix boundaries remembered (LRU, all models together)", minimum=1
    )
    prefix_affinity_epsilon: float = _opt(
        0.25, "affinity yields when a node has > (1 + this) x mean in flight + 1", minimum=0.0
    )
    admin_token: str = _opt("", "bearer token for management calls; generated when empty")
    registration_token: str = _opt("", "when set, register needs it as bearer token")
    api_keys: tuple[str, ...] = _opt((), "comma list; when set, proxy APIs need one")
    open_reads: bool = _opt(True, "read-only management/dashboard calls need no token")
    allowed_node_addresses: tuple[str, ...] = _opt(
        (), "addresses a node may claim as ip_address besides its peer address"
    )
    max_body_bytes: int = _opt(32 * 1024 * 1024, "larger request bodies get 413", minimum=1)
    max_nodes: int = _opt(1000, "registered nodes at most; a new one past it gets 503", minimum=1)
    max_node_body_bytes: int = _opt(
        1024 * 1024, "larger registration and heartbeat bodies get 413", minimum=1024
    )
    fanout_concurrency: int = _opt(
        32, "nodes asked at once when /api/tags or /api/ps ask every node", minimum=1
    )
    fanout_cache_seconds: float = _opt(
        5.0, "how long an /api/tags or /api/ps answer is reused", minimum=0.0
    )
    max_header_bytes: int = _opt(64 * 1024, "larger request heads get 431", minimum=1024)
    header_timeout: float = _opt(10.0, "seconds to receive a request head", minimum=0.1)
    body_timeout: float = _opt(60.0, "seconds between request body reads", minimum=0.1)
    write_timeout: float = _opt(60.0, "a client that reads nothing this long is cut", minimum=0.1)
    idle_timeout: float = _opt(75.0, "idle keep-alive connections close after this", minimum=0.1)
    max_connections: int = _opt(10000, "client connections at once; more are refused", minimum=1)
    max_connections_per_address: int = _opt(
        2500, "client connections at once from one address; more get 503 (0: no cap)", minimum=0
    )
    body_deadline: float = _opt(120.0, "seconds to receive a whole request body", minimum=0.1)
    max_inflight_body_bytes: int = _opt(
        256 * 1024 * 1024, "request body bytes held at once; past it new bodies get 503", minimum=1
    )
    cors_origins: tuple[str, ...] = _opt(
        (), "origins allowed to call the API from a browser besides the router's own ('*': any)"
    )
    queue_max: int = _opt(1024, "requests waiting for a free node", minimum=0)
    queue_timeout: float = _opt(30.0, "seconds a request may wait for a free node", minimum=0.0)
    connect_timeout: float = _opt(5.0, "seconds to connect to a node", minimum=0.1)
    read_timeout: float = _opt(300.0, "max seconds between bytes from a node", minimum=0.1)
    request_timeout: float = _opt(3600.0, "max seconds for a whole proxied request", minimum=1)
    pool_max_idle: int = _opt(32, "idle keep-alive connections kept per node", minimum=0)
    max_retries: int = _opt(2, "other nodes tried after a failure before the first byte", minimum=0)
    breaker_failures: int = _opt(
        5, "consecutive failed requests that take a node out of rotation (0: never)", minimum=0
    )
    probe_interval: float = _opt(5.0, "first re-probe delay of an unreachable node", minimum=0.1)
    probe_max_interval: float = _opt(60.0, "longest re-probe backoff", minimum=0.1)
    shutdown_grace: float = _opt(10.0, "seconds in-flight requests get at shutdown", minimum=0)
    history_max_rows: int = _opt(100_000, "request history rows kept", minimum=1)
    samples_max_rows: int = _opt(200_000, "health samples kept", minimum=1)
    store_commit_timeout: float = _opt(
        5.0, "a management change waits this long for its commit before it is answered", minimum=0
    )
    write_high_water: int = _opt(256 * 1024, "client write buffer high-water mark", minimum=1024)
    http_fast_path: bool = _opt(True, "parse common requests without h11 (false: h11 for all)")
    provider_refresh: float = _opt(
        300.0, "seconds between refreshes of each cloud provider's model list", minimum=1
    )
    # Not a flag or variable of its own: `[providers.NAME]` tables and the providers' own key
    # variables (OPENAI_API_KEY, ...). See load_providers.
    providers: tuple[ProviderConfig, ...] = field(
        default=(), metadata={"help": "cloud providers", "setting": False}
    )

    def db_path(self) -> str:
        return self.db or default_db_path()


def settings() -> list[dataclasses.Field[Any]]:
    """The fields that are settings (a flag, an LLM_ROUTER_ variable and a TOML key each)."""
    return [f for f in dataclasses.fields(RouterConfig) if f.metadata.get("setting", True)]


def _coerce(f: dataclasses.Field[Any], raw: Any) -> Any:
    """Turn a TOML/env/CLI value into the field's type, or raise ConfigError naming it."""
    name = f.name
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    try:
        if kind == "bool":
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")
        if kind == "int":
            if isinstance(raw, (bool, float)):
                raise ValueError("expected an integer")
            value: Any = int(str(raw).strip())
        elif kind == "float":
            if isinstance(raw, bool):
                raise ValueError("expected a number")
            value = float(str(raw).strip())
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError("expected a finite number")
        elif kind.startswith("tuple"):
            items = raw if isinstance(raw, list | tuple) else str(raw).split(",")
            value = tuple(str(i).strip() for i in items if str(i).strip())
        else:
            if not isinstance(raw, str):
                raise ValueError("expected a string")
            value = raw
    except ValueError as exc:
        raise ConfigError(f"invalid value for {name}: {raw!r} ({exc})") from None
    minimum = f.metadata.get("minimum")
    if minimum is not None and value < minimum:
        raise ConfigError(f"invalid value for {name}: {raw!r} (must be >= {minimum})")
    return value


def _validate(cfg: RouterConfig) -> None:
    if cfg.balancer not in BALANCERS:
        raise ConfigError(f"invalid value for balancer: {cfg.balancer!r} (one of {BALANCERS})")
    if cfg.log_level.lower() not in LOG_LEVELS:
        raise ConfigError(f"invalid value for log_level: {cfg.log_level!r} (one of {LOG_LEVELS})")
    if cfg.prefix_index_entries >= 2**30:
        raise ConfigError(
            f"invalid value for prefix_index_entries: {cfg.prefix_index_entries} (must be < 2**30)"
        )
    if cfg.port > 65535:
        raise ConfigError(f"invalid value for port: {cfg.port} (must be <= 65535)")
    if cfg.heartbeat_timeout <= cfg.heartbeat_interval:
        raise ConfigError(
            "invalid value for heartbeat_timeout: must be greater than heartbeat_interval "
            f"({cfg.heartbeat_timeout} <= {cfg.heartbeat_interval})"
        )


def load_config(
    *,
    config_file: str | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> RouterConfig:
    """Build the config from every layer; `overrides` are parsed CLI flags (None = unset)."""
    env = os.environ if env is None else env
    fields = {f.name: f for f in settings()}
    values: dict[str, Any] = {}

    path = config_file or env.get(ENV_PREFIX + "CONFIG")
    provider_tables: dict[str, Any] = {}
    if path:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        provider_tables = data.get("providers", {})
        if not isinstance(provider_tables, dict):
            raise ConfigError(f"[providers] in {path} must be tables: [providers.NAME]")
        data = {k: v for k, v in data.get("router", data).items() if k != "providers"}
        for key, raw in data.items():
            if key not in fields:
                raise ConfigError(f"unknown setting {key!r} in {path}")
            values[key] = _coerce(fields[key], raw)

    for name, f in fields.items():
        raw_env = env.get(ENV_PREFIX + name.upper())
        if raw_env is not None and raw_env != "":
            values[name] = _coerce(f, raw_env)

    for name, raw in (overrides or {}).items():
        if name == "providers":
            values[name] = tuple(_checked_provider(p) for p in raw)
        elif raw is not None:
            values[name] = _coerce(fields[name], raw)
    if "providers" not in values:
        values["providers"] = load_providers(provider_tables, env, path or "the config file")

    cfg = RouterConfig(**values)
    _validate(cfg)
    return cfg
