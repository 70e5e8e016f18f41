"""Tokens: random generation, hashing for storage, constant-time checks of bearer headers."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from routercore.http.messages import Request


def new_token(prefix: str = "") -> str:
    return prefix + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """SHA-256 is enough: tokens are 256-bit random, not passwords."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_matches(token: str, token_hash: str) -> bool:
    return bool(token_hash) and hmac.compare_digest(hash_token(token), token_hash)


def secret_equals(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def bearer(request: Request) -> str | None:
    """The token of `Authorization: Bearer <token>`, or None."""
    value = request.header(b"authorization")
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
