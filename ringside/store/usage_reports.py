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

# The breakdown and the report by customer are paged by keyset on their sort key: a query for
# the first page and one for the pages after a key ($4..), each reading $N rows (the page and
# one more, to tell has_more). usage_daily holds one row per (developer, day, customer, model),
# so the breakdown needs no grouping. By customer reads usage_daily_customer in its key's
# customer order.
_BREAKDOWN = """
    SELECT day, model, customer_id, requests, input_tokens, cached_input_tokens, output_tokens,
           reasoning_tokens, cost_usd, billable_usd
      FROM usage_daily
     WHERE developer_id = $1 AND day BETWEEN $2 AND $3{after}
     ORDER BY day, model, customer_id
     LIMIT ${limit}"""
_BREAKDOWN_FIRST = _BREAKDOWN.format(after="", limit=4)
_BREAKDOWN_AFTER = _BREAKDOWN.format(
    after="\n       AND (day, model, customer_id) > ($4, $5, $6)", limit=7
)

_BY_CUSTOMER = f"""
    SELECT NULL::date AS day, NULL::text AS model, customer_id, {_SUMS}
      FROM usage_daily_customer
     WHERE developer_id = $1 AND day BETWEEN $2 AND $3{{after}}
     GROUP BY customer_id
     ORDER BY customer_id
     LIMIT ${{limit}}"""
_BY_CUSTOMER_FIRST = _BY_CUSTOMER.format(after="", limit=4)
_BY_CUSTOMER_AFTER = _BY_CUSTOMER.format(after=" AND customer_id > $4", limit=5)

_UNPAGED_REPORTS = {
    "model": f"""
    SELECT NULL::date AS day, model, NULL::text AS customer_id, {_SUMS}
      FROM usage_daily_model
     WHERE developer_id = $1 AND day BETWEEN $2 AND $3
     GROUP BY model
     ORDER BY model""",
    "day": f"""
    SELECT day, NULL::text AS model, NULL::text AS customer_id, {_SUMS}
      FROM usage_daily_model
     WHERE developer_id = $1 AND day BETWEEN $2 AND $3
     GROUP BY day
     ORDER BY day""",
}

_TOTAL = """
    SELECT COALESCE(sum(billable_usd), 0) FROM usage_daily_model
     WHERE developer_id = $1 AND day BETWEEN $2 AND $3"""

GROUPINGS = ("customer", "model", "day")
PAGED: tuple[str | None, ...] = (None, "customer")

BreakdownKey = tuple[date, str, str]


async def select_customer_usage(
    conn: Conn | Database, developer_id: str, customer_id: str, first: date, last: date
) -> list[UsageRow]:
    rows = await conn.fetch(_CUSTOMER_REPORT, developer_id, customer_id, first, last)
    return [UsageRow(**dict(r)) for r in rows]


async def select_developer_usage(
    conn: Conn | Database,
    developer_id: str,
    first: date,
    last: date,
    group_by: str | None,
    *,
    after: BreakdownKey | str | None = None,
    fetch: int = 0,
) -> list[UsageRow]:
    """Rows of the developer's report. Paged reports (the breakdown and by customer) read at
    most ``fetch`` rows after the sort key ``after``: (day, model, customer_id) for the
    breakdown, customer_id by customer. ``None`` starts at the beginning."""
    args: tuple[object, ...] = (developer_id, first, last)
    if group_by is None:
        if after is None:
            rows = await conn.fetch(_BREAKDOWN_FIRST, *args, fetch)
        else:
            assert isinstance(after, tuple)
            rows = await conn.fetch(_BREAKDOWN_AFTER, *args, *after, fetch)
    elif group_by == "customer":
        if after is None:
            rows = await conn.fetch(_BY_CUSTOMER_FIRST, *args, fetch)
        else:
            rows = await conn.fetch(_BY_CUSTOMER_AFTER, *args, after, fetch)
    else:
        rows = await conn.fetch(_UNPAGED_REPORTS[group_by], *args)
    return [UsageRow(**dict(r)) for r in rows]


async def select_developer_total(
    conn: Conn | Database, developer_id: str, first: date, last: date
) -> Decimal:
    """The developer's billable total over the range, from the smallest rollup."""
    total: Decimal = await conn.fetchval(_TOTAL, developer_id, first, last)
    return total
