"""The usage-report step: load 1,000,000 usage events for the bench developer straight into the
gateway's PostgreSQL, then time its usage reports over HTTP (and their queries alone).

The events are spread over ~1,000 customers (a few heavy, many light), the last 30 UTC days
and 5 catalog models, with exact NUMERIC costs from the catalog's prices and billable amounts
at the developer's markup. ``usage_daily`` and its rollups ``usage_daily_model`` and
``usage_daily_customer`` are built from exactly those rows in the same statement (an ``INSERT
... SELECT ... GROUP BY ... ON CONFLICT DO UPDATE`` each, adding to what the load cells' calls
already put there): what ``ringside_settle`` would have accumulated had the calls gone through
the gateway. The reports themselves read those aggregates only (the paged ones their first
page, of the default size). The load runs in one part per CPU side by side, with the
foreign-key triggers off (the rows reference customers, the developer and its key by
construction).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import asyncpg
import httpx

from bench.harness import BenchError
from ringside.catalog import load_catalog
from ringside.domain.usage_reports import DEFAULT_LIMIT
from ringside.pricing import PricingPolicy
from ringside.store import usage_reports as store
from ringside.store.embedded import start_postgres

EVENTS = 1_000_000
CUSTOMERS = 1_000
DAYS = 30
# (model ref, share of calls): a cheap workhorse, two mid-range models, a premium one and a
# reasoning model.
MODELS = (
    ("fc:openai/gpt-4o-mini", 0.40),
    ("fc:gemini/gemini-3.8-flash", 0.20),
    ("fc:openai/gpt-4.1", 0.15),
    ("fc:anthropic/claude-sonnet-4-6", 0.15),
    ("fc:openai/gpt-6.2-sol", 0.10),
)
REASONING = {"fc:openai/gpt-6.2-sol"}
REPEATS = 20
WARMUP = 3

_CUSTOMERS_SQL = """
INSERT INTO customer (id, developer_id, external_id, name, monthly_budget_usd, created_at)
SELECT 'cus_' || substr(md5('bench-usage-' || i), 1, 24), $1, 'load-' || lpad(i::text, 4, '0'),
       'Load customer ' || i, CASE WHEN i % 4 = 0 THEN 500 END, now() - interval '40 days'
  FROM generate_series(1, $2::int) AS i
