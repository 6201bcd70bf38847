"""SQL for idempotency keys: one row per (developer, key), in flight or done, kept 24 hours."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ringside.store.bridge import Conn, Database


@dataclass(frozen=True)
class KeyRow:
    request_hash: bytes
    request_id: str
    state: str
    response_status: int | None
    response_headers: dict[str, str] | None
    response_body: bytes | None


# Claim the key: a new row, or an expired one taken over. RETURNING tells whether we got it.
_CLAIM = """
    INSERT INTO idempotency_key (developer_id, key, request_hash, request_id, process_id, state,
                                 expires_at)
    VALUES ($1, $2, $3, $4, $5, 'in_flight', now() + make_interval(secs => $6))
        ON CONFLICT (developer_id, key) DO UPDATE
       SET request_hash = EXCLUDED.request_hash, request_id = EXCLUDED.request_id,
           process_id = EXCLUDED.process_id, state = 'in_flight', response_status = NULL,
           response_headers = NULL, response_body = NULL, created_at = now(),
           expires_at = EXCLUDED.expires_at
     WHERE idempotency_key.expires_at < now()
 RETURNING request_id"""

_SELECT = """
    SELECT request_hash, request_id, state, response_status, response_headers::text,
           response_body
      FROM idempotency_key WHERE developer_id = $1 AND key = $2"""

_COMPLETE = """
    UPDATE idempotency_key
       SET state = 'done', response_status = $4, response_headers = $5::jsonb,
           response_body = $6
     WHERE developer_id = $1 AND key = $2 AND request_id = $3"""

# Only a claim still in flight: an answer stored (a billed failure, e.g. a 422 after every
# schema attempt was billed) stays for replay.
_RELEASE = """
    DELETE FROM idempotency_key
     WHERE developer_id = $1 AND key = $2 AND request_id = $3 AND state = 'in_flight'"""

_INTERRUPT = """
    UPDATE idempotency_key
       SET state = 'done', response_status = $2, response_headers = '{}'::jsonb,
           response_body = $3
     WHERE request_id = $1 AND state = 'in_flight'"""


async def claim(
    conn: Conn | Database,
    *,
    developer_id: str,
    key: str,
    request_hash: bytes,
    request_id: str,
    process_id: str,
    ttl_s: float,
) -> bool:
    got = await conn.fetchval(
        _CLAIM, developer_id, key, request_hash, request_id, process_id, ttl_s
    )
    return bool(got == request_id)


async def select(conn: Conn | Database, developer_id: str, key: str) -> KeyRow | None:
    row = await conn.fetchrow(_SELECT, developer_id, key)
    if row is None:
        return None
    raw_headers = row["response_headers"]
    return KeyRow(
        request_hash=row["request_hash"],
        request_id=row["request_id"],
        state=row["state"],
        response_status=row["response_status"],
        response_headers=orjson.loads(raw_headers) if raw_headers else None,
        response_body=row["response_body"],
    )


async def complete(
    conn: Conn | Database,
    *,
    developer_id: str,
    key: str,
    request_id: str,
    status: int,
    headers: dict[str, Any],
    body: bytes,
) -> None:
    await conn.execute(
        _COMPLETE, developer_id, key, request_id, status, orjson.dumps(headers).decode(), body
    )


async def release(conn: Conn | Database, *, developer_id: str, key: str, request_id: str) -> None:
    await conn.execute(_RELEASE, developer_id, key, request_id)


async def interrupt(
    conn: Conn | Database, request_ids: Sequence[str], status: int, bodies: Sequence[bytes]
) -> None:
    for request_id, body in zip(request_ids, bodies, strict=True):
        await conn.execute(_INTERRUPT, request_id, status, body)
