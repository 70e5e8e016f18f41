"""API keys for the proxy APIs, managed by the admin: create, list, revoke.

Only SHA-256 hashes are stored. A presented key is hashed, looked up by its hash, and the hit
compared again in constant time. `last_used_at` lives in memory and reaches the store at most
once per `persist_every` seconds per key, always through the store's non-blocking queue.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol

from routercore import validate as v
from routercore.api.host import KeysHost
from routercore.auth import hash_token, new_token
from routercore.errors import ClientError, NotFound
from routercore.http.messages import Request, Response
from routercore.timestamps import now_rfc3339

if TYPE_CHECKING:
    from routercore.app import App

log = logging.getLogger("routercore.api.keys")

KEY_PREFIX = "sk-"
SHOWN_CHARS = 8  # characters after "sk-" kept as the key's visible prefix
PERSIST_EVERY = 60.0


class KeyStore(Protocol):
    """The part of routercore.store.Store the key ring uses."""

    def load_api_keys(self) -> list[dict[str, Any]]: ...
    def save_api_key(self, record: dict[str, Any]) -> None: ...


@dataclass
class ApiKey:
    """One stored key; `key_hash` never leaves the router."""

    id: str
    name: str
    key_hash: str
    prefix: str
    created_at: str
    last_used_at: str | None = None
    revoked_at: str | None = None

    def to_public(self) -> dict[str, Any]:
        out = asdict(self)
        del out["key_hash"]
        return out


class KeyRing:
    """Store-managed keys by hash and by id; the source of truth is memory, mirrored to disk."""

    def __init__(
        self,
        store: KeyStore,
        *,
        persist_every: float = PERSIST_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.persist_every = persist_every
        self.clock = clock
        self.by_id: dict[str, ApiKey] = {}
        self.by_hash: dict[str, ApiKey] = {}
        self._persisted_at: dict[str, float] = {}
        self._pending: dict[str, asyncio.TimerHandle] = {}

    def load(self) -> int:
        """Read every stored key (a blocking read: call at start-up only)."""
        for record in self.store.load_api_keys():
            key = ApiKey(**record)
            self.by_id[key.id] = key
            self.by_hash[key.key_hash] = key
        return len(self.by_id)

    @property
    def enforced(self) -> bool:
        """Once any key was created the proxy APIs need one, even after every key is revoked."""
        return bool(self.by_id)

    def create(self, name: str) -> tuple[ApiKey, str]:
        """A new key; returns the record and the plain key (shown to the caller once)."""
        plain = new_token(KEY_PREFIX)
        key = ApiKey(
            id=str(uuid.uuid4()),
            name=name,
            key_hash=hash_token(plain),
            prefix=plain[: len(KEY_PREFIX) + SHOWN_CHARS],
            created_at=now_rfc3339(),
        )
        self.by_id[key.id] = key
        self.by_hash[key.key_hash] = key
        self.store.save_api_key(asdict(key))
        return key, plain

    def revoke(self, key_id: str) -> ApiKey:
        key = self.by_id.get(key_id)
        if key is None:
            raise NotFound(f"API key {key_id} not found")
        if key.revoked_at is None:
            key.revoked_at = now_rfc3339()
            self._persist(key)
        return key

    def check(self, token: str) -> bool:
        """True for a live stored key; records its use."""
        digest = hash_token(token)
        key = self.by_hash.get(digest)
        if key is None or not hmac.compare_digest(digest, key.key_hash):
            return False
        if key.revoked_at is not None:
            return False
        key.last_used_at = now_rfc3339()
        self._touched(key)
        return True

    def _touched(self, key: ApiKey) -> None:
        """Persist now if the last write is old enough, else once the interval is over."""
        if key.id in self._pending:
            return
        last = self._persisted_at.get(key.id)
        wait = 0.0 if last is None else last + self.persist_every - self.clock()
        if wait <= 0:
            self._persist(key)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (unit use): nothing can run later, so write now
            self._persist(key)
            return
        self._pending[key.id] = loop.call_later(wait, self._persist, key)

    def _persist(self, key: ApiKey) -> None:
        handle = self._pending.pop(key.id, None)
        if handle is not None:
            handle.cancel()
        self._persisted_at[key.id] = self.clock()
        self.store.save_api_key(asdict(key))

    def flush(self) -> None:
        """Write every key with a pending last-used time now (at shutdown)."""
        for key_id in list(self._pending):
            self._persist(self.by_id[key_id])


class KeysAPI:
    """`POST /api/keys`, `GET /api/keys`, `DELETE /api/keys/{id}`; all need the admin token."""

    def __init__(self, svc: KeysHost) -> None:
        self.svc = svc
        self.ring = KeyRing(svc.store)
        svc.start_hooks.append(self.load)
        svc.stop_hooks.append(self.ring.flush)

    def install(self, app: App) -> None:
        app.add("POST", "/api/keys", self.create, auth="admin")
        app.add("GET", "/api/keys", self.list_keys, auth="admin")
        app.add("DELETE", "/api/keys/{id}", self.revoke, auth="admin")

    def load(self) -> None:
        """At start-up, once the store is open: bring the stored keys into memory."""
        count = self.ring.load()
        self._sync_policy()
        log.info("event=api_keys_loaded count=%d enforced=%s", count, self.ring.enforced)

    def _sync_policy(self) -> None:
        if self.ring.enforced:
            self.svc.auth.extra_key_check = self.ring.check

    async def create(self, request: Request) -> Response:
        data = request.json_object() if request.body.strip() else {}
        unknown = sorted(set(data) - {"name"})
        if unknown:
            raise ClientError(f"unknown field '{unknown[0]}'; allowed: name")
        name = v.get_str(data, "name", max_len=255) or ""
        key, plain = self.ring.create(name)
        self._sync_policy()
        log.info("event=api_key_created id=%s name=%r prefix=%s", key.id, key.name, key.prefix)
        await self.svc.persisted(f"api_key:{key.id}")
        return Response.json({**key.to_public(), "key": plain}, 201)

    async def list_keys(self, request: Request) -> Response:
        return Response.json([k.to_public() for k in self.ring.by_id.values()])

    async def revoke(self, request: Request) -> Response:
        key = self.ring.revoke(request.params["id"])
        log.info("event=api_key_revoked id=%s name=%r", key.id, key.name)
        await self.svc.persisted(f"api_key_revoked:{key.id}")
        return Response(204, b"")