"""

# $1 developer, $2 api key, $3 and $4 the first and last event number, $5 customers, $6 days,
# $7 model refs, $8 providers, $9 upstream models, $10 the models' cumulative shares but the
# last (width_bucket's thresholds), $11..$14 prices per 1M tokens (input, cached input, output,
# reasoning), $15 billable factor per model, $16 reasoning model flags.
_EVENTS_SQL = """
WITH m AS (
    SELECT * FROM unnest($7::text[], $8::text[], $9::text[], $11::numeric[], $12::numeric[],
                         $13::numeric[], $14::numeric[], $15::numeric[], $16::bool[])
                  WITH ORDINALITY
        AS m(ref, provider, upstream, p_in, p_cached, p_out, p_reason, factor, reasons, i)
), r AS (
    SELECT g,
           1 + width_bucket(random(), $10::float8[]) AS model_i,
           1 + floor($5 * power(random(), 2))::int AS cust,       -- skewed: a few heavy users
           floor(random() * $6)::int AS days_back,
           random() AS at_time,
           random() AS failed,
           50 + floor(6000 * power(random(), 3))::int AS input_tokens,
           random() AS cache_share,
           random() AS cached,
           10 + floor(1200 * power(random(), 2))::int AS output_tokens,
           random() AS reason_share,
           random() < 0.5 AS stream,
           150 + floor(4000 * power(random(), 2))::int AS latency_ms
      FROM generate_series($3::int, $4::int) AS g
), t AS (
    SELECT r.g, r.stream, r.latency_ms, r.failed < 0.02 AS failed, m.*,
           'cus_' || substr(md5('bench-usage-' || r.cust), 1, 24) AS customer_id,
           'load-' || lpad(r.cust::text, 4, '0') AS customer_ref,
           date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
             - r.days_back * interval '1 day'
             + r.at_time * CASE WHEN r.days_back = 0
                                THEN now() - (date_trunc('day', now() AT TIME ZONE 'UTC')
                                              AT TIME ZONE 'UTC')
                                ELSE interval '1 day' END AS created_at,
           CASE WHEN r.failed < 0.02 THEN 0 ELSE r.input_tokens END AS inp,
           CASE WHEN r.failed < 0.02 OR r.cached > 0.3 THEN 0
                ELSE floor(r.input_tokens * r.cache_share * 0.9)::int END AS cin,
           CASE WHEN r.failed < 0.02 THEN 0 ELSE r.output_tokens END AS outp,
           CASE WHEN r.failed < 0.02 OR NOT m.reasons THEN 0
                ELSE floor(r.output_tokens * r.reason_share * 0.8)::int END AS reason
      FROM r JOIN m ON m.i = r.model_i
), c AS (
    SELECT t.*,
           ((t.inp - t.cin) * t.p_in + t.cin * t.p_cached + (t.outp - t.reason) * t.p_out
            + t.reason * t.p_reason) / 1000000 AS cost
      FROM t
), ins AS (
    INSERT INTO usage_event (
        request_id, developer_id, api_key_id, customer_ref, customer_id, model_requested,
        model_resolved, provider, upstream_model, stream, input_tokens, cached_input_tokens,
        output_tokens, reasoning_tokens, usage_source, cost_usd, billable_usd, latency_ms,
        status, http_status, created_at
    )
    SELECT 'req_bload' || lpad(c.g::text, 15, '0'), $1, $2, c.customer_ref, c.customer_id,
           c.ref, c.ref, c.provider, c.upstream, c.stream, c.inp, c.cin, c.outp, c.reason,
           CASE WHEN c.failed THEN 'none' ELSE 'upstream' END,
           c.cost, round(c.cost * c.factor, 6), c.latency_ms,
           CASE WHEN c.failed THEN 'upstream_error' ELSE 'ok' END,
           CASE WHEN c.failed THEN 502 ELSE 200 END,
           c.created_at
      FROM c
    RETURNING developer_id, created_at, customer_id, model_resolved, input_tokens,
              cached_input_tokens, output_tokens, reasoning_tokens, cost_usd, billable_usd
)
, daily AS (
INSERT INTO usage_daily AS d (
    developer_id, day, customer_id, model, requests, input_tokens, cached_input_tokens,
    output_tokens, reasoning_tokens, cost_usd, billable_usd
)
SELECT developer_id, (created_at AT TIME ZONE 'UTC')::date, COALESCE(customer_id, ''),
       model_resolved, count(*), sum(input_tokens), sum(cached_input_tokens),
       sum(output_tokens), sum(reasoning_tokens), sum(cost_usd), sum(billable_usd)
  FROM ins
 GROUP BY 1, 2, 3, 4
 ORDER BY 1, 2, 3, 4  -- parts loaded side by side take the rows' locks in the same order
ON CONFLICT (developer_id, day, customer_id, model) DO UPDATE SET
    requests = d.requests + EXCLUDED.requests,
    input_tokens = d.input_tokens + EXCLUDED.input_tokens,
    cached_input_tokens = d.cached_input_tokens + EXCLUDED.cached_input_tokens,
    output_tokens = d.output_tokens + EXCLUDED.output_tokens,
    reasoning_tokens = d.reasoning_tokens + EXCLUDED.reasoning_tokens,
    cost_usd = d.cost_usd + EXCLUDED.cost_usd,
    billable_usd = d.billable_usd + EXCLUDED.billable_usd
), by_model AS (
INSERT INTO usage_daily_model AS d (
    developer_id, day, model, requests, input_tokens, cached_input_tokens, output_tokens,
    reasoning_tokens, cost_usd, billable_usd
)
SELECT developer_id, (created_at AT TIME ZONE 'UTC')::date, model_resolved, count(*),
       sum(input_tokens), sum(cached_input_tokens), sum(output_tokens), sum(reasoning_tokens),
       sum(cost_usd), sum(billable_usd)
  FROM ins
 GROUP BY 1, 2, 3
 ORDER BY 1, 2, 3
ON CONFLICT (developer_id, day, model) DO UPDATE SET
    requests = d.requests + EXCLUDED.requests,
    input_tokens = d.input_tokens + EXCLUDED.input_tokens,
    cached_input_tokens = d.cached_input_tokens + EXCLUDED.cached_input_tokens,
    output_tokens = d.output_tokens + EXCLUDED.output_tokens,
    reasoning_tokens = d.reasoning_tokens + EXCLUDED.reasoning_tokens,
    cost_usd = d.cost_usd + EXCLUDED.cost_usd,
    billable_usd = d.billable_usd + EXCLUDED.billable_usd
)
INSERT INTO usage_daily_customer AS d (
    developer_id, customer_id, day, requests, input_tokens, cached_input_tokens, output_tokens,
    reasoning_tokens, cost_usd, billable_usd
)
SELECT developer_id, COALESCE(customer_id, ''), (created_at AT TIME ZONE 'UTC')::date, count(*),
       sum(input_tokens), sum(cached_input_tokens), sum(output_tokens), sum(reasoning_tokens),
       sum(cost_usd), sum(billable_usd)
  FROM ins
 GROUP BY 1, 2, 3
 ORDER BY 1, 2, 3
