"""Client tokens: short-lived JWTs a developer's backend mints for one of its customers, so a
browser can call inference directly (``Authorization: Client <jwt>``).

A token is HS256-signed with a ``kid`` header. The keys come from
``RINGSIDE_CLIENT_TOKEN_KEYS`` (the first signs, every one verifies, so a new key can be put
first while tokens signed by the old one live out their hour); without it, one key is generated
and kept in PostgreSQL so that every process agrees. Nothing is stored per token: a token is
bound to its customer, its Origin and (optionally) one IP by its claims, and revoked by bumping
the customer's epoch (``client_token_epoch``). What verification needs from the database (the
developer's pricing, whether the minting key is revoked, whether the customer still exists, its
epoch) is cached per process for ``ttl`` seconds, which bounds how long a revoked token keeps
working in another process; the revoking process forgets at once.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import jwt
import trio

from ringside import validation
from ringside.domain.auth import Caller
from ringside.errors import Forbidden, InvalidRequest, Unauthorized
from ringside.ids import new_id
from ringside.store import client_tokens as store
from ringside.store.bridge import Database
from ringside.store.client_tokens import TokenSubject

ISSUER = "ringside"
AUDIENCE = "ringside:client"
DEFAULT_TTL_S = 900
MAX_TTL_S = 3600
_ALGORITHM = "HS256"
_MAX_CACHED = 50_000
_MAX_TOKEN_CHARS = 4096
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*$")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _invalid(why: str) -> Unauthorized:
    return Unauthorized(f"Invalid client token: {why}.", code="invalid_client_token")


def normalize_origin(value: str) -> str | None:
    """``scheme://host[:port]`` as a browser sends it in ``Origin`` (lower case, no default
    port), or None when ``value`` is not an origin."""
    if not value.isascii() or not value.isprintable():
        return None
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "")
    if (
        not _SCHEME.match(scheme)
        or not host
        or parts.username is not None
        or parts.password is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        return None
    if ":" in host:
        host = f"[{host}]"
    if port is None or _DEFAULT_PORTS.get(scheme) == port:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def normalize_ip(value: str) -> str | None:
    try:
        ip = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


@dataclass(frozen=True)
class MintSpec:
    ttl_seconds: int
    origin: str
    ip: str | None


_FIELDS = {"ttl_seconds", "origin", "ip"}


def parse_mint_spec(body: Any) -> MintSpec:
    """``{"ttl_seconds": 1..3600 (900), "origin": required, "ip": optional}``."""
    obj = validation.body_object(body, _FIELDS)
    ttl = obj.get("ttl_seconds", DEFAULT_TTL_S)
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= MAX_TTL_S:
        raise InvalidRequest(
            f"ttl_seconds is a whole number of seconds from 1 to {MAX_TTL_S}.", param="ttl_seconds"
        )
    raw_origin = obj.get("origin")
    origin = normalize_origin(raw_origin) if isinstance(raw_origin, str) else None
    if origin is not None and len(origin) > 512:
        origin = None
    if origin is None:
        raise InvalidRequest(
            "origin is required: the browser origin the token may be used from, as"
            " 'https://app.example.com' (scheme, host and port only).",
            param="origin",
        )
    raw_ip = obj.get("ip")
    ip = normalize_ip(raw_ip) if isinstance(raw_ip, str) else None
    if raw_ip is not None and ip is None:
        raise InvalidRequest("ip is an IPv4 or IPv6 address, or null.", param="ip")
    return MintSpec(ttl_seconds=ttl, origin=origin, ip=ip)


@dataclass(frozen=True)
class _Keys:
    signer: tuple[str, str]
    by_kid: dict[str, str]


class ClientTokens:
    """Mints, verifies and revokes client tokens (one per process, on ``Services``)."""

    def __init__(self, db: Database, configured: Sequence[tuple[str, str]], ttl: float) -> None:
        self._db = db
        self._ttl = ttl
        self._keys = _Keys(configured[0], dict(configured)) if configured else None
        self._keys_lock = trio.Lock()
        self._cache: dict[tuple[str, str, str], tuple[float, TokenSubject | None]] = {}
        self._pending: dict[tuple[str, str, str], trio.Event] = {}

    async def _signing_keys(self) -> _Keys:
        if self._keys is None:
            async with self._keys_lock:
                if self._keys is None:
                    kid, secret = await store.ensure_generated_key(
                        self._db, f"gen-{secrets.token_hex(4)}", secrets.token_urlsafe(48)
                    )
                    self._keys = _Keys((kid, secret), {kid: secret})
        return self._keys

    async def mint(self, caller: Caller, customer_id: str, spec: MintSpec) -> dict[str, Any]:
        """A token for ``customer_id`` (already resolved to the caller's live customer), as
        the SPEC §10 response."""
        keys = await self._signing_keys()
        kid, secret = keys.signer
        issued = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": customer_id,
            "dev": caller.developer_id,
            "key": caller.key_id,
            "origin": spec.origin,
            "ip": spec.ip,
            "gen": await store.select_epoch(self._db, customer_id),
            "iat": issued,
            "exp": issued + spec.ttl_seconds,
            "jti": new_id("ct"),
        }
        token = jwt.encode(claims, secret, algorithm=_ALGORITHM, headers={"kid": kid})
        return {
            "token": token,
            "expires_at": claims["exp"],
            "customer_id": customer_id,
            "origin": spec.origin,
            "ip": spec.ip,
        }

    async def revoke(self, customer_id: str) -> None:
        """Every live token of the customer stops working: here at once, in other processes
        within the cache TTL."""
        await store.bump_epoch(self._db, customer_id)
        for cached in [k for k in self._cache if k[2] == customer_id]:
            del self._cache[cached]

    async def caller_from(self, token: str, origin: str | None, ip: str | None) -> Caller:
        """The caller a token speaks for, once it is valid (else 401) and used from its origin
        and IP (else 403)."""
        claims = await self._claims(token)
        subject = await self._subject(claims["key"], claims["dev"], claims["sub"])
        if subject is None or subject.customer_deleted:
            raise _invalid("its customer no longer exists")
        if subject.key_revoked:
            raise _invalid("the API key that minted it is revoked")
        if claims["gen"] < subject.epoch:
            raise _invalid("it was revoked")
        if origin is None or normalize_origin(origin) != claims["origin"]:
            raise Forbidden(
                "The request's Origin is not the one this client token is bound to.",
                code="origin_mismatch",
            )
        if claims["ip"] is not None and (ip is None or normalize_ip(ip) != claims["ip"]):
            raise Forbidden(
                "The request comes from another IP address than the one this client token is"
                " bound to.",
                code="origin_mismatch",
            )
        return Caller(
            developer_id=claims["dev"],
            key_id=claims["key"],
            tier=subject.tier,
            markup_percent=subject.markup_percent,
            rate_multiplier=subject.rate_multiplier,
            customer_id=claims["sub"],
            customer_external_id=subject.customer_external_id,
            client_token_id=claims["jti"],
        )

    async def _claims(self, token: str) -> dict[str, Any]:
        if len(token) > _MAX_TOKEN_CHARS:
            raise _invalid("too long")
        keys = await self._signing_keys()
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            secret = keys.by_kid.get(kid) if isinstance(kid, str) else None
            if secret is None:
                raise _invalid("unknown signing key")
            claims: dict[str, Any] = jwt.decode(
                token,
                secret,
                algorithms=[_ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                # iat is not checked against this clock: another host's may run a little ahead.
                options={
                    "require": ["iss", "aud", "sub", "iat", "exp", "jti"],
                    "verify_iat": False,
                },
            )
        except jwt.ExpiredSignatureError as exc:
            raise _invalid("expired") from exc
        except jwt.PyJWTError as exc:
            raise _invalid("malformed or wrongly signed") from exc
        strings = ("sub", "dev", "key", "origin", "jti")
        if (
            not all(isinstance(claims.get(name), str) for name in strings)
            or not (claims.get("ip") is None or isinstance(claims["ip"], str))
            or isinstance(claims.get("gen"), bool)
            or not isinstance(claims.get("gen"), int)
        ):
            raise _invalid("malformed claims")
        return claims

    async def _subject(
        self, key_id: str, developer_id: str, customer_id: str
    ) -> TokenSubject | None:
        # Single-flight per (key, developer, customer), as the API key cache does: one query
        # per expiry however many calls arrive; a waiter takes over if the querier is cancelled.
        cache_key = (key_id, developer_id, customer_id)
        while True:
            hit = self._cache.get(cache_key)
            if hit is not None and hit[0] > trio.current_time():
                return hit[1]
            pending = self._pending.get(cache_key)
            if pending is None:
                break
            await pending.wait()
        done = self._pending[cache_key] = trio.Event()
        try:
            subject = await store.select_subject(
                self._db, key_id=key_id, developer_id=developer_id, customer_id=customer_id
            )
            if len(self._cache) >= _MAX_CACHED:
                self._cache.clear()
            self._cache[cache_key] = (trio.current_time() + self._ttl, subject)
            return subject
        finally:
            del self._pending[cache_key]
            done.set()
