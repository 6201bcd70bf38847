"""Prepaid wallets of customers and of developers, and their append-only ledger.

Every movement (top-up, adjust, refund) is one transaction: resolve the owner, lock its wallet
row, append the ledger row and move the cached balance in one statement. Calls are debited by
``ringside_settle``, never here. A wallet exists from its first top-up on (for a developer:
the switch from postpaid to prepaid); adjusts and refunds need one.

``wallet.low`` is written (into the webhook outbox, in the same transaction) when a negative
adjust leaves the balance below the customer's ``wallet_low_threshold_usd`` and no event was
written since the balance was last at or above it; any movement that brings the balance back
to the threshold re-arms it. Debits notify the same way, in ``ringside_settle``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ringside import validation
from ringside.errors import Conflict, InvalidRequest, NotFound
from ringside.ids import new_id
from ringside.money import ZERO, format_usd, parse_usd
from ringside.pagination import PageRequest, list_json, page_of, resolve_window
from ringside.store import customers as customer_store
from ringside.store import developers as developer_store
from ringside.store import wallets as store
from ringside.store.bridge import Conn, Database
from ringside.store.wallets import TransactionRow, WalletRow

# What NUMERIC(18, 6) holds.
_MAX_BALANCE = Decimal("999999999999.999999")
_DESCRIPTION_MAX = 500


@dataclass(frozen=True)
class Owner:
    developer_id: str
    customer_id: str | None  # None: the developer's own wallet
    low_threshold: Decimal | None = None

    @property
    def name(self) -> str:
        return f"customer {self.customer_id}" if self.customer_id else "this developer"


# Resolves the owner inside the movement's transaction (a 404 when there is none).
OwnerLookup = Callable[[Conn], Awaitable[Owner]]


def of_customer(developer_id: str, ref: str) -> OwnerLookup:
    async def lookup(conn: Conn) -> Owner:
        row = await customer_store.select_customer(conn, developer_id, ref)
        if row is None:
            raise NotFound(f"No customer {ref!r}.")
        return Owner(developer_id, row.id, row.wallet_low_threshold_usd)

    return lookup


def of_developer(developer_id: str) -> OwnerLookup:
    async def lookup(conn: Conn) -> Owner:
        if await developer_store.select_developer(conn, developer_id) is None:
            raise NotFound(f"No developer {developer_id!r}.")
        return Owner(developer_id, None)

    return lookup


@dataclass(frozen=True)
class Movement:
    amount: Decimal
    description: str | None


def _description(body: dict[str, Any], *, required: bool) -> str | None:
    value = body.get("description")
    if value is None and not required:
        return None
    return validation.text(value, "description", max_len=_DESCRIPTION_MAX)


def parse_topup(body: Any) -> Movement:
    obj = validation.body_object(body, ("amount_usd", "description"))
    if "amount_usd" not in obj:
        raise InvalidRequest("'amount_usd' is required.", param="amount_usd")
    amount = parse_usd(obj["amount_usd"], "amount_usd", allow_zero=False)
    return Movement(amount, _description(obj, required=False))


def parse_adjust(body: Any) -> Movement:
    obj = validation.body_object(body, ("amount_usd", "description"))
    if "amount_usd" not in obj:
        raise InvalidRequest("'amount_usd' is required.", param="amount_usd")
    amount = parse_usd(obj["amount_usd"], "amount_usd", allow_negative=True, allow_zero=False)
    return Movement(amount, _description(obj, required=True))


@dataclass(frozen=True)
class RefundSpec:
    request_id: str
    amount: Decimal | None  # None: what is left of the debit
    description: str | None


def parse_refund(body: Any) -> RefundSpec:
    obj = validation.body_object(body, ("request_id", "amount_usd", "description"))
    request_id = validation.text(obj.get("request_id"), "request_id", max_len=256)
    raw = obj.get("amount_usd")
    amount = None if raw is None else parse_usd(raw, "amount_usd", allow_zero=False)
    return RefundSpec(request_id, amount, _description(obj, required=False))


async def _move(
    conn: Conn,
    owner: Owner,
    wallet: WalletRow,
    *,
    type: str,
    movement: Movement,
    request_id: str,
) -> TransactionRow:
    balance = wallet.balance_usd + movement.amount
    if abs(balance) > _MAX_BALANCE:
        raise InvalidRequest(
            f"'amount_usd' would take the balance past {_MAX_BALANCE}.", param="amount_usd"
        )
    threshold = owner.low_threshold
    notified, notify = wallet.low_notified, False
    if threshold is None or balance >= threshold:
        notified = False
    elif movement.amount < 0 and not notified:
        notified = notify = True
    tx = await store.insert_movement(
        conn,
        wallet_id=wallet.id,
        id=new_id("wtx"),
        type=type,
        amount=movement.amount,
        low_notified=notified,
        request_id=request_id,
        description=movement.description,
    )
    if notify:
        # The payload ringside_settle writes for a debit.
        await store.insert_webhook_event(
            conn,
            id=new_id("evt"),
            developer_id=owner.developer_id,
            type="wallet.low",
            data={
                "customer_id": owner.customer_id,
                "balance_usd": format_usd(tx.balance_after_usd),
                "wallet_low_threshold_usd": format_usd(threshold),
                "request_id": request_id,
            },
        )
    return tx


async def _locked_wallet(conn: Conn, owner: Owner) -> WalletRow | None:
    return await store.select_wallet(
        conn, developer_id=owner.developer_id, customer_id=owner.customer_id, for_update=True
    )


async def topup(
    db: Database, lookup: OwnerLookup, movement: Movement, request_id: str
) -> TransactionRow:
    """Credit a wallet, opening it on the first top-up."""
    async with db.transaction() as conn:
        owner = await lookup(conn)
        wallet = await store.open_wallet_for_update(
            conn, id=new_id("wal"), developer_id=owner.developer_id, customer_id=owner.customer_id
        )
        return await _move(
            conn, owner, wallet, type="topup", movement=movement, request_id=request_id
        )


async def adjust(
    db: Database, lookup: OwnerLookup, movement: Movement, request_id: str
) -> TransactionRow:
    """A signed correction by the developer or operator (the balance may go below zero)."""
    async with db.transaction() as conn:
        owner = await lookup(conn)
        wallet = await _locked_wallet(conn, owner)
        if wallet is None:
            raise Conflict(
                f"{owner.name.capitalize()} has no wallet yet: the first top-up opens it.",
                code="no_wallet",
            )
        return await _move(
            conn, owner, wallet, type="adjust", movement=movement, request_id=request_id
        )


async def refund(db: Database, lookup: OwnerLookup, spec: RefundSpec) -> TransactionRow:
    """Give back (part of) what a call was debited; a call's refunds never exceed its debit.
    The refund row carries the refunded call's request id."""
    async with db.transaction() as conn:
        owner = await lookup(conn)
        # The wallet lock serialises refunds of one call: the sum below cannot go stale.
        wallet = await _locked_wallet(conn, owner)
        debit = (
            None if wallet is None else await store.select_debit(conn, wallet.id, spec.request_id)
        )
        if wallet is None or debit is None:
            raise InvalidRequest(
                f"Request {spec.request_id!r} was not debited on the wallet of {owner.name}.",
                param="request_id",
            )
        left = debit - await store.select_refunded(conn, wallet.id, spec.request_id)
        if left <= ZERO:
            raise Conflict(
                f"Request {spec.request_id!r} is already refunded in full.",
                param="request_id",
                code="refund_exceeds_debit",
            )
        amount = left if spec.amount is None else spec.amount
        if amount > left:
            raise Conflict(
                f"'amount_usd' is more than is left to refund of request {spec.request_id!r}: "
                f"{format_usd(left)} of its {format_usd(debit)} debit.",
                param="amount_usd",
                code="refund_exceeds_debit",
            )
        return await _move(
            conn,
            owner,
            wallet,
            type="refund",
            movement=Movement(amount, spec.description),
            request_id=spec.request_id,
        )