ON CONFLICT (developer_id, customer_id, day) DO UPDATE SET
    requests = d.requests + EXCLUDED.requests,
    input_tokens = d.input_tokens + EXCLUDED.input_tokens,
    cached_input_tokens = d.cached_input_tokens + EXCLUDED.cached_input_tokens,
    output_tokens = d.output_tokens + EXCLUDED.output_tokens,
    reasoning_tokens = d.reasoning_tokens + EXCLUDED.reasoning_tokens,
    cost_usd = d.cost_usd + EXCLUDED.cost_usd,
    billable_usd = d.billable_usd + EXCLUDED.billable_usd
"""


@dataclass(frozen=True)
class Loaded:
    events: int
    customers: int
    usage_daily_rows: int
    load_seconds: float
    events_total_billable_usd: str  # sum(billable_usd) over all the developer's usage_event rows
    events_total: int  # all the developer's usage events (the load cells' calls included)
    first_day: date
    last_day: date
    heavy_customer: str  # the customer with the most events, for the per-customer report
    heavy_customer_events: int
    heavy_customer_billable_usd: str  # sum(billable_usd) over that customer's usage events
    holds_left: int  # billing holds of earlier calls still open when the load began
    holds_sample: list[dict[str, Any]]


def _model_params(tier: str, markup: Decimal | None, rate: Decimal) -> list[list[Any]]:
    catalog = load_catalog()
    policy = PricingPolicy()
    refs, providers, upstreams, upto, p_in, p_cached, p_out, p_reason, factors, reasons = (
        [] for _ in range(10)
    )
    total = 0.0
    for ref, share in MODELS:
        info = catalog.by_ref(ref)
        if info is None:
            raise BenchError(f"usage load: {ref} is not in the catalog")
        total += share
        refs.append(ref)
        providers.append(info.provider)
        upstreams.append(info.model)
        if ref != MODELS[-1][0]:
            upto.append(total)
        p_in.append(info.pricing.input)
        p_cached.append(info.pricing.cached_input)
        p_out.append(info.pricing.output)
        p_reason.append(info.pricing.reasoning)
        factors.append(policy.factor(tier, markup, rate, ref))
        reasons.append(ref in REASONING)
    return [refs, providers, upstreams, upto, p_in, p_cached, p_out, p_reason, factors, reasons]


def _parts(events: int) -> list[tuple[int, int]]:
    """Event numbers for each of the loading connections, one per CPU (the gateway is idle)."""
    n = max(1, min(os.cpu_count() or 1, 4))
    bounds = [events * i // n for i in range(n + 1)]
    return [(bounds[i] + 1, bounds[i + 1]) for i in range(n)]


async def _load_part(dsn: str, args: list[Any]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            # The rows are consistent by construction: skip the foreign-key triggers (a third
            # of the load's time), and keep the aggregate's hash table in memory.
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute("SET LOCAL work_mem = '256MB'")
            await conn.execute(_EVENTS_SQL, *args)
    finally:
        await conn.close()


async def _settled(conn: asyncpg.Connection, developer_id: str, wait_s: float = 30.0) -> int:
    """Wait for the calls still in flight (the stream probe's, closed by the client) to be
    settled, so that the usage events and the aggregate hold still while they are compared.
    Returns how many holds are left once their number stopped moving (0 normally)."""
    deadline = time.monotonic() + wait_s
    last, since = -1, time.monotonic()
    while True:
        held = await conn.fetchval(
            "SELECT count(*) FROM billing_hold WHERE developer_id = $1", developer_id
        )
        if held == 0:
            return 0
        if held != last:
            last, since = held, time.monotonic()
        elif time.monotonic() - since > 10 or time.monotonic() > deadline:
            return int(held)
        await asyncio.sleep(0.5)


async def _load(dsn: str, developer_id: str, events: int) -> Loaded:
    conn = await asyncpg.connect(dsn)
    try:
        dev = await conn.fetchrow(
            "SELECT tier, markup_percent, rate_multiplier FROM developer WHERE id = $1",
            developer_id,
        )
        key_id = await conn.fetchval(
            "SELECT id FROM api_key WHERE developer_id = $1 ORDER BY created_at LIMIT 1",
            developer_id,
        )
        if dev is None or key_id is None:
            raise BenchError(f"usage load: no developer {developer_id} with a key")
        params = _model_params(dev["tier"], dev["markup_percent"], dev["rate_multiplier"])
        stuck = await _settled(conn, developer_id)
        stuck_detail = [
            dict(r)
            for r in await conn.fetch(
                "SELECT request_id, stream, customer_id, process_id,"
                " round(extract(epoch FROM now() - created_at))::int AS age_s"
                " FROM billing_hold WHERE developer_id = $1 ORDER BY created_at LIMIT 5",
                developer_id,
            )
        ]
        started = time.monotonic()
        await conn.execute(_CUSTOMERS_SQL, developer_id, CUSTOMERS)
        await asyncio.gather(
            *(_load_part(dsn, [developer_id, key_id, first, last, CUSTOMERS, DAYS, *params])
              for first, last in _parts(events))
        )  # fmt: skip
        await conn.execute(
            "ANALYZE usage_event; ANALYZE usage_daily; ANALYZE usage_daily_model;"
            " ANALYZE usage_daily_customer; ANALYZE customer"
        )
        load_seconds = time.monotonic() - started
        totals = await conn.fetchrow(
            "SELECT count(*) AS n, sum(billable_usd) AS billable, "
            "min((created_at AT TIME ZONE 'UTC')::date) AS first, "
            "max((created_at AT TIME ZONE 'UTC')::date) AS last "
            "FROM usage_event WHERE developer_id = $1",
            developer_id,
        )
        daily = await conn.fetchval(
            "SELECT count(*) FROM usage_daily WHERE developer_id = $1", developer_id
        )
        heavy = await conn.fetchrow(
            "SELECT customer_id, sum(requests)::bigint AS n FROM usage_daily "
            "WHERE developer_id = $1 AND customer_id IN "
            "(SELECT id FROM customer WHERE developer_id = $1 AND external_id LIKE 'load-%') "
            "GROUP BY customer_id ORDER BY n DESC LIMIT 1",
            developer_id,
        )
        heavy_billable = await conn.fetchval(
            "SELECT sum(billable_usd) FROM usage_event WHERE developer_id = $1"
            " AND customer_id = $2",
            developer_id,
            heavy["customer_id"],
        )
    finally:
        await conn.close()
    return Loaded(
        events=events,
        customers=CUSTOMERS,
        usage_daily_rows=daily,
        load_seconds=round(load_seconds, 2),
        events_total_billable_usd=str(totals["billable"]),
        events_total=totals["n"],
        first_day=totals["first"],
        last_day=totals["last"],
        heavy_customer=heavy["customer_id"],
        heavy_customer_events=heavy["n"],
        heavy_customer_billable_usd=str(heavy_billable),
        holds_left=stuck,
        holds_sample=stuck_detail,
    )


def _time(client: httpx.Client, path: str, params: dict[str, str]) -> dict[str, Any]:
    timings: list[float] = []
    body: dict[str, Any] = {}
    size = 0

    def once() -> float:
        nonlocal body, size
        started = time.perf_counter()
        resp = client.get(path, params=params)
        elapsed = 1000 * (time.perf_counter() - started)
        if resp.status_code != 200:
            raise BenchError(f"GET {path} {params}: {resp.status_code} {resp.text[:300]}")
        body, size = resp.json(), len(resp.content)
        return elapsed

    warm = [once() for _ in range(WARMUP)]
    # A report far over target still gets timed, just fewer times.
    repeats = REPEATS if max(warm) < 1000 else 5
    timings = [once() for _ in range(repeats)]
    timings.sort()
    p95 = timings[min(len(timings) - 1, round(0.95 * (len(timings) - 1)))]
    return {
        "path": path,
        "params": params,
        "repeats": repeats,
        "median_ms": round(statistics.median(timings), 2),
        "p95_ms": round(p95, 2),
        "rows": len(body.get("data", [])),
        "bytes": size,
        "total_billable_usd": body.get("total_billable_usd"),
    }


async def _time_sql(
    dsn: str, developer_id: str, customer_id: str, first: date, last: date
) -> dict[str, float]:
    """The same reports' queries straight from here (the gateway's own store functions over
    one asyncpg connection): the database's share of each report, median of a few runs."""
    conn = await asyncpg.connect(dsn)
    db = cast(Any, conn)  # the store functions only call fetch() and fetchval(), as asyncpg
    out: dict[str, float] = {}
    try:
        for name, run in _sql_reports(db, developer_id, customer_id, first, last):
            timings = []
            for _ in range(WARMUP + 5):
                started = time.perf_counter()
                await run()
                timings.append(1000 * (time.perf_counter() - started))
            out[name] = round(statistics.median(timings[WARMUP:]), 2)
    finally:
        await conn.close()
    return out


