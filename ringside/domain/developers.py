"""Developers (the operator's tenants) and their API keys."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ringside.errors import InvalidRequest, NotFound
from ringside.ids import API_KEY_PREFIX, hash_api_key, new_api_key, new_id
from ringside.store import developers as store
from ringside.store.bridge import Database
from ringside.store.developers import ApiKeyRow, DeveloperRow

TIERS = ("developer", "pro")


@dataclass(frozen=True)
class NewKey:
    row: ApiKeyRow
    plaintext: str  # shown once, never stored

    def as_json(self) -> dict[str, Any]:
        return {**key_json(self.row), "key": self.plaintext}


def key_json(row: ApiKeyRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "api_key",
        "developer_id": row.developer_id,
        "name": row.name,
        "prefix": row.prefix,
        "created": int(row.created_at.timestamp()),
        "revoked": row.revoked_at is not None,
        "revoked_at": int(row.revoked_at.timestamp()) if row.revoked_at else None,
    }


def developer_json(row: DeveloperRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "developer",
        "name": row.name,
        "tier": row.tier,
        "created": int(row.created_at.timestamp()),
    }


def parse_developer_spec(body: Any) -> tuple[str, str]:
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    name = body.get("name")
    tier = body.get("tier", "developer")
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 200 or not name.isprintable():
        raise InvalidRequest(
            "'name' must be a string of 1 to 200 printable characters.", param="name"
        )
    if tier not in TIERS:
        raise InvalidRequest(f"'tier' must be one of {', '.join(TIERS)}.", param="tier")
    return name.strip(), tier


def parse_key_name(body: Any) -> str | None:
    if body is None:
        return None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    name = body.get("name")
    if name is not None and (
        not isinstance(name, str) or len(name) > 200 or not name.isprintable()
    ):
        raise InvalidRequest(
            "'name' must be a string of at most 200 printable characters.", param="name"
        )
    return name


async def _insert_key(db: Any, developer_id: str, name: str | None) -> NewKey:
    plaintext = new_api_key()
    row = await store.insert_api_key(
        db,
        id=new_id("key"),
        developer_id=developer_id,
        name=name,
        prefix=plaintext[: len(API_KEY_PREFIX) + 4],
        key_hash=hash_api_key(plaintext),
    )
    return NewKey(row, plaintext)


async def create_developer(db: Database, name: str, tier: str) -> tuple[DeveloperRow, NewKey]:
    """Create a developer together with its first API key, atomically."""
    async with db.transaction() as conn:
        dev = await store.insert_developer(conn, id=new_id("dev"), name=name, tier=tier)
        key = await _insert_key(conn, dev.id, "default")
    return dev, key


async def get_developer(db: Database, developer_id: str) -> DeveloperRow:
    dev = await store.select_developer(db, developer_id)
    if dev is None:
        raise NotFound(f"No developer {developer_id!r}.")
    return dev


async def add_key(db: Database, developer_id: str, name: str | None) -> NewKey:
    await get_developer(db, developer_id)
    return await _insert_key(db, developer_id, name)


async def list_keys(db: Database, developer_id: str) -> list[ApiKeyRow]:
    await get_developer(db, developer_id)
    return await store.select_api_keys(db, developer_id)


async def revoke_key(db: Database, developer_id: str, key_id: str) -> ApiKeyRow:
    row = await store.revoke_api_key(db, key_id=key_id, developer_id=developer_id)
    if row is None:
        raise NotFound(f"No API key {key_id!r} for developer {developer_id!r}.")
    return row
