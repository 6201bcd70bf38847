"""SQL for holds and settlements (``ringside_reserve`` / ``ringside_settle`` in
sql/0002_customers_billing.sql) and the registry of live gateway processes.

Reserving and settling are one statement each: one round trip, and atomic (a statement is its
own transaction; the function body cannot commit halfway).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ringside.store.bridge import Conn, Database


@dataclass(frozen=True)
class HoldSpec:
    request_id: str
    process_id: str
    developer_id: str
    api_key_id: str
    customer_ref: str | None
    model_requested: str
    model_resolved: str
    provider: str
    upstream_model: str
    stream: bool
    cost_usd: Decimal  # worst case
    amount_usd: Decimal  # worst case, charged


@dataclass(frozen=True)
class Reservation:
    outcome: str  # ok | customer_budget_exceeded | customer_wallet_empty | wallet_empty
    customer_id: str | None
    wallet_balance_usd: Decimal | None  # the customer's wallet before this call, if any
    wallet_held_usd: Decimal | None


@dataclass(frozen=True)
class SettleSpec:
    request_id: str
    status: str
    http_status: int
    usage_source: str
    model_resolved: str
    provider: str
    upstream_model: str
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost_usd: Decimal
    billable_usd: Decimal
    latency_ms: int


@dataclass(frozen=True)
class Settlement:
    settled: bool  # False: somebody else (the sweeper, a retry) settled it first
    wallet_balance_usd: Decimal | None


@dataclass(frozen=True)
class OrphanHold:
    request_id: str
    model_resolved: str
    provider: str
    upstream_model: str
    cost_usd: Decimal
    amount_usd: Decimal
    created_age_ms: int


_RESERVE = """
    SELECT outcome, customer_id, wallet_balance_usd, wallet_held_usd
      FROM ringside_reserve($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"""


def settle_call(first: int) -> str:
    """``ringside_settle(...)`` with its arguments (``settle_args``) from ``$first`` on."""
    return "ringside_settle({})".format(", ".join(f"${first + i}" for i in range(14)))


_SETTLE = f"SELECT settled, wallet_balance_usd FROM {settle_call(1)}"

_HEARTBEAT = """
    INSERT INTO gateway_process (id, pid, hostname) VALUES ($1, $2, $3)
        ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()"""

_FORGET_PROCESS = "DELETE FROM gateway_process WHERE id = $1"

# Holds whose process stopped beating (or deregistered with the hold still open), and holds
# older than any call can run (a body Quart never closed). SKIP LOCKED lets several workers
# sweep at once; the settle itself is idempotent anyway.
_CLAIM_ORPHANS = """
    SELECT h.request_id, h.model_resolved, h.provider, h.upstream_model, h.cost_usd,
           h.amount_usd,
           (extract(epoch FROM now() - h.created_at) * 1000)::integer AS created_age_ms
      FROM billing_hold AS h
      LEFT JOIN gateway_process AS p ON p.id = h.process_id
     WHERE p.id IS NULL
        OR p.heartbeat_at < now() - make_interval(secs => $1)
        OR h.created_at < now() - make_interval(secs => $3)
     ORDER BY h.created_at
     LIMIT $2
       FOR UPDATE OF h SKIP LOCKED"""

_FORGET_DEAD_PROCESSES = """
    DELETE FROM gateway_process AS p
     WHERE p.heartbeat_at < now() - make_interval(secs => $1)
       AND NOT EXISTS (SELECT 1 FROM billing_hold AS h WHERE h.process_id = p.id)"""


async def reserve(conn: Conn | Database, spec: HoldSpec) -> Reservation:
    row = await conn.fetchrow(
        _RESERVE,
        spec.request_id,
        spec.process_id,
        spec.developer_id,
        spec.api_key_id,
        spec.customer_ref,
        spec.model_requested,
        spec.model_resolved,
        spec.provider,
        spec.upstream_model,
        spec.stream,
        spec.cost_usd,
        spec.amount_usd,
    )
    assert row is not None
    return Reservation(**dict(row))


def settle_args(spec: SettleSpec) -> tuple[Any, ...]:
    """``ringside_settle``'s fourteen arguments."""
    return (
        spec.request_id,
        spec.status,
        spec.http_status,
        spec.usage_source,
        spec.model_resolved,
        spec.provider,
        spec.upstream_model,
        spec.input_tokens,
        spec.cached_input_tokens,
        spec.output_tokens,
        spec.reasoning_tokens,
        spec.cost_usd,
        spec.billable_usd,
        spec.latency_ms,
    )


async def settle(conn: Conn | Database, spec: SettleSpec) -> Settlement:
    row = await conn.fetchrow(_SETTLE, *settle_args(spec))
    assert row is not None
    return Settlement(**dict(row))


async def heartbeat(conn: Conn | Database, process_id: str, pid: int, hostname: str) -> None:
    await conn.execute(_HEARTBEAT, process_id, pid, hostname)


async def forget_process(conn: Conn | Database, process_id: str) -> None:
    await conn.execute(_FORGET_PROCESS, process_id)


async def claim_orphans(
    conn: Conn, *, dead_after_s: float, max_age_s: float, batch: int
) -> list[OrphanHold]:
    rows = await conn.fetch(_CLAIM_ORPHANS, dead_after_s, batch, max_age_s)
    return [OrphanHold(**dict(r)) for r in rows]


async def forget_dead_processes(conn: Conn | Database, *, dead_after_s: float) -> None:
    await conn.execute(_FORGET_DEAD_PROCESSES, dead_after_s)
