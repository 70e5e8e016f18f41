"""One frozen AgentConfig: built-in defaults < TOML file < `LLM_AGENT_*` env < command-line flags.

Every value passes through one parser per setting, so a bad value fails at start with the name of
the setting and where it came from, whichever layer supplied it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import shlex
import socket
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agent.download import proxy_url, redact_url
from agent.paths import default_config_path, user_data_dir
from routercore.errors import ConfigError

ENV_PREFIX = "LLM_AGENT_"
RUNTIME_KINDS = ("auto", "ollama", "openai")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

# (minimum total memory in GiB, model): the first row the machine has memory for wins.
DEFAULT_MODEL_TABLE: tuple[tuple[float, str], ...] = (
    (48.0, "llama3.1:70b"),
    (16.0, "llama3.1:8b"),
    (8.0, "llama3.2:3b"),
    (0.0, "llama3.2:1b"),
)


@dataclass(frozen=True)
class AgentConfig:
    """Everything the agent reads at start-up; passed down, never re-read from the environment."""

    router_url: tuple[str, ...] = ("http://127.0.0.1:8080",)
    registration_token: str | None = None
    node_name: str = field(default_factory=socket.gethostname)
    runtime_url: str = "http://127.0.0.1:11434"
    runtime_kind: str = "auto"
    ip_address: str | None = None
    max_concurrency: int | None = None
    heartbeat_interval: float = 10.0
    request_timeout: float = 10.0
    runtime_poll_interval: float = 5.0
    register_backoff_initial: float = 1.0
    register_backoff_max: float = 60.0
    manage_runtime: bool = False
    runtime_command: tuple[str, ...] = ()
    runtime_binary: str = "ollama"
    runtime_args: tuple[str, ...] = ("serve",)
    install_url: str | None = None
    install_sha256: str | None = None
    install_sha256_url: str | None = None
    # No checksum: refuse to install unless this says the risk is accepted (then warn).
    allow_unverified: bool = False
    install_dir: Path = field(default_factory=lambda: user_data_dir() / "runtime")
    download_retries: int = 5
    download_timeout: float = 30.0
    http_proxy: str | None = None
    https_proxy: str | None = None
    no_proxy: str | None = None
    ca_file: Path | None = None
    default_model: str | None = None
    pull_default_model: bool = False
    model_table: tuple[tuple[float, str], ...] = DEFAULT_MODEL_TABLE
    tray: bool = True
    # The relay (agent/relay.py): the runtime stays on loopback, the router comes through here.
    relay: bool = False
    relay_host: str = "0.0.0.0"
    relay_port: int = 11435
    log_level: str = "INFO"
    config_path: Path = field(default_factory=default_config_path)

    @property
    def dashboard_url(self) -> str:
        return self.router_url[0].rstrip("/") + "/dashboard"

    @property
    def runtime_port(self) -> int:
        parts = urlsplit(self.runtime_url)
        if parts.port is not None:
            return parts.port
        return 443 if parts.scheme == "https" else 80


# --- value parsers: each takes a str (env/flags) or a TOML value, returns the typed value -------


def _url(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a URL string")
    text = value.strip().rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{redact_url(value)!r} is not an http:// or https:// URL")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise ValueError(f"{redact_url(value)!r} has an invalid port") from exc
    return text


def _opt_url(value: Any) -> str | None:
    return None if value in (None, "") else _url(value)


def _opt_proxy(value: Any) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise ValueError("expected a proxy URL string")
    return proxy_url(value)


def _port(value: Any) -> int:
    number = _nonneg_int(value)
    if number > 65535:
        raise ValueError(f"{value!r} is not a port (0-65535; 0 picks a free one)")
    return number


def _ip(value: Any) -> str:
    text = _opt_ip(value)
    if text is None:
        raise ValueError("expected an IP address")
    return text


def _url_list(value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ValueError("expected a URL or a list of URLs")
    urls = tuple(_url(u) for u in items if str(u).strip())
    if not urls:
        raise ValueError("at least one router URL is needed")
    return tuple(dict.fromkeys(urls))


def _opt_str(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value.strip() or None


def _name(value: Any) -> str:
    text = _opt_str(value)
    if not text:
        raise ValueError("must not be empty")
    if len(text) > 255:
        raise ValueError("longer than 255 characters")
    return text


def _choice(options: tuple[str, ...], upper: bool = False) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip()
        text = text.upper() if upper else text.lower()
        if text not in options:
            raise ValueError(f"{value!r} is not one of {', '.join(options)}")
        return text

    return parse


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{value!r} is not a boolean (true/false)")


def _positive_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not a number") from None
    if not number > 0 or number != number or number == float("inf"):
        raise ValueError(f"{value!r} must be a positive number")
    return number


def _nonneg_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected an integer")
    try:
        number = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        raise ValueError(f"{value!r} is not an integer") from None
    if number < 0:
        raise ValueError(f"{value!r} must be >= 0")
    return number


def _opt_positive_int(value: Any) -> int | None:
    if value in (None, ""):
        return None
    number = _nonneg_int(value)
    if number == 0:
        raise ValueError("must be >= 1")
    return number


def _opt_ip(value: Any) -> str | None:
    text = _opt_str(value)
    if text is None:
        return None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address") from None


def _command(value: Any) -> tuple[str, ...]:
    if value in (None, ""):
        return ()
    if isinstance(value, str):
        return split_command(value, sys.platform)
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError("expected a command line string or a list of strings")


def split_command(text: str, platform: str) -> tuple[str, ...]:
    """Split a command line: shell rules on POSIX; on Windows, keep backslashes in paths."""
    if platform != "win32":
        return tuple(shlex.split(text))
    parts = shlex.split(text, posix=False)  # keeps the quotes around "C:\Program Files\..."
    return tuple(p[1:-1] if len(p) >= 2 and p[0] == p[-1] and p[0] in "\"'" else p for p in parts)


def _sha256(value: Any) -> str | None:
    text = _opt_str(value)
    if text is None:
        return None
    text = text.lower()
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError("expected 64 hexadecimal digits")
    return text


def _path(value: Any) -> Path:
    if not isinstance(value, str | Path) or not str(value).strip():
        raise ValueError("expected a path")
    return Path(str(value)).expanduser()


def _opt_file(value: Any) -> Path | None:
    if value in (None, ""):
        return None
    path = _path(value)
    if not path.is_file():
        raise ValueError(f"{str(path)!r} is not a file")
    return path


def _model_table(value: Any) -> tuple[tuple[float, str], ...]:
    """`"16=llama3.1:8b,0=llama3.2:1b"` or a TOML array of `{min_memory_gb, model}` tables."""
    rows: list[tuple[float, str]] = []
    if isinstance(value, str):
        for item in value.split(","):
            if not item.strip():
                continue
            gb, sep, model = item.partition("=")
            if not sep or not model.strip():
                raise ValueError(f"{item!r} is not MIN_GB=MODEL")
            rows.append((_nonneg_float(gb), model.strip()))
    elif isinstance(value, list):
        for item in value:
            if not isinstance(item, dict) or "model" not in item:
                raise ValueError("each row needs min_memory_gb and model")
            rows.append((_nonneg_float(item.get("min_memory_gb", 0)), _name(item["model"])))
    else:
        raise ValueError("expected MIN_GB=MODEL,... or a list of tables")
    if not rows:
        raise ValueError("the table is empty")
    return tuple(sorted(rows, key=lambda r: -r[0]))


def _nonneg_float(value: Any) -> float:
    try:
        number = float(str(value).strip())
    except ValueError:
        raise ValueError(f"{value!r} is not a number") from None
    if number < 0:
        raise ValueError(f"{value!r} must be >= 0")
    return number


PARSERS: dict[str, Callable[[Any], Any]] = {
    "router_url": _url_list,
    "registration_token": _opt_str,
    "node_name": _name,
    "runtime_url": _url,
    "runtime_kind": _choice(RUNTIME_KINDS),
    "ip_address": _opt_ip,
    "max_concurrency": _opt_positive_int,
    "heartbeat_interval": _positive_float,
    "request_timeout": _positive_float,
    "runtime_poll_interval": _positive_float,
    "register_backoff_initial": _positive_float,
    "register_backoff_max": _positive_float,
    "manage_runtime": _bool,
    "runtime_command": _command,
    "runtime_binary": _name,
    "runtime_args": _command,
    "install_url": _opt_url,
    "install_sha256": _sha256,
    "install_sha256_url": _opt_url,
    "allow_unverified": _bool,
    "install_dir": _path,
    "download_retries": _nonneg_int,
    "download_timeout": _positive_float,
    "http_proxy": _opt_proxy,
    "https_proxy": _opt_proxy,
    "no_proxy": _opt_str,
    "ca_file": _opt_file,
    "default_model": _opt_str,
    "pull_default_model": _bool,
    "model_table": _model_table,
    "tray": _bool,
    "relay": _bool,
    "relay_host": _ip,
    "relay_port": _port,
    "log_level": _choice(LOG_LEVELS, upper=True),
    "config_path": _path,
}

# Command-line flags whose name is not `--` + the setting's name (for error messages).
FLAG_NAMES = {
    "router_url": "--router",
    "node_name": "--name",
    "default_model": "--pull-model",
    "pull_default_model": "--pull-model",
    "tray": "--no-tray",
}

# The settings a user edits in the tray's settings window, saved back to the TOML file.
EDITABLE = ("router_url", "registration_token", "node_name", "runtime_url")


def _parse(name: str, value: Any, source: str) -> Any:
    try:
        return PARSERS[name](value)
    except ValueError as exc:
        raise ConfigError(f"invalid {name} ({source}): {exc}") from None


def read_toml(path: Path) -> dict[str, Any]:
    """The TOML file's settings; unknown keys fail so a typo does not silently do nothing."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    data.pop("config_path", None)
    unknown = sorted(set(data) - set(PARSERS))
    if unknown:
        raise ConfigError(f"unknown setting(s) in {path}: {', '.join(unknown)}")
    return data


