"""Which web origins may call the router from a browser (CSRF and CORS).

With open defaults (no API keys, no registration token) any page a visitor opens could make
the visitor's browser register a node or use the proxy APIs, since a browser sends such
requests with no credentials needed. Browsers mark every such request with an `Origin` header;
curl and the SDKs send none. So a request that carries an `Origin` is served only when that
origin is the router's own (the dashboard: its origin's host is the `Host` the browser sent)
or allow-listed (`cors_origins`); the same list answers CORS preflights.

Behind a reverse proxy that rewrites `Host`, the browser's host arrives as `X-Forwarded-Host`,
which counts as the router's own too: a page cannot add that header to a cross-site request
without a preflight, and preflights from foreign origins are refused.
"""

from __future__ import annotations

OWN = "own"
LISTED = "listed"


def _normalize(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


class OriginPolicy:
    """`cors_origins` entries are `scheme://host[:port]`; `*` allows every origin."""

    def __init__(self, allowed: tuple[str, ...]) -> None:
        self.any = "*" in allowed
        self.allowed = frozenset(_normalize(o) for o in allowed if o.strip() and o != "*")

    def verdict(self, origin: str, *hosts: str | None) -> str | None:
        """OWN (its host is one of `hosts`: Host, X-Forwarded-Host), LISTED, or None when a
        page at `origin` may not call this router."""
        origin = _normalize(origin)
        scheme, sep, authority = origin.partition("://")
        if sep and scheme in ("http", "https"):
            for host in hosts:
                if host and authority == host.partition(",")[0].strip().lower():
                    return OWN
        if self.any or origin in self.allowed:
            return LISTED
        return None
