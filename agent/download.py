"""Download a file robustly: proxies, retries with backoff, resume of a partial file, SHA-256.

Runs blocking (urllib) in a worker thread. The bytes land in `<dest>.part` and are renamed to
`dest` only after the checksum matched, so `dest` existing always means a verified file.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from agent.backoff import Backoff

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int | None], None]  # (bytes done, total bytes or None)
CHUNK = 64 * 1024
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class DownloadError(Exception):
    """The download failed for good (after retries, or on an error retrying cannot fix)."""


class ChecksumMismatch(DownloadError):
    """The file's SHA-256 differs from the expected one; the file has been deleted."""


class DownloadCancelled(DownloadError):
    pass


class ChecksumUnavailable(DownloadError):
    """The checksum file could not be fetched or holds no usable hash: nothing was downloaded."""


class ProxyError(DownloadError):
    """A proxy URL (from the config or the environment) is not usable, or the proxy refused."""


class _Retryable(Exception):
    pass


def redact_url(url: str) -> str:
    """`url` with its user and password (`user:pass@`) replaced by `***@`, for logs and errors."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    end = next((i for i, c in enumerate(rest) if c in "/?#"), len(rest))
    netloc = rest[:end]
    if "@" not in netloc:
        return url
    return f"{scheme}{sep}***@{netloc.rpartition('@')[2]}{rest[end:]}"


def proxy_url(text: str) -> str:
    """A proxy URL, checked the same way wherever it comes from (config file, flag, environment).

    `http(s)://[user[:password]@]host[:port]`; a bare `host:port`, as curl and many environments
    write it, means `http://host:port`. Credentials may be percent-encoded (`p%40ss` for `p@ss`).
    Errors never repeat the credentials.
    """
    text = text.strip()
    if "://" not in text:
        text = "http://" + text
    shown = repr(redact_url(text))
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValueError(f"{shown} has an invalid host or port") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{shown}: only http:// and https:// proxies are supported")
    if not parts.hostname:
        raise ValueError(f"{shown} names no proxy host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{shown}: a proxy URL is scheme://host:port, without a path")
    return text.rstrip("/")


@dataclass(frozen=True)
class ProxySettings:
    """Proxies for downloads: the agent's config wins over the standard environment variables."""

    http: str | None = None
    https: str | None = None
    no_proxy: str | None = None

    @classmethod
    def resolve(
        cls,
        http: str | None,
        https: str | None,
        no_proxy: str | None,
        env: Mapping[str, str],
    ) -> ProxySettings:
        def pick(name: str) -> str | None:
            for var in (name.lower(), name.upper()):
                value = env.get(var)
                if value:
                    if name == "no_proxy":
                        return value
                    try:
                        return proxy_url(value)
                    except ValueError as exc:
                        raise ProxyError(f"invalid proxy in environment {var}: {exc}") from None
            return None

        return cls(
            http=http or pick("http_proxy"),
            https=https or pick("https_proxy"),
            no_proxy=no_proxy or pick("no_proxy"),
        )

    def for_url(self, url: str) -> dict[str, str]:
        """The proxy map urllib should use for `url` ({} = connect directly)."""
        host = urlsplit(url).hostname or ""
        if self.no_proxy and bypass_proxy(host, self.no_proxy):
            return {}
        proxies = {}
        if self.http:
            proxies["http"] = self.http
        if self.https:
            proxies["https"] = self.https
        return proxies


def bypass_proxy(host: str, no_proxy: str) -> bool:
    """NO_PROXY as curl reads it: `*`, exact hosts, and domain suffixes (`.corp`, `corp`)."""
    host = host.lower().strip("[]")
    for entry in no_proxy.replace(" ", "").lower().split(","):
        if not entry:
            continue
        if entry == "*":
            return True
        entry = entry.split(":", 1)[0] if entry.count(":") == 1 else entry
        entry = entry.lstrip("*").lstrip(".")
        if host == entry or host.endswith("." + entry):
            return True
    return False