def load_config(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: Path | str | None = None,
) -> AgentConfig:
    """Merge the layers. `flags` holds only what was given on the command line (None = not given).

    The config file is `config_file`, else `LLM_AGENT_CONFIG`, else the per-user default path
    when it exists (that is where the settings window saves).
    """
    env = os.environ if env is None else env
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    values: dict[str, Any] = {}

    explicit = config_file or env.get(ENV_PREFIX + "CONFIG")
    path = Path(explicit).expanduser() if explicit else default_config_path(env)
    if explicit or path.is_file():
        for key, raw in read_toml(path).items():
            values[key] = _parse(key, raw, f"config file {path}")
    values["config_path"] = path

    for key in PARSERS:
        raw_env = env.get(ENV_PREFIX + key.upper())
        if raw_env is not None and key != "config_path":
            values[key] = _parse(key, raw_env, f"environment {ENV_PREFIX}{key.upper()}")
    for key, raw in flags.items():
        flag = FLAG_NAMES.get(key, "--" + key.replace("_", "-"))
        values[key] = _parse(key, raw, flag)

    values.setdefault("install_dir", user_data_dir(env) / "runtime")
    config = AgentConfig(**values)
    if config.register_backoff_max < config.register_backoff_initial:
        raise ConfigError("invalid register_backoff_max: smaller than register_backoff_initial")
    if config.relay and urlsplit(config.runtime_url).scheme != "http":
        raise ConfigError(
            f"invalid runtime_url for relay = true: {redact_url(config.runtime_url)} is not "
            "http:// (the relay speaks plain HTTP to a runtime on this machine)"
        )
    return config


