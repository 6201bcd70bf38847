"""Who is calling: API keys (``Authorization: Bearer sk_live_...``) and the admin key (client
tokens, ``Authorization: Client <jwt>``, are ``domain/client_tokens.py``'s and refused here).

Key lookups are cached per process for ``ttl`` seconds (positive and negative answers alike),
which bounds how long a revoked key keeps working in any worker process: the cache is the only
place a revocation can lag, and its TTL is below one second.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

import trio

from ringside.errors import Forbidden, Unauthorized
from ringside.ids import hash_api_key
from ringside.store.bridge import Database
from ringside.store.developers import KeyOwner, select_key_owner

_MAX_CACHED = 50_000


class Headers(Protocol):
    """Anything with a case-insensitive ``get`` (Quart's and httpx's headers both do)."""

    def get(self, key: str) -> str | None: ...


@dataclass(frozen=True)
class Caller:
    developer_id: str
    key_id: str
    tier: str
    markup_percent: Decimal | None = None  # None: the tier's default
    rate_multiplier: Decimal = Decimal(1)
    # Set for a client token (browser) call: the customer it is bound to (every call is that
    # customer's) and the token's jti; key_id is then the API key that minted the token.
    customer_id: str | None = None
    customer_external_id: str | None = None
    client_token_id: str | None = None


def _credential(headers: Headers, scheme: str) -> str | None:
    value = headers.get("Authorization")
    if not value:
        return None
    given, _, token = value.partition(" ")
    if given.lower() != scheme or not token.strip():
        return None
    return token.strip()


def bearer_token(headers: Headers) -> str | None:
    return _credential(headers, "bearer")


def client_token(headers: Headers) -> str | None:
    """A browser's ``Authorization: Client <jwt>``."""
    return _credential(headers, "client")


class KeyAuthenticator:
    def __init__(self, db: Database, ttl: float) -> None:
        self._db = db
        self._ttl = ttl
        self._cache: dict[bytes, tuple[float, KeyOwner | None]] = {}
        self._pending: dict[bytes, trio.Event] = {}

    async def caller_from(self, headers: Headers) -> Caller:
        token = bearer_token(headers)
        if token is None and client_token(headers) is not None:
            raise Forbidden(
                "A client token can only call inference endpoints (chat completions,"
                " embeddings, models) and its customer's own threads and runs; this endpoint"
                " needs a developer API key.",
                code="client_token_not_allowed",
            )
        if token is None:
            raise Unauthorized("Missing API key: send 'Authorization: Bearer <your sk_live_ key>'.")
        owner = await self._lookup(hash_api_key(token))
        if owner is None or owner.revoked:
            raise Unauthorized("Invalid or revoked API key.")
        return Caller(
            developer_id=owner.developer_id,
            key_id=owner.key_id,
            tier=owner.tier,
            markup_percent=owner.markup_percent,
            rate_multiplier=owner.rate_multiplier,
        )

    async def _lookup(self, key_hash: bytes) -> KeyOwner | None:
        # One query per key per expiry, however many requests arrive meanwhile: the others
        # wait for it rather than stampeding the pool. If the one querying is cancelled (its
        # client left), a waiter takes over; the loop makes sure only one does.
        while True:
            hit = self._cache.get(key_hash)
            if hit is not None and hit[0] > trio.current_time():
                return hit[1]
            pending = self._pending.get(key_hash)
            if pending is None:
                break
            await pending.wait()
        done = self._pending[key_hash] = trio.Event()
        try:
            owner = await select_key_owner(self._db, key_hash)
            if len(self._cache) >= _MAX_CACHED:
                self._cache.clear()
            self._cache[key_hash] = (trio.current_time() + self._ttl, owner)
            return owner
        finally:
            del self._pending[key_hash]
            done.set()

    def forget_all(self) -> None:
        self._cache.clear()


def check_admin(headers: Headers, admin_key: str) -> None:
    token = bearer_token(headers)
    if token is None or not hmac.compare_digest(token.encode(), admin_key.encode()):
        raise Unauthorized("Invalid admin key.", code="invalid_admin_key")