def build_opener(
    proxies: Mapping[str, str], cafile: str | None = None
) -> urllib.request.OpenerDirector:
    # An explicit ProxyHandler, even empty, stops urllib from reading the environment again.
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler(dict(proxies))]
    if cafile:
        # Extra trust, e.g. for a TLS-inspecting corporate proxy; system CAs still count.
        context = ssl.create_default_context()
        context.load_verify_locations(cafile=cafile)
        handlers.append(urllib.request.HTTPSHandler(context=context))
    return urllib.request.build_opener(*handlers)


_PROXY_AUTH_ADVICE = (
    "the proxy refused the request (HTTP 407 Proxy Authentication Required): check the user "
    "and password in the proxy URL (http://user:password@host:port)"
)


def _transport_failure(what: str, exc: BaseException) -> Exception:
    """A failed connection: retryable, except what retrying cannot fix (an untrusted
    certificate, a proxy refusing our credentials)."""
    reason = getattr(exc, "reason", exc)
    if " 407 " in f" {reason} ":  # http.client: "Tunnel connection failed: 407 Proxy ..."
        return ProxyError(f"{what}: {_PROXY_AUTH_ADVICE}")
    if isinstance(reason, ssl.SSLCertVerificationError):
        return DownloadError(
            f"{what}: TLS certificate not trusted ({reason.verify_message}); "
            "set ca_file if a proxy inspects TLS"
        )
    return _Retryable(str(reason))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


_HEX64 = re.compile(r"\b([0-9a-fA-F]{64})\b")


