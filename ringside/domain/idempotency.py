"""``Idempotency-Key`` on calls that cost money, as Stripe does it.

The first request with a key executes; a retry with the same key (same developer, same body)
within 24 hours replays the stored answer — status, body, Ringside headers — without calling
the provider or billing again. The same key with another body is ``409
idempotency_key_reused``; a retry while the first is still running is ``409
idempotency_key_in_progress`` (retry after a second). Only answers that were billed are kept:
a request refused before or by the provider (4xx, 402, 5xx) releases its key, so a retry runs
afresh (nothing was billed). A call interrupted by a gateway crash was settled at its hold by
the settlement worker, which stores an error to replay rather than let a retry bill it twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable
from dataclasses import dataclass

import orjson
import trio

from ringside.errors import Conflict, InvalidRequest, RingsideError, ServiceUnavailable
from ringside.store import idempotency as store
from ringside.store.bridge import TRANSIENT_ERRORS, Database, InterfaceError, PostgresError

TTL_S = 24 * 3600.0
_MAX_KEY = 255
# Response headers worth replaying (the rest describe the retry itself, e.g. X-Request-Id).
_KEPT_PREFIXES = ("x-ringside-", "content-type")


@dataclass(frozen=True)
class Replay:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Claim:
    """This request owns the key: it executes, then ``store``s its answer or ``release``s."""

    db: Database
    developer_id: str
    key: str
    request_id: str

    async def store(self, status: int, headers: dict[str, str], body: bytes) -> None:
        kept = {k: v for k, v in headers.items() if k.lower().startswith(_KEPT_PREFIXES)}
        await _shielded(
            store.complete(
                self.db,
                developer_id=self.developer_id,
                key=self.key,
                request_id=self.request_id,
                status=status,
                headers=kept,
                body=body,
            )
        )

    async def release(self) -> None:
        await _shielded(
            store.release(
                self.db, developer_id=self.developer_id, key=self.key, request_id=self.request_id
            )
        )


async def _shielded(work: Awaitable[None]) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(5):
        try:
            await work
        except (*TRANSIENT_ERRORS, PostgresError, InterfaceError):
            pass  # the key stays in flight: a retry is told to wait, never billed twice


def parse_key(value: str | None) -> str | None:
    if value is None:
        return None
    key = value.strip()
    if not 1 <= len(key) <= _MAX_KEY or not key.isprintable():
        raise InvalidRequest(
            f"Idempotency-Key must be 1 to {_MAX_KEY} printable characters.",
            param="Idempotency-Key",
        )
    return key


def request_hash(path: str, body: object) -> bytes:
    """The same request, whatever its key order or whitespace."""
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(path.encode() + b"\0" + canonical).digest()


async def begin(
    db: Database,
    *,
    developer_id: str,
    key: str,
    digest: bytes,
    request_id: str,
    process_id: str,
) -> Claim | Replay:
    """Claim the key for this request, or the stored answer to replay; raise ``Conflict``."""
    # Shielded for the reason billing.reserve is: a claim committed but never seen would leave
    # the key in flight for a day.
    claimed = None
    with trio.CancelScope(shield=True), trio.move_on_after(5):
        claimed = await store.claim(
            db,
            developer_id=developer_id,
            key=key,
            request_hash=digest,
            request_id=request_id,
            process_id=process_id,
            ttl_s=TTL_S,
        )
    if claimed is None:
        raise ServiceUnavailable("PostgreSQL did not answer in time; retry.")
    if claimed:
        return Claim(db, developer_id, key, request_id)
    row = await store.select(db, developer_id, key)
    if row is None:  # released between our insert and select: it is ours to claim again
        return await begin(
            db,
            developer_id=developer_id,
            key=key,
            digest=digest,
            request_id=request_id,
            process_id=process_id,
        )
    if row.request_hash != digest:
        raise Conflict(
            "This Idempotency-Key was already used with a different request body.",
            code="idempotency_key_reused",
            param="Idempotency-Key",
        )
    if row.state != "done" or row.response_status is None or row.response_body is None:
        raise Conflict(
            f"A request with this Idempotency-Key ({row.request_id}) is still in progress; "
            "retry shortly.",
            code="idempotency_key_in_progress",
            param="Idempotency-Key",
            retry_after_seconds=1,
        )
    return Replay(row.response_status, dict(row.response_headers or {}), row.response_body)


async def begin_for_request(
    db: Database,
    *,
    header: str | None,
    models: int,
    developer_id: str,
    path: str,
    body: object,
    request_id: str,
    process_id: str,
) -> Claim | Replay | None:
    """What a request's ``Idempotency-Key`` header asks for: nothing (no header), a claim to
    execute under, or an answer to replay. A cascade cannot carry a key."""
    key = parse_key(header)
    if key is None:
        return None
    if models > 1:
        raise InvalidRequest(
            "A model cascade cannot be combined with an Idempotency-Key (which model would a "
            "retry replay?); name one model.",
            code="fallback_with_idempotency_unsupported",
            param="model",
        )
    return await begin(
        db,
        developer_id=developer_id,
        key=key,
        digest=request_hash(path, body),
        request_id=request_id,
        process_id=process_id,
    )


def interrupted_body(request_id: str) -> bytes:
    """What a retry of a call cut by a gateway crash replays (see the module docstring)."""
    error: RingsideError = ServiceUnavailable(
        f"The original request {request_id} with this Idempotency-Key was interrupted by a "
        "gateway failure and billed at its reserved amount; retry with a new key.",
        code="request_interrupted",
    )
    return orjson.dumps(error.envelope(request_id))