@dataclass(frozen=True)
class WalletView:
    owner: Owner
    wallet: WalletRow | None
    transactions: list[TransactionRow]
    has_more: bool


async def view(db: Database, lookup: OwnerLookup, page: PageRequest) -> WalletView:
    """The balance and one page of the ledger (newest first by default), from one snapshot."""
    async with db.transaction() as conn:
        await store.begin_snapshot(conn)
        owner = await lookup(conn)
        wallet = await store.select_wallet(
            conn, developer_id=owner.developer_id, customer_id=owner.customer_id
        )

        async def key_of(id: str) -> int | None:
            if wallet is None:
                return None
            return await store.select_transaction_seq(conn, wallet.id, id)

        win = await resolve_window(page, key_of)
        rows = [] if wallet is None else await store.select_transactions(conn, wallet.id, win)
    items, has_more = page_of(rows, win)
    return WalletView(owner, wallet, items, has_more)


def transaction_json(row: TransactionRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "wallet.transaction",
        "type": row.type,
        "amount_usd": format_usd(row.amount_usd),
        "balance_after_usd": format_usd(row.balance_after_usd),
        "request_id": row.request_id,
        "description": row.description,
        "created": int(row.created_at.timestamp()),
    }


def wallet_json(v: WalletView) -> dict[str, Any]:
    owner: dict[str, Any] = (
        {"object": "customer.wallet", "customer_id": v.owner.customer_id}
        if v.owner.customer_id
        else {"object": "developer.wallet", "developer_id": v.owner.developer_id}
    )
    return {
        "id": v.wallet.id if v.wallet else None,
        **owner,
        "balance_usd": format_usd(v.wallet.balance_usd if v.wallet else ZERO),
        "held_usd": format_usd(v.wallet.held_usd if v.wallet else ZERO),
        "transactions": list_json([transaction_json(t) for t in v.transactions], v.has_more),
    }
