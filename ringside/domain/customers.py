"""Customers: a developer's end-users, addressed by ``cus_`` id or the developer's external id.

A call naming an unknown customer creates a *stub* (``ringside_reserve``); creating a customer
with a stub's external id claims that stub (its usage and wallet stay with it), as does any
PATCH. Deleting is soft: the ledger and usage stay, and the external id is free again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from ringside import validation
from ringside.errors import Conflict, NotFound
from ringside.ids import new_id
from ringside.money import format_usd, parse_usd
from ringside.pagination import PageRequest, page_of, resolve_window
from ringside.store import customers as store
from ringside.store.bridge import Conn, Database, UniqueViolation
from ringside.store.customers import CustomerFields, CustomerRow


def _usd_or_null(value: Any, param: str) -> Any:
    return None if value is None else parse_usd(value, param)


_PARSERS: dict[str, Callable[[Any, str], Any]] = {
    "external_id": lambda v, p: validation.optional_text(v, p, max_len=256, strip_ok=False),
    "name": lambda v, p: validation.optional_text(v, p, max_len=256),
    "email": validation.email,
    "metadata": validation.metadata,
    "monthly_budget_usd": _usd_or_null,
    "rpm_limit": validation.positive_int,
    "tpm_limit": validation.positive_int,
    "wallet_low_threshold_usd": _usd_or_null,
}


def parse_fields(body: Any) -> dict[str, Any]:
    """The fields a create or PATCH body sets (``null`` clears one; metadata is replaced
    whole, ``null`` or ``{}`` empties it)."""
    obj = validation.body_object(body, _PARSERS)
    return {name: _PARSERS[name](value, name) for name, value in obj.items()}


def customer_json(row: CustomerRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "customer",
        "external_id": row.external_id,
        "name": row.name,
        "email": row.email,
        "metadata": dict(row.metadata),
        "monthly_budget_usd": format_usd(row.monthly_budget_usd),
        "rpm_limit": row.rpm_limit,
        "tpm_limit": row.tpm_limit,
        "wallet_low_threshold_usd": format_usd(row.wallet_low_threshold_usd),
        "stub": row.stub,
        "created": int(row.created_at.timestamp()),
    }


def _fields_of(row: CustomerRow) -> CustomerFields:
    return CustomerFields(
        **{f.name: getattr(row, f.name) for f in dataclasses.fields(CustomerFields)}
    )


def _exists(external_id: str | None) -> Conflict:
    return Conflict(
        f"A customer with external_id {external_id!r} already exists.",
        param="external_id",
        code="customer_exists",
    )


def _not_found(ref: str) -> NotFound:
    return NotFound(f"No customer {ref!r}.")


async def create_customer(db: Database, developer_id: str, changes: dict[str, Any]) -> CustomerRow:
    """A new customer; with the external id of a stub, that stub, claimed (stub=false). A live
    customer already holding the external id is a 409."""
    fields = CustomerFields(**changes)
    # Racing another create or a call's stub creation: the insert yields to the row that won,
    # and that row is then claimed (a stub) or refused; a row deleted meanwhile means retry.
    for _ in range(3):
        async with db.transaction() as conn:
            row = await store.insert_customer(
                conn, id=new_id("cus"), developer_id=developer_id, fields=fields
            )
            if row is not None:
                return row
            assert fields.external_id is not None
            held = await store.select_customer_by_external_id_for_update(
                conn, developer_id, fields.external_id
            )
            if held is None:
                continue
            if not held.stub:
                raise _exists(fields.external_id)
            return await store.update_customer(conn, held.id, fields)
    raise _exists(fields.external_id)


async def get_customer(db: Database, developer_id: str, ref: str) -> CustomerRow:
    row = await store.select_customer(db, developer_id, ref)
    if row is None:
        raise _not_found(ref)
    return row


async def update_customer(
    db: Database, developer_id: str, ref: str, changes: dict[str, Any]
) -> CustomerRow:
    """Apply a PATCH; the new limits apply from the next call (ringside_reserve reads them
    under the customer's row lock, which this update holds while it runs)."""
    try:
        async with db.transaction() as conn:
            row = await store.select_customer(conn, developer_id, ref, for_update=True)
            if row is None:
                raise _not_found(ref)
            fields = dataclasses.replace(_fields_of(row), **changes)
            return await store.update_customer(conn, row.id, fields)
    except UniqueViolation:
        raise _exists(changes.get("external_id")) from None


async def delete_customer(db: Database, developer_id: str, ref: str) -> CustomerRow:
    row = await store.soft_delete_customer(db, developer_id, ref)
    if row is None:
        raise _not_found(ref)
    return row


async def list_customers(
    db: Database, developer_id: str, page: PageRequest, *, external_id: str | None = None
) -> tuple[list[CustomerRow], bool]:
    async def key_of(id: str) -> int | None:
        return await store.select_customer_seq(db, developer_id, id)

    win = await resolve_window(page, key_of)
    rows = await store.select_customers(db, developer_id, win, external_id=external_id)
    return page_of(rows, win)


async def resolve_or_create_stub(db: Conn | Database, developer_id: str, ref: str) -> str:
    """The id of the live customer ``ref`` names (a ``cus_`` id or an external id), created as
    a stub with ``ref`` as its external id when there is none: once, however many calls race
    (the rule ringside_reserve applies to calls)."""
    # A racing creation makes our insert yield to its row, which the next lookup finds (the
    # unique index makes the insert wait for the other transaction to end).
    for _ in range(3):
        row = await store.select_customer(db, developer_id, ref)
        if row is not None:
            return row.id
        created = await store.insert_stub_customer(
            db, id=new_id("cus"), developer_id=developer_id, external_id=ref
        )
        if created is not None:
            return created
    raise _exists(ref)
