"""Every log record made safe in one place: secrets masked, control characters escaped.

Log lines quote what clients send (a malformed request line with `?token=...`, a header with
`Authorization: Bearer ...`, a node's `machine_name`), so they can carry secrets and, with
CR/LF, forge whole log lines. Instead of escaping at each call site, `SafeLogFilter` sits on
the log handlers (`install`) and rewrites each record's final text (message and traceback):
bearer/basic credentials, `token=`/`password=`-style pairs, and the router's own token
formats (`sk-`, `adm_`, `agt_`) become `***`; control and line-separator characters become
`\\xNN`/`\\uNNNN`. The log ring behind `GET /api/logs` (logring.py) masks with the same
patterns. The one deliberate exception is the generated admin token, shown once at
first start: that record is logged with `extra=SHOW_SECRET` and is only escaped.
"""

from __future__ import annotations

import logging
import re

SHOW_SECRET = {"show_secret": True}
MASK = "***"

# What is masked: bearer and basic credentials; the value after any key named like a token,
# key, secret or password (`token=...`, `"agent_token": "..."`, `password: ...`); this
# project's own token shapes (adm_, agt_, rly_ and sk- followed by a long random part; the
# 8-character key prefixes the API shows stay readable); and passwords in URLs.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)(\b(?:bearer|basic)\s+)(?!\*\*\*)[^\s\"',;]+"), r"\1" + MASK),
    (
        re.compile(
            r"(?i)((?:token|api[_-]?key|apikey|secret|password|passwd|pwd|authorization)"
            r"[\"']?\s*[=:]\s*[\"']?)(?!\*\*\*|bearer\b|basic\b)([^\s\"',;&})\]]+)"
        ),
        r"\1" + MASK,
    ),
    (re.compile(r"\b(adm_|agt_|rly_|sk-)[A-Za-z0-9_-]{20,}"), r"\1" + MASK),
    (re.compile(r"(://[^/\s:@]+:)[^@\s/]+@"), r"\1" + MASK + "@"),
)
# Cheap test first (on the lower-cased text: a case-insensitive regex costs ten times more):
# most records, the access log's among them, hold none of these.
_MAYBE_SECRET = re.compile(
    r"bearer|basic|token|key|secret|passw|pwd|authorization|sk-|adm_|agt_|rly_|://"
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def mask_secrets(text: str) -> str:
    """`text` with every credential-looking value replaced by ***."""
    if _MAYBE_SECRET.search(text.lower()) is None:
        return text
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def escape_controls(text: str) -> str:
    if text.isprintable():
        return text
    return _CONTROL.sub(_escape, text)


def is_plain(text: str) -> bool:
    """Neither `escape_controls` nor `mask_secrets` can change `text`: it is printable and
    holds nothing that starts a secret's pattern. What starts one never contains a space or
    `=`, so text joined from plain parts with spaces or `key=` between them is plain too."""
    return text.isprintable() and _MAYBE_SECRET.search(text.lower()) is None


class SafeLogFilter(logging.Filter):
    """Rewrites each record's text in place; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.__dict__.get("_made_safe"):
            return True  # a record passes every handler: rewrite it once
        record.__dict__["_made_safe"] = True
        message = record.getMessage()
        safe = escape_controls(message)
        if not getattr(record, "show_secret", False):
            safe = mask_secrets(safe)
        if safe != message or record.args:
            record.msg, record.args = safe, None
        if record.exc_info and not record.exc_text:
            # The traceback keeps its line breaks; only secrets in it are masked.
            record.exc_text = mask_secrets(logging.Formatter().formatException(record.exc_info))
        return True


def install(handlers: list[logging.Handler] | None = None) -> None:
    """Put the filter on `handlers` (default: the root logger's), once each."""
    for handler in logging.getLogger().handlers if handlers is None else handlers:
        if not any(isinstance(f, SafeLogFilter) for f in handler.filters):
            handler.addFilter(SafeLogFilter())
