"""SQL for customers (a developer's end-users). Soft-deleted rows stay for the ledger and usage;
every query here except the cursor lookup sees only live ones."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson

from ringside.pagination import Window
from ringside.store.bridge import Conn, Database, Record


@dataclass(frozen=True)
class CustomerRow:
    seq: int
    id: str
    developer_id: str
    external_id: str | None
    name: str | None
    email: str | None
    metadata: Mapping[str, str]
    monthly_budget_usd: Decimal | None
    rpm_limit: int | None
    tpm_limit: int | None
    wallet_low_threshold_usd: Decimal | None
    stub: bool
    created_at: datetime
    deleted_at: datetime | None


@dataclass(frozen=True)
class CustomerFields:
    """What a developer sets on a customer."""

    external_id: str | None = None
    name: str | None = None
    email: str | None = None
    metadata: Mapping[str, str] | None = None
    monthly_budget_usd: Decimal | None = None
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    wallet_low_threshold_usd: Decimal | None = None


_COLUMNS = """seq, id, developer_id, external_id, name, email, metadata, monthly_budget_usd,
    rpm_limit, tpm_limit, wallet_low_threshold_usd, stub, created_at, deleted_at"""

# A reference is a cus_ id or the developer's external id; an id match wins (the same rule as
# ringside_reserve).
_LIVE_BY_REF = """
      FROM customer
     WHERE developer_id = $1 AND deleted_at IS NULL AND (id = $2 OR external_id = $2)
     ORDER BY (id = $2) DESC
     LIMIT 1"""

_SELECT_BY_REF = f"SELECT {_COLUMNS} {_LIVE_BY_REF}"
_SELECT_BY_REF_FOR_UPDATE = f"SELECT {_COLUMNS} {_LIVE_BY_REF} FOR UPDATE"

_SELECT_BY_EXTERNAL_FOR_UPDATE = f"""
    SELECT {_COLUMNS}
      FROM customer
     WHERE developer_id = $1 AND deleted_at IS NULL AND external_id = $2
       FOR UPDATE"""

_INSERT = f"""
    INSERT INTO customer (id, developer_id, external_id, name, email, metadata,
                          monthly_budget_usd, rpm_limit, tpm_limit, wallet_low_threshold_usd)
    VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10)
        ON CONFLICT (developer_id, external_id)
     WHERE deleted_at IS NULL AND external_id IS NOT NULL DO NOTHING
 RETURNING {_COLUMNS}"""

# Every settable field, and stub cleared: a customer the developer has edited is theirs.
_UPDATE = f"""
    UPDATE customer
       SET external_id = $2, name = $3, email = $4, metadata = $5::jsonb,
           monthly_budget_usd = $6, rpm_limit = $7, tpm_limit = $8,
           wallet_low_threshold_usd = $9, stub = false
     WHERE id = $1
 RETURNING {_COLUMNS}"""

_SOFT_DELETE = f"""
    UPDATE customer SET deleted_at = now()
     WHERE id = (SELECT id {_LIVE_BY_REF})
 RETURNING {_COLUMNS}"""

_LIST = """
    SELECT {columns}
      FROM customer
     WHERE developer_id = $1 AND deleted_at IS NULL
       AND ($2::text IS NULL OR external_id = $2)
       AND seq > $3 AND seq < $4
     ORDER BY seq {direction}
     LIMIT $5"""
_LIST_ASC = _LIST.format(columns=_COLUMNS, direction="ASC")
_LIST_DESC = _LIST.format(columns=_COLUMNS, direction="DESC")

# Deleted customers stay valid cursors: a page read while one is deleted still continues.
_SELECT_SEQ = "SELECT seq FROM customer WHERE developer_id = $1 AND id = $2"


def _row(record: Record) -> CustomerRow:
    values = dict(record)
    values["metadata"] = orjson.loads(values["metadata"])
    return CustomerRow(**values)


def _args(fields: CustomerFields) -> tuple[Any, ...]:
    return (
        fields.external_id,
        fields.name,
        fields.email,
        orjson.dumps(dict(fields.metadata or {})).decode(),
        fields.monthly_budget_usd,
        fields.rpm_limit,
        fields.tpm_limit,
        fields.wallet_low_threshold_usd,
    )


async def insert_customer(
    conn: Conn | Database, *, id: str, developer_id: str, fields: CustomerFields
) -> CustomerRow | None:
    """The new customer, or None when a live customer of this developer holds the external id."""
    record = await conn.fetchrow(_INSERT, id, developer_id, *_args(fields))
    return _row(record) if record else None


async def select_customer(
    conn: Conn | Database, developer_id: str, ref: str, *, for_update: bool = False
) -> CustomerRow | None:
    query = _SELECT_BY_REF_FOR_UPDATE if for_update else _SELECT_BY_REF
    record = await conn.fetchrow(query, developer_id, ref)
    return _row(record) if record else None


async def select_customer_by_external_id_for_update(
    conn: Conn, developer_id: str, external_id: str
) -> CustomerRow | None:
    record = await conn.fetchrow(_SELECT_BY_EXTERNAL_FOR_UPDATE, developer_id, external_id)
    return _row(record) if record else None


async def update_customer(conn: Conn, customer_id: str, fields: CustomerFields) -> CustomerRow:
    record = await conn.fetchrow(_UPDATE, customer_id, *_args(fields))
    assert record is not None
    return _row(record)


async def soft_delete_customer(
    conn: Conn | Database, developer_id: str, ref: str
) -> CustomerRow | None:
    record = await conn.fetchrow(_SOFT_DELETE, developer_id, ref)
    return _row(record) if record else None


async def select_customers(
    conn: Conn | Database, developer_id: str, win: Window, *, external_id: str | None = None
) -> list[CustomerRow]:
    query = _LIST_ASC if win.ascending else _LIST_DESC
    return [_row(r) for r in await conn.fetch(query, developer_id, external_id, *win.bounds)]


async def select_customer_seq(conn: Conn | Database, developer_id: str, id: str) -> int | None:
    seq: int | None = await conn.fetchval(_SELECT_SEQ, developer_id, id)
    return seq


@dataclass(frozen=True)
class CustomerLimits:
    id: str
    rpm_limit: int | None
    tpm_limit: int | None


_SELECT_LIMITS = f"SELECT id, rpm_limit, tpm_limit {_LIVE_BY_REF}"


async def select_customer_limits(
    conn: Conn | Database, developer_id: str, ref: str
) -> CustomerLimits | None:
    record = await conn.fetchrow(_SELECT_LIMITS, developer_id, ref)
    if record is None:
        return None
    return CustomerLimits(record["id"], record["rpm_limit"], record["tpm_limit"])


# The same rule as ringside_reserve: a stub's external id is the reference that named it.
_INSERT_STUB = """
    INSERT INTO customer (id, developer_id, external_id, stub)
    VALUES ($1, $2, $3, true)
        ON CONFLICT (developer_id, external_id)
     WHERE deleted_at IS NULL AND external_id IS NOT NULL DO NOTHING
 RETURNING id"""


async def insert_stub_customer(
    conn: Conn | Database, *, id: str, developer_id: str, external_id: str
) -> str | None:
    """The new stub's id, or None when a live customer already holds the external id."""
    created: str | None = await conn.fetchval(_INSERT_STUB, id, developer_id, external_id)
    return created