def validate_editable(raw: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Check the settings window's fields: (parsed values, {setting: error message})."""
    parsed: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for key in EDITABLE:
        try:
            parsed[key] = PARSERS[key](raw.get(key, ""))
        except ValueError as exc:
            errors[key] = str(exc)
    return parsed, errors


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str):
        escaped = "".join(
            c if c not in '"\\' and ord(c) >= 0x20 else f"\\u{ord(c):04x}" for c in value
        )
        return f'"{escaped}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def save_settings(path: Path, updates: Mapping[str, Any]) -> None:
    """Merge `updates` into the TOML file at `path`, keeping its other settings.

    Written to a temporary file then renamed, so a crash never leaves half a config.
    """
    current = read_toml(path) if path.is_file() else {}
    for key, value in updates.items():
        if value is None:
            current.pop(key, None)
        else:
            current[key] = list(value) if isinstance(value, tuple) else value
    lines = ["# LLM Router agent settings (written by the agent's settings window)"]
    tables: list[str] = []
    for key in sorted(current):
        value = current[key]
        if key == "model_table" and isinstance(value, list | tuple):
            for row in value:
                gb, model = (row["min_memory_gb"], row["model"]) if isinstance(row, dict) else row
                tables += ["", "[[model_table]]", f"min_memory_gb = {float(gb)!r}"]
                tables.append(f"model = {_toml_value(model)}")
            continue
        lines.append(f"{key} = {_toml_value(value)}")
    text = "\n".join(lines + tables) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def with_overrides(config: AgentConfig, **changes: Any) -> AgentConfig:
    """A copy with validated changes (used after the settings window saved)."""
    parsed = {k: _parse(k, v, "settings") for k, v in changes.items()}
    return dataclasses.replace(config, **parsed)
