"""SQL for developers and their API keys."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from ringside.store.bridge import Conn, Database


@dataclass(frozen=True)
class DeveloperRow:
    id: str
    name: str
    tier: str
    created_at: datetime
    # Pricing overrides: None is the tier's default markup.
    markup_percent: Decimal | None
    rate_multiplier: Decimal


@dataclass(frozen=True)
class ApiKeyRow:
    id: str
    developer_id: str
    name: str | None
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class KeyOwner:
    """What authentication needs, in one indexed lookup."""

    key_id: str
    developer_id: str
    tier: str
    revoked: bool
    markup_percent: Decimal | None
    rate_multiplier: Decimal


_DEVELOPER = "id, name, tier, created_at, markup_percent, rate_multiplier"

_INSERT_DEVELOPER = f"""
    INSERT INTO developer (id, name, tier) VALUES ($1, $2, $3)
 RETURNING {_DEVELOPER}"""

_SELECT_DEVELOPER = f"SELECT {_DEVELOPER} FROM developer WHERE id = $1"
# NO KEY: the id never changes, so inserts referencing the developer (keys, wallets, customers)
# need not wait for a PATCH.
_SELECT_DEVELOPER_FOR_UPDATE = f"{_SELECT_DEVELOPER} FOR NO KEY UPDATE"

_UPDATE_DEVELOPER = f"""
    UPDATE developer SET name = $2, tier = $3, markup_percent = $4, rate_multiplier = $5
     WHERE id = $1
 RETURNING {_DEVELOPER}"""

_INSERT_KEY = """
    INSERT INTO api_key (id, developer_id, name, prefix, key_hash) VALUES ($1, $2, $3, $4, $5)
 RETURNING id, developer_id, name, prefix, created_at, revoked_at"""

_REVOKE_KEY = """
    UPDATE api_key SET revoked_at = COALESCE(revoked_at, now())
     WHERE id = $1 AND developer_id = $2
 RETURNING id, developer_id, name, prefix, created_at, revoked_at"""

_SELECT_KEYS = """
    SELECT id, developer_id, name, prefix, created_at, revoked_at
      FROM api_key WHERE developer_id = $1 ORDER BY created_at, id"""

_SELECT_KEY_OWNER = """
    SELECT k.id AS key_id, k.developer_id, d.tier, k.revoked_at IS NOT NULL AS revoked,
           d.markup_percent, d.rate_multiplier
      FROM api_key AS k JOIN developer AS d ON d.id = k.developer_id
     WHERE k.key_hash = $1"""


async def insert_developer(conn: Conn, *, id: str, name: str, tier: str) -> DeveloperRow:
    row = await conn.fetchrow(_INSERT_DEVELOPER, id, name, tier)
    assert row is not None
    return DeveloperRow(**dict(row))


async def select_developer(
    conn: Conn | Database, developer_id: str, *, for_update: bool = False
) -> DeveloperRow | None:
    query = _SELECT_DEVELOPER_FOR_UPDATE if for_update else _SELECT_DEVELOPER
    row = await conn.fetchrow(query, developer_id)
    return DeveloperRow(**dict(row)) if row else None


async def update_developer(conn: Conn, row: DeveloperRow) -> DeveloperRow:
    """Write a developer's name, tier and pricing overrides."""
    record = await conn.fetchrow(
        _UPDATE_DEVELOPER, row.id, row.name, row.tier, row.markup_percent, row.rate_multiplier
    )
    assert record is not None
    return DeveloperRow(**dict(record))


async def insert_api_key(
    conn: Conn | Database,
    *,
    id: str,
    developer_id: str,
    name: str | None,
    prefix: str,
    key_hash: bytes,
) -> ApiKeyRow:
    row = await conn.fetchrow(_INSERT_KEY, id, developer_id, name, prefix, key_hash)
    assert row is not None
    return ApiKeyRow(**dict(row))


async def revoke_api_key(
    conn: Conn | Database, *, key_id: str, developer_id: str
) -> ApiKeyRow | None:
    row = await conn.fetchrow(_REVOKE_KEY, key_id, developer_id)
    return ApiKeyRow(**dict(row)) if row else None


async def select_api_keys(conn: Conn | Database, developer_id: str) -> list[ApiKeyRow]:
    return [ApiKeyRow(**dict(r)) for r in await conn.fetch(_SELECT_KEYS, developer_id)]


async def select_key_owner(conn: Conn | Database, key_hash: bytes) -> KeyOwner | None:
    row = await conn.fetchrow(_SELECT_KEY_OWNER, key_hash)
    return KeyOwner(**dict(row)) if row else None
