"""SQL for wallets and their append-only ledger (``wallet_transaction``).

Every function that moves money takes a ``Conn``: it only ever runs inside the domain's
transaction, after the wallet row was locked with one of the ``*_for_update`` reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import orjson

from ringside.pagination import Window
from ringside.store.bridge import Conn, Database


@dataclass(frozen=True)
class WalletRow:
    id: str
    developer_id: str
    customer_id: str | None
    balance_usd: Decimal
    held_usd: Decimal
    low_notified: bool
    created_at: datetime


@dataclass(frozen=True)
class TransactionRow:
    seq: int
    id: str
    wallet_id: str
    type: str
    amount_usd: Decimal
    balance_after_usd: Decimal
    request_id: str | None
    description: str | None
    created_at: datetime


_WALLET = "id, developer_id, customer_id, balance_usd, held_usd, low_notified, created_at"
_TX = """seq, id, wallet_id, type, amount_usd, balance_after_usd, request_id, description,
    created_at"""

# customer_id NULL is the developer's own wallet (see the partial unique indexes).
_OF_CUSTOMER = f"SELECT {_WALLET} FROM wallet WHERE customer_id = $1"
_OF_DEVELOPER = f"SELECT {_WALLET} FROM wallet WHERE developer_id = $1 AND customer_id IS NULL"
_QUERIES = {
    (False, False): _OF_DEVELOPER,
    (False, True): _OF_DEVELOPER + " FOR UPDATE",
    (True, False): _OF_CUSTOMER,
    (True, True): _OF_CUSTOMER + " FOR UPDATE",
}

_OPEN_CUSTOMER = """
    INSERT INTO wallet (id, developer_id, customer_id) VALUES ($1, $2, $3)
        ON CONFLICT (customer_id) WHERE customer_id IS NOT NULL DO NOTHING"""
_OPEN_DEVELOPER = """
    INSERT INTO wallet (id, developer_id) VALUES ($1, $2)
        ON CONFLICT (developer_id) WHERE customer_id IS NULL DO NOTHING"""

# One statement: the balance moves and its ledger row (carrying the balance after it) is
# appended together, so the cached balance is always the sum of the ledger.
_MOVE = f"""
    WITH moved AS (
        UPDATE wallet SET balance_usd = balance_usd + $2, low_notified = $3
         WHERE id = $1
     RETURNING id, balance_usd
    )
    INSERT INTO wallet_transaction (id, wallet_id, type, amount_usd, balance_after_usd,
                                    request_id, description)
    SELECT $4, moved.id, $5, $2, moved.balance_usd, $6, $7 FROM moved
 RETURNING {_TX}"""

_SELECT_DEBIT = """
    SELECT -amount_usd FROM wallet_transaction
     WHERE wallet_id = $1 AND request_id = $2 AND type = 'debit'"""

_SELECT_REFUNDED = """
    SELECT COALESCE(sum(amount_usd), 0) FROM wallet_transaction
     WHERE wallet_id = $1 AND request_id = $2 AND type = 'refund'"""

_LIST = """
    SELECT {columns} FROM wallet_transaction
     WHERE wallet_id = $1 AND seq > $2 AND seq < $3
     ORDER BY seq {direction}
     LIMIT $4"""
_LIST_ASC = _LIST.format(columns=_TX, direction="ASC")
_LIST_DESC = _LIST.format(columns=_TX, direction="DESC")

_SELECT_TX_SEQ = "SELECT seq FROM wallet_transaction WHERE wallet_id = $1 AND id = $2"

_INSERT_EVENT = """
    INSERT INTO webhook_event (id, developer_id, type, data) VALUES ($1, $2, $3, $4::jsonb)"""

# A wallet read (balance and a page of its ledger) sees one snapshot.
_SNAPSHOT = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"


async def begin_snapshot(conn: Conn) -> None:
    """Make the transaction just begun read one consistent snapshot."""
    await conn.execute(_SNAPSHOT)


async def select_wallet(
    conn: Conn | Database, *, developer_id: str, customer_id: str | None, for_update: bool = False
) -> WalletRow | None:
    query = _QUERIES[customer_id is not None, for_update]
    record = await conn.fetchrow(query, developer_id if customer_id is None else customer_id)
    return WalletRow(**dict(record)) if record else None


async def open_wallet_for_update(
    conn: Conn, *, id: str, developer_id: str, customer_id: str | None
) -> WalletRow:
    """The owner's wallet, created when it has none yet, locked."""
    if customer_id is None:
        await conn.execute(_OPEN_DEVELOPER, id, developer_id)
    else:
        await conn.execute(_OPEN_CUSTOMER, id, developer_id, customer_id)
    wallet = await select_wallet(
        conn, developer_id=developer_id, customer_id=customer_id, for_update=True
    )
    assert wallet is not None
    return wallet


async def insert_movement(
    conn: Conn,
    *,
    wallet_id: str,
    id: str,
    type: str,
    amount: Decimal,
    low_notified: bool,
    request_id: str | None,
    description: str | None,
) -> TransactionRow:
    record = await conn.fetchrow(
        _MOVE, wallet_id, amount, low_notified, id, type, request_id, description
    )
    assert record is not None
    return TransactionRow(**dict(record))


async def select_debit(conn: Conn, wallet_id: str, request_id: str) -> Decimal | None:
    """What a call was debited on this wallet (positive), if it was."""
    debit: Decimal | None = await conn.fetchval(_SELECT_DEBIT, wallet_id, request_id)
    return debit


async def select_refunded(conn: Conn, wallet_id: str, request_id: str) -> Decimal:
    refunded: Decimal = await conn.fetchval(_SELECT_REFUNDED, wallet_id, request_id)
    return refunded


async def select_transactions(
    conn: Conn | Database, wallet_id: str, win: Window
) -> list[TransactionRow]:
    query = _LIST_ASC if win.ascending else _LIST_DESC
    return [TransactionRow(**dict(r)) for r in await conn.fetch(query, wallet_id, *win.bounds)]


async def select_transaction_seq(conn: Conn | Database, wallet_id: str, id: str) -> int | None:
    seq: int | None = await conn.fetchval(_SELECT_TX_SEQ, wallet_id, id)
    return seq


async def insert_webhook_event(
    conn: Conn, *, id: str, developer_id: str, type: str, data: Mapping[str, object]
) -> None:
    """Into the outbox, in the transaction of what caused it; the worker delivers it."""
    await conn.execute(_INSERT_EVENT, id, developer_id, type, orjson.dumps(data).decode())