def parse_checksum_file(text: str, filename: str) -> str:
    """The hash for `filename` from a `sha256sum`-style file (or a file holding just one hash)."""
    candidates = []
    for line in text.splitlines():
        match = _HEX64.search(line)
        if not match:
            continue
        rest = line[match.end() :].strip().lstrip("*").strip()
        if rest and os.path.basename(rest) == filename:
            return match.group(1).lower()
        candidates.append((match.group(1).lower(), rest))
    if len(candidates) == 1:
        return candidates[0][0]
    if not candidates:
        raise DownloadError("the checksum file holds no SHA-256 value")
    raise DownloadError(f"the checksum file lists no SHA-256 for {filename}")


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, complete length) from `bytes 100-199/1000` or `bytes */1000`."""
    if not value:
        return None, None
    match = re.match(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)", value.strip())
    if not match:
        return None, None
    start = int(match.group(1)) if match.group(1) else None
    total = int(match.group(2)) if match.group(2) != "*" else None
    return start, total


@dataclass
class Downloader:
    """One configured downloader; `fetch` is the entry point."""

    proxies: ProxySettings = ProxySettings()
    retries: int = 5
    timeout: float = 30.0
    backoff_initial: float = 1.0
    backoff_max: float = 30.0
    sleep: Callable[[float], None] = time.sleep
    cancel: threading.Event | None = None
    cafile: str | None = None

    def _opener(self, url: str) -> urllib.request.OpenerDirector:
        return build_opener(self.proxies.for_url(url), self.cafile)

    def _with_retries(self, what: str, attempt_fn: Callable[[], object]) -> object:
        backoff = Backoff(self.backoff_initial, self.backoff_max)
        attempt = 0
        while True:
            if self.cancel is not None and self.cancel.is_set():
                raise DownloadCancelled(f"{what}: cancelled")
            try:
                return attempt_fn()
            except _Retryable as exc:
                attempt += 1
                if attempt > self.retries:
                    raise DownloadError(f"{what}: failed after {attempt} attempts: {exc}") from None
                delay = backoff.next_delay()
                log.warning(
                    "download_retry what=%s attempt=%d delay=%.1fs error=%s",
                    what,
                    attempt,
                    delay,
                    exc,
                )
                self.sleep(delay)

    def fetch_text(self, url: str, limit: int = 1024 * 1024) -> str:
        """A small text resource (a checksum file), with the same proxy and retry rules."""

        def attempt() -> str:
            try:
                with self._opener(url).open(url, timeout=self.timeout) as resp:
                    return bytes(resp.read(limit)).decode("utf-8", errors="replace")
            except urllib.error.HTTPError as exc:
                exc.close()
                if exc.code == 407:
                    raise ProxyError(f"GET {shown}: {_PROXY_AUTH_ADVICE}") from None
                if exc.code in RETRY_STATUSES:
                    raise _Retryable(f"HTTP {exc.code}") from None
                raise DownloadError(f"GET {shown}: HTTP {exc.code} {exc.reason}") from None
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                raise _transport_failure(shown, exc) from None

        shown = redact_url(url)
        return str(self._with_retries(shown, attempt))

    def fetch(
        self,
        url: str,
        dest: Path,
        *,
        sha256: str | None = None,
        sha256_url: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> Path:
        """Download `url` to `dest`, resuming a `.part` file left by an earlier attempt."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        expected = sha256.lower() if sha256 else None
        shown = redact_url(url)
        if expected is None and sha256_url:
            expected = self._checksum_from(sha256_url, dest.name, shown)
        self._with_retries(shown, lambda: self._attempt(url, part, progress))
        if expected is not None:
            actual = sha256_file(part)
            if actual != expected:
                part.unlink(missing_ok=True)
                raise ChecksumMismatch(
                    f"SHA-256 mismatch for {shown}: expected {expected}, got {actual}; "
                    "the downloaded file was deleted"
                )
        os.replace(part, dest)
        log.info("download_done url=%s path=%s verified=%s", shown, dest, expected is not None)
        return dest

    def _checksum_from(self, sha256_url: str, filename: str, shown: str) -> str:
        """The expected hash from `sha256_url`; any failure stops the download before it starts."""
        where = redact_url(sha256_url)
        try:
            text = self.fetch_text(sha256_url)
            return parse_checksum_file(text, filename)
        except DownloadCancelled:
            raise
        except DownloadError as exc:
            raise ChecksumUnavailable(
                f"cannot verify {shown}: the checksum file {where} is not usable ({exc}); "
                "nothing was downloaded"
            ) from None

    def _attempt(self, url: str, part: Path, progress: ProgressCallback | None) -> None:
        offset = part.stat().st_size if part.exists() else 0
        req = urllib.request.Request(url)
        if offset:
            req.add_header("Range", f"bytes={offset}-")
        try:
            resp = self._opener(url).open(req, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 407:
                raise ProxyError(f"GET {redact_url(url)}: {_PROXY_AUTH_ADVICE}") from None
            if exc.code == 416 and offset:
                _, total = _parse_content_range(exc.headers.get("Content-Range"))
                if total == offset:
                    return  # the partial file is already complete
                part.unlink(missing_ok=True)  # the partial file is not a prefix we can use
                raise _Retryable("range not satisfiable; starting over") from None
            if exc.code in RETRY_STATUSES:
                raise _Retryable(f"HTTP {exc.code}") from None
            raise DownloadError(f"GET {redact_url(url)}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise _transport_failure(redact_url(url), exc) from None

        with resp:
            mode = "ab"
            if resp.status == 206:
                start, total = _parse_content_range(resp.headers.get("Content-Range"))
                if start != offset:
                    part.unlink(missing_ok=True)
                    raise _Retryable("server resumed at the wrong offset; starting over")
            else:
                if offset:
                    log.info("download_restart url=%s reason=server_ignored_range", redact_url(url))
                offset, mode = 0, "wb"
                length = resp.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
            if resp.status == 206 and total is None:
                length = resp.headers.get("Content-Length")
                total = offset + int(length) if length and length.isdigit() else None
            done = offset
            if progress:
                progress(done, total)
            try:
                with part.open(mode) as fh:
                    while True:
                        if self.cancel is not None and self.cancel.is_set():
                            raise DownloadCancelled(f"{redact_url(url)}: cancelled")
                        chunk = resp.read(CHUNK)
                        if not chunk:
                            break
                        fh.write(chunk)
                        done += len(chunk)
                        if progress:
                            progress(done, total)
            except (TimeoutError, OSError, http.client.HTTPException) as exc:
                # What arrived stays in the .part file; the next attempt resumes from there.
                raise _Retryable(f"transfer broke at {done} bytes: {exc}") from None
            if total is not None and done < total:
                raise _Retryable(f"connection closed at {done} of {total} bytes")
