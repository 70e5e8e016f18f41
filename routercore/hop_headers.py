"""Header fields that cross the router: what a node gets from a client's request and what
the client gets from the node's answer.

Kept apart from the request path (proxy.py): a policy of what may pass, built once per node
where it can be, instead of per request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from routercore.http.response_parser import HOP_BY_HOP

if TYPE_CHECKING:
    from routercore.http.messages import Request
    from routercore.http.response_parser import ResponseHead

# content-type is not among them: the handlers parsed the body as JSON, so it goes upstream as
# JSON whatever the client said (curl -d sends application/x-www-form-urlencoded, which a
# FastAPI runtime such as llama.cpp's server answers with a 500).
_FORWARDED_HEADERS = (b"accept", b"user-agent", b"x-request-id")
_JSON_CONTENT_TYPE = (b"content-type", b"application/json")
# A node's answer is served from the router's origin, where the dashboard and the admin token
# live: it may not set cookies there, name another node, or choose its own content policies.
_DROP_RESPONSE_HEADERS = HOP_BY_HOP | {
    b"server",
    b"set-cookie",
    b"set-cookie2",
    b"x-router-node",
    b"x-content-type-options",
    b"content-security-policy",
    b"content-security-policy-report-only",
}
SAFETY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"content-security-policy", b"sandbox"),
)
_DROP_WITH_LENGTH = _DROP_RESPONSE_HEADERS | {b"content-length"}
_NO_BODY_STATUSES = (204, 304)


def client_headers(
    head: ResponseHead, node_header: tuple[bytes, bytes]
) -> list[tuple[bytes, bytes]]:
    """The node's header fields as the client gets them: hop-by-hop fields (and those its
    `Connection` names), cookies and node-chosen policies dropped; the router's own
    `x-router-node`, `nosniff` and a sandbox CSP added. The body's framing is the router's
    to choose: a length sent beside chunked coding (RFC 9112 6.3: chunked wins) or on a 204 or
    304 is not passed on."""
    if head.chunked or head.status_code in _NO_BODY_STATUSES:
        drop = _DROP_WITH_LENGTH
    else:
        drop = _DROP_RESPONSE_HEADERS
    options = head.connection_options
    if options and not options <= drop:  # `Connection: keep-alive` names nothing new
        drop = drop | options
    headers = [field for field in head.headers if field[0] not in drop]
    headers.append(node_header)
    headers += SAFETY_HEADERS
    return headers


class HopHeaders:
    """This router's `Via` hop and the per-node fields it adds, cached per node."""

    def __init__(self, via_token: str) -> None:
        self.via_token = via_token
        self.via_header = (b"via", via_token.encode("latin-1"))
        self._host_headers: dict[tuple[str, int], tuple[bytes, bytes]] = {}
        self._node_headers: dict[str, tuple[bytes, bytes]] = {}

    def _via(self, earlier: bytes | None) -> tuple[bytes, bytes]:
        """`Via` with this router's hop appended to the client's first one (RFC 9110), so a
        loop back to us is seen."""
        if not earlier:
            return self.via_header  # the common case: built once
        return (b"via", earlier + b", " + self.via_token.encode("latin-1"))

    def upstream(
        self, request: Request, host: str, port: int, body: bytes
    ) -> list[tuple[bytes, bytes]]:
        """The fields a node gets: host, the client's harmless ones, JSON type, length, hops.

        One pass over the client's fields picks the forwarded ones (the same tuples, not
        copies) and its first `Via`."""
        host_header = self._host_headers.get((host, port))
        if host_header is None:
            if len(self._host_headers) > 4096:
                self._host_headers.clear()
            host_header = self._host_headers[(host, port)] = (b"host", f"{host}:{port}".encode())
        headers = [host_header]
        earlier_via: bytes | None = None
        for field in request.headers:
            name = field[0]
            if name in _FORWARDED_HEADERS:
                headers.append(field)
            elif name == b"via" and earlier_via is None:
                earlier_via = field[1]
        if body:
            headers.append(_JSON_CONTENT_TYPE)
        headers.append((b"content-length", b"%d" % len(body)))
        headers.append((b"x-forwarded-for", request.peer.encode()))
        headers.append(self._via(earlier_via))
        return headers

    def node(self, node_id: str) -> tuple[bytes, bytes]:
        """The `x-router-node` field naming the node that answered."""
        node_header = self._node_headers.get(node_id)
        if node_header is None:
            if len(self._node_headers) > 4096:
                self._node_headers.clear()
            node_header = self._node_headers[node_id] = (b"x-router-node", node_id.encode())
        return node_header
