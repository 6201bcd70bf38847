"""SQL for usage reports, read from the ``usage_daily`` aggregate (one row per developer, UTC
day, customer and model, kept by ``ringside_settle``); never from ``usage_event``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from ringside.store.bridge import Conn, Database


@dataclass(frozen=True)
class UsageRow:
    """Sums over a group; the columns not grouped by are None. customer_id '' is usage no
    customer was named for."""

    day: date | None
    model: str | None
    customer_id: str | None
    requests: int
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost_usd: Decimal
    billable_usd: Decimal


_SUMS = """sum(requests)::bigint AS requests, sum(input_tokens)::bigint AS input_tokens,
       sum(cached_input_tokens)::bigint AS cached_input_tokens,
       sum(output_tokens)::bigint AS output_tokens,
       sum(reasoning_tokens)::bigint AS reasoning_tokens,
       sum(cost_usd) AS cost_usd, sum(billable_usd) AS billable_usd"""

_CUSTOMER_REPORT = f"""
    SELECT day, model, customer_id, {_SUMS}
      FROM usage_daily
     WHERE developer_id = $1 AND customer_id = $2 AND day BETWEEN $3 AND $4
     GROUP BY day, model, customer_id
     ORDER BY day, model"""

_DEVELOPER_REPORTS = {
    None: f"""
    SELECT day, model, customer_id, {_SUMS}
      FROM usage_daily
     WHERE developer_id = $1 AND day BETWEEN $2 AND $3
     GROUP BY day, model, customer_id
     ORDER BY day, model, customer_id""",
    "customer": f"""
    SELECT NULL::date AS day, NULL::text AS model, customer_id, {_SUMS}
      FROM usage_daily
     WHERE developer_id = $1 AND day BETWEEN $2 AND $3
     GROUP BY customer_id
     ORDER BY customer_id""",
    "model": f"""
    SELECT NULL::date AS day, model, NULL::text AS customer_id, {_SUMS}
      FROM usage_daily
     WHERE developer_id = $1 AND day BETWEEN $2 AND $3
     GROUP BY model
     ORDER BY model""",
    "day": f"""
    SELECT day, NULL::text AS model, NULL::text AS customer_id, {_SUMS}
      FROM usage_daily
     WHERE developer_id = $1 AND day BETWEEN $2 AND $3
     GROUP BY day
     ORDER BY day""",
}
GROUPINGS = tuple(g for g in _DEVELOPER_REPORTS if g is not None)


async def select_customer_usage(
    conn: Conn | Database, developer_id: str, customer_id: str, first: date, last: date
) -> list[UsageRow]:
    rows = await conn.fetch(_CUSTOMER_REPORT, developer_id, customer_id, first, last)
    return [UsageRow(**dict(r)) for r in rows]


async def select_developer_usage(
    conn: Conn | Database, developer_id: str, first: date, last: date, group_by: str | None
) -> list[UsageRow]:
    rows = await conn.fetch(_DEVELOPER_REPORTS[group_by], developer_id, first, last)
    return [UsageRow(**dict(r)) for r in rows]
