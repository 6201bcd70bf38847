"""Developers (the operator's tenants) and their API keys."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from ringside import validation
from ringside.errors import InvalidRequest, NotFound
from ringside.ids import API_KEY_PREFIX, hash_api_key, new_api_key, new_id
from ringside.store import developers as store
from ringside.store.bridge import Database
from ringside.store.developers import ApiKeyRow, DeveloperRow

TIERS = ("developer", "pro")
# What the columns hold: NUMERIC(9, 6) and NUMERIC(12, 6).
_MAX_MARKUP = Decimal("999.999999")
_MAX_MULTIPLIER = Decimal("999999.999999")
_SIX = Decimal("0.000001")


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
        "markup_percent": None if row.markup_percent is None else str(row.markup_percent),
        "rate_multiplier": str(row.rate_multiplier),
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


def _rate(value: Any, param: str, maximum: Decimal) -> Decimal:
    """A non-negative decimal with at most 6 decimals (a string or an exact JSON number)."""
    message = f"'{param}' must be a decimal from 0 to {maximum} with at most 6 decimals."
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise InvalidRequest(message, param=param)
    try:
        rate = Decimal(value.strip()) if isinstance(value, str) else Decimal(value)
    except InvalidOperation:
        raise InvalidRequest(message, param=param) from None
    if not rate.is_finite() or not 0 <= rate <= maximum or rate != rate.quantize(_SIX):
        raise InvalidRequest(message, param=param)
    return rate.quantize(_SIX)


def parse_developer_changes(body: Any) -> dict[str, Any]:
    """A PATCH of a developer: name, tier, and the pricing overrides (``markup_percent`` null:
    the tier's default; ``rate_multiplier`` null: 1)."""
    obj = validation.body_object(body, ("name", "tier", "markup_percent", "rate_multiplier"))
    changes: dict[str, Any] = {}
    if "name" in obj:
        changes["name"] = validation.text(obj["name"], "name", max_len=200).strip()
    if "tier" in obj:
        if obj["tier"] not in TIERS:
            raise InvalidRequest(f"'tier' must be one of {', '.join(TIERS)}.", param="tier")
        changes["tier"] = obj["tier"]
    if "markup_percent" in obj:
        value = obj["markup_percent"]
        changes["markup_percent"] = (
            None if value is None else _rate(value, "markup_percent", _MAX_MARKUP)
        )
    if "rate_multiplier" in obj:
        value = obj["rate_multiplier"]
        changes["rate_multiplier"] = (
            Decimal(1) if value is None else _rate(value, "rate_multiplier", _MAX_MULTIPLIER)
        )
    return changes


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


async def update_developer(
    db: Database, developer_id: str, changes: dict[str, Any]
) -> DeveloperRow:
    """Apply a PATCH. Key caches carry the tier and pricing: the caller forgets its own."""
    async with db.transaction() as conn:
        dev = await store.select_developer(conn, developer_id, for_update=True)
        if dev is None:
            raise NotFound(f"No developer {developer_id!r}.")
        return await store.update_developer(conn, dataclasses.replace(dev, **changes))


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