def _sql_reports(
    db: Any, developer_id: str, customer_id: str, first: date, last: date
) -> list[tuple[str, Callable[[], Awaitable[object]]]]:
    def developer(group_by: str | None) -> Callable[[], Awaitable[object]]:
        async def run() -> object:
            rows = await store.select_developer_usage(
                db, developer_id, first, last, group_by, fetch=DEFAULT_LIMIT + 1
            )
            return rows, await store.select_developer_total(db, developer_id, first, last)

        return run

    return [
        (CUSTOMER_REPORT,
         lambda: store.select_customer_usage(db, developer_id, customer_id, first, last)),
        *((_developer_name(g), developer(g)) for g in GROUPINGS),
    ]  # fmt: skip


CUSTOMER_REPORT = "customer (heaviest)"
GROUPINGS: tuple[str | None, ...] = ("customer", "model", "day", None)


def _developer_name(group_by: str | None) -> str:
    return f"developer, group_by={group_by}" if group_by else "developer, ungrouped"


def run_usage_reports(
    data_dir: Path, base_url: str, auth: dict[str, str], developer_id: str, events: int = EVENTS
) -> dict[str, Any]:
    """Load the events (through the gateway's own embedded PostgreSQL), time the reports over
    HTTP and their queries alone, and cross-check the reports' totals against the events."""
    print(f"  usage: loading {events:,} usage events ...", file=sys.stderr, flush=True)
    dsn, handle = start_postgres(data_dir)
    try:
        loaded = asyncio.run(_load(dsn, developer_id, events))
        print(
            f"  usage: loaded in {loaded.load_seconds:.1f}s, {loaded.usage_daily_rows:,}"
            f" usage_daily rows, {loaded.first_day}..{loaded.last_day}",
            file=sys.stderr,
            flush=True,
        )
        today = datetime.now(UTC).date()
        first = today - timedelta(days=DAYS - 1)
        span = {"from": first.isoformat(), "to": today.isoformat()}
        reports: list[dict[str, Any]] = []
        with httpx.Client(base_url=base_url, headers=auth, timeout=60.0, trust_env=False) as client:
            path = f"/v1/customers/{loaded.heavy_customer}/usage"
            reports.append({"report": CUSTOMER_REPORT, **_time(client, path, span)})
            for group_by in GROUPINGS:
                params = span | ({"group_by": group_by} if group_by else {})
                reports.append(
                    {"report": _developer_name(group_by), **_time(client, "/v1/usage", params)}
                )
        sql = asyncio.run(_time_sql(dsn, developer_id, loaded.heavy_customer, first, today))
    finally:
        handle.cleanup()  # the gateway still holds the server: this only lets go of ours
    for r in reports:
        r["sql_median_ms"] = sql[r["report"]]
        print(
            f"  usage: {r['report']:<30} median {r['median_ms']:8.2f} ms  p95"
            f" {r['p95_ms']:8.2f} ms  sql {r['sql_median_ms']:8.2f} ms  {r['rows']:>7} rows",
            file=sys.stderr,
            flush=True,
        )
    expected = Decimal(loaded.events_total_billable_usd)
    mismatched = [
        f"{r['report']}: {r['total_billable_usd']} (expected {want})"
        for r in reports
        for want in [expected if r["report"] != CUSTOMER_REPORT
                     else Decimal(loaded.heavy_customer_billable_usd)]
        if Decimal(r["total_billable_usd"]) != want
    ]  # fmt: skip
    if mismatched:
        raise BenchError(
            "usage report totals disagree with sum(usage_event.billable_usd): "
            + "; ".join(mismatched)
        )
    return {
        "loaded": {
            **{k: str(v) if isinstance(v, date) else v for k, v in loaded.__dict__.items()},
            "how": "INSERT ... SELECT FROM generate_series into usage_event (in"
            f" {len(_parts(events))} parts side by side, foreign-key triggers off), and usage_daily"
            " built from exactly those rows (INSERT ... SELECT ... GROUP BY ... ON CONFLICT DO"
            " UPDATE adding to it), and usage_daily_model and usage_daily_customer the same way in"
            " the same statement, as settlement would have accumulated them",
        },
        "range": span,
        "reports": reports,
        "cross_check": {
            "sum_usage_event_billable_usd": str(expected),
            "customer_sum_usage_event_billable_usd": loaded.heavy_customer_billable_usd,
            "matches": True,
        },
    }
