"""Usage reports from the ``usage_daily`` aggregate: ``GET /v1/customers/{id}/usage`` and
``GET /v1/usage`` (grouped by customer, model or day) from its rollups. The aggregates are
written here directly, as ringside_settle keeps them; the last tests bill real calls."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from tests.api.devapi import DevApi, assert_error, new_dev
from tests.gateway import RunningGateway

D1, D2, D3 = date(2026, 3, 30), date(2026, 3, 31), date(2026, 4, 1)


async def add_usage(
    gateway: RunningGateway,
    developer_id: str,
    day: date,
    customer_id: str,
    model: str,
    *,
    requests: int = 1,
    tokens: tuple[int, int, int, int] = (100, 10, 50, 5),
    cost: str = "0.001",
    billable: str = "0.0011",
) -> None:
    sums = (requests, *tokens, Decimal(cost), Decimal(billable))
    add = """requests = t.requests + EXCLUDED.requests,
             input_tokens = t.input_tokens + EXCLUDED.input_tokens,
             cached_input_tokens = t.cached_input_tokens + EXCLUDED.cached_input_tokens,
             output_tokens = t.output_tokens + EXCLUDED.output_tokens,
             reasoning_tokens = t.reasoning_tokens + EXCLUDED.reasoning_tokens,
             cost_usd = t.cost_usd + EXCLUDED.cost_usd,
             billable_usd = t.billable_usd + EXCLUDED.billable_usd"""
    cols = """requests, input_tokens, cached_input_tokens, output_tokens, reasoning_tokens,
              cost_usd, billable_usd"""
    db = gateway.services.db
    await db.execute(
        f"""INSERT INTO usage_daily AS t (developer_id, day, customer_id, model, {cols})
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)""",
        developer_id, day, customer_id, model, *sums,
    )  # fmt: skip
    await db.execute(
        f"""INSERT INTO usage_daily_model AS t (developer_id, day, model, {cols})
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
            ON CONFLICT (developer_id, day, model) DO UPDATE SET {add}""",
        developer_id, day, model, *sums,
    )  # fmt: skip
    await db.execute(
        f"""INSERT INTO usage_daily_customer AS t (developer_id, customer_id, day, {cols})
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
            ON CONFLICT (developer_id, customer_id, day) DO UPDATE SET {add}""",
        developer_id, customer_id, day, *sums,
    )  # fmt: skip


@pytest.fixture
async def dev(gateway: RunningGateway) -> DevApi:
    return await new_dev(gateway)


@pytest.fixture
async def seeded(gateway: RunningGateway, dev: DevApi) -> dict[str, Any]:
    """Two customers and unattributed usage over three days and two models, plus another
    developer's usage with the same customer id shape."""
    a = await dev.customer(external_id="a")
    b = await dev.customer(external_id="b")
    rows = [
        (D1, a["id"], "openai/gpt-4o-mini", 2, (200, 20, 100, 0), "0.000123456789", "0.000136"),
        (D1, a["id"], "anthropic/claude", 1, (10, 0, 5, 1), "0.0000015", "0.000002"),
        (D2, a["id"], "openai/gpt-4o-mini", 3, (300, 0, 90, 0), "0.5", "0.55"),
        (D2, b["id"], "openai/gpt-4o-mini", 1, (1, 1, 1, 1), "1", "1.1"),
        (D3, b["id"], "anthropic/claude", 4, (40, 4, 4, 4), "2", "2.2"),
        (D3, "", "openai/gpt-4o-mini", 5, (5, 5, 5, 5), "0.25", "0.275"),
    ]
    for day, customer, model, requests, tokens, cost, billable in rows:
        await add_usage(
            gateway, dev.id, day, customer, model, requests=requests, tokens=tokens, cost=cost,
            billable=billable,
        )  # fmt: skip
    other = await new_dev(gateway, "other")
    await add_usage(gateway, other.id, D2, a["id"], "openai/gpt-4o-mini", billable="9")
    await add_usage(gateway, other.id, D2, "", "openai/gpt-4o-mini", billable="9")
    return {"a": a, "b": b, "other": other}


RANGE = {"from": "2026-03-01", "to": "2026-04-30"}


async def test_customer_report(dev: DevApi, seeded: dict[str, Any]) -> None:
    a = seeded["a"]
    report = await dev.ok("GET", f"/v1/customers/{a['id']}/usage", params=RANGE)
    assert report == {
        "object": "customer.usage",
        "customer_id": a["id"],
        "from": "2026-03-01",
        "to": "2026-04-30",
        "total_billable_usd": "0.550138",
        "data": [
            {
                "date": "2026-03-30", "model": "anthropic/claude", "requests": 1,
                "input_tokens": 10, "cached_input_tokens": 0, "output_tokens": 5,
                "reasoning_tokens": 1, "cost_usd": "0.000002", "billable_amount_usd": "0.000002",
            },
            {
                "date": "2026-03-30", "model": "openai/gpt-4o-mini", "requests": 2,
                "input_tokens": 200, "cached_input_tokens": 20, "output_tokens": 100,
                "reasoning_tokens": 0, "cost_usd": "0.000123", "billable_amount_usd": "0.000136",
            },
            {
                "date": "2026-03-31", "model": "openai/gpt-4o-mini", "requests": 3,
                "input_tokens": 300, "cached_input_tokens": 0, "output_tokens": 90,
                "reasoning_tokens": 0, "cost_usd": "0.500000", "billable_amount_usd": "0.550000",
            },
        ],
    }  # fmt: skip
    # By external id, and a narrower range (inclusive on both ends).
    one_day = await dev.ok(
        "GET", "/v1/customers/a/usage", params={"from": "2026-03-31", "to": "2026-03-31"}
    )
    assert [(r["date"], r["requests"]) for r in one_day["data"]] == [("2026-03-31", 3)]
    assert one_day["total_billable_usd"] == "0.550000"
    none = await dev.ok("GET", "/v1/customers/a/usage", params={"from": "2026-04-01"})
    assert none["data"] == []
    assert none["total_billable_usd"] == "0.000000"


async def test_developer_report_breakdown(dev: DevApi, seeded: dict[str, Any]) -> None:
    a, b = seeded["a"]["id"], seeded["b"]["id"]
    report = await dev.ok("GET", "/v1/usage", params=RANGE)
    assert report["object"] == "developer.usage"
    assert report["group_by"] is None
    assert (report["from"], report["to"]) == ("2026-03-01", "2026-04-30")
    assert report["total_billable_usd"] == "4.125138"
    expected = sorted(
        [
            ("2026-03-30", "openai/gpt-4o-mini", a), ("2026-03-30", "anthropic/claude", a),
            ("2026-03-31", "openai/gpt-4o-mini", a), ("2026-03-31", "openai/gpt-4o-mini", b),
            ("2026-04-01", "anthropic/claude", b), ("2026-04-01", "openai/gpt-4o-mini", None),
        ],
        key=lambda t: (t[0], t[1], t[2] or ""),
    )  # fmt: skip
    assert [(r["date"], r["model"], r["customer_id"]) for r in report["data"]] == expected
    assert set(report["data"][0]) == {
        "date", "model", "customer_id", "requests", "input_tokens", "cached_input_tokens",
        "output_tokens", "reasoning_tokens", "cost_usd", "billable_amount_usd",
    }  # fmt: skip


async def test_developer_report_grouped(dev: DevApi, seeded: dict[str, Any]) -> None:
    a, b = seeded["a"]["id"], seeded["b"]["id"]
    by_customer = await dev.ok("GET", "/v1/usage", params={**RANGE, "group_by": "customer"})
    assert by_customer["group_by"] == "customer"
    assert by_customer["total_billable_usd"] == "4.125138"
    rows = {r["customer_id"]: r for r in by_customer["data"]}
    assert [r["customer_id"] for r in by_customer["data"]] == [None, *sorted([a, b])]
    assert rows[a] == {
        "customer_id": a, "requests": 6, "input_tokens": 510, "cached_input_tokens": 20,
        "output_tokens": 195, "reasoning_tokens": 1, "cost_usd": "0.500125",
        "billable_amount_usd": "0.550138",
    }  # fmt: skip
    assert rows[b]["billable_amount_usd"] == "3.300000"
    assert rows[None]["requests"] == 5

    by_model = await dev.ok("GET", "/v1/usage", params={**RANGE, "group_by": "model"})
    assert [(r["model"], r["requests"], r["billable_amount_usd"]) for r in by_model["data"]] == [
        ("anthropic/claude", 5, "2.200002"),
        ("openai/gpt-4o-mini", 11, "1.925136"),
    ]
    assert "customer_id" not in by_model["data"][0]
    assert "date" not in by_model["data"][0]

    by_day = await dev.ok("GET", "/v1/usage", params={**RANGE, "group_by": "day"})
    assert [(r["date"], r["requests"], r["billable_amount_usd"]) for r in by_day["data"]] == [
        ("2026-03-30", 3, "0.000138"),
        ("2026-03-31", 4, "1.650000"),
        ("2026-04-01", 9, "2.475000"),
    ]
    assert set(by_day["data"][0]) == {
        "date", "requests", "input_tokens", "cached_input_tokens", "output_tokens",
        "reasoning_tokens", "cost_usd", "billable_amount_usd",
    }  # fmt: skip

    march = await dev.ok(
        "GET", "/v1/usage", params={"from": "2026-03-31", "to": "2026-03-31", "group_by": "day"}
    )
    assert [r["date"] for r in march["data"]] == ["2026-03-31"]
    assert march["total_billable_usd"] == "1.650000"


async def test_developers_see_only_their_own_usage(
    gateway: RunningGateway, dev: DevApi, seeded: dict[str, Any]
) -> None:
    other: DevApi = seeded["other"]
    report = await other.ok("GET", "/v1/usage", params={**RANGE, "group_by": "customer"})
    assert report["total_billable_usd"] == "18.000000"
    assert len(report["data"]) == 2
    # The first developer's customer is not the other's, even with usage under its id.
    r = await other("GET", f"/v1/customers/{seeded['a']['id']}/usage", params=RANGE)
    assert_error(r, 404, "not_found")


async def test_deleted_customers_usage(dev: DevApi, seeded: dict[str, Any]) -> None:
    a = seeded["a"]["id"]
    await dev.ok("DELETE", f"/v1/customers/{a}")
    assert_error(await dev("GET", f"/v1/customers/{a}/usage", params=RANGE), 404, "not_found")
    # The developer's own report keeps it: that money was billed.
    report = await dev.ok("GET", "/v1/usage", params={**RANGE, "group_by": "customer"})
    assert a in [r["customer_id"] for r in report["data"]]
    assert report["total_billable_usd"] == "4.125138"


async def test_default_range_is_this_month(gateway: RunningGateway, dev: DevApi) -> None:
    today = datetime.now(UTC).date()
    first = today.replace(day=1)
    c = await dev.customer(external_id="now")
    await add_usage(gateway, dev.id, today, c["id"], "m", billable="1")
    await add_usage(gateway, dev.id, first - timedelta(days=1), c["id"], "m", billable="2")
    for path in ("/v1/usage", "/v1/customers/now/usage"):
        report = await dev.ok("GET", path)
        assert (report["from"], report["to"]) == (first.isoformat(), today.isoformat())
        assert report["total_billable_usd"] == "1.000000"
    # to alone: from is the first day of to's month.
    last_month = first - timedelta(days=1)
    report = await dev.ok("GET", "/v1/usage", params={"to": last_month.isoformat()})
    assert report["from"] == last_month.replace(day=1).isoformat()
    assert report["total_billable_usd"] == "2.000000"


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"from": "2026-13-01"}, "from"),
        ({"from": "2026-02-30"}, "from"),
        ({"from": "20260101"}, "from"),
        ({"from": "2026-1-1"}, "from"),
        ({"to": "yesterday"}, "to"),
        ({"to": "2026-01-01T00:00:00"}, "to"),
        ({"from": "2026-03-02", "to": "2026-03-01"}, "from"),
        ({"from": "2024-01-01", "to": "2025-01-01"}, "to"),  # 367 days
        ({"group_by": "week", **RANGE}, "group_by"),
        ({"group_by": "", **RANGE}, "group_by"),
        ({"limit": "0", **RANGE}, "limit"),
        ({"limit": "10001", **RANGE}, "limit"),
        ({"limit": "ten", **RANGE}, "limit"),
        ({"after": "not a cursor", **RANGE}, "after"),
        ({"after": "WyJ4Il0", **RANGE}, "after"),  # a by-customer cursor, for the breakdown
        ({"group_by": "customer", "limit": "-1", **RANGE}, "limit"),
        ({"group_by": "customer", "after": "e30", **RANGE}, "after"),  # {}
    ],
)
async def test_bad_report_parameters(dev: DevApi, params: dict[str, str], param: str) -> None:
    assert_error(await dev("GET", "/v1/usage", params=params), 400, "invalid_request", param)
    if not {"group_by", "limit", "after"} & set(params):
        c = await dev.customer()
        r = await dev("GET", f"/v1/customers/{c['id']}/usage", params=params)
        assert_error(r, 400, "invalid_request", param)


async def test_a_leap_year_fits(dev: DevApi) -> None:
    report = await dev.ok("GET", "/v1/usage", params={"from": "2024-01-01", "to": "2024-12-31"})
    assert report["data"] == []


async def test_usage_needs_a_developer_key(gateway: RunningGateway) -> None:
    assert_error(await gateway.http.get("/v1/usage"), 401, "invalid_api_key")


async def pages(dev: DevApi, params: dict[str, str]) -> list[dict[str, Any]]:
    """Every page of a paged report, following next_after."""
    out: list[dict[str, Any]] = []
    while True:
        page = await dev.ok("GET", "/v1/usage", params=params)
        out.append(page)
        if not page["has_more"]:
            assert page["next_after"] is None
            return out
        params = {**params, "after": page["next_after"]}


@pytest.mark.parametrize("group_by", [None, "customer"])
async def test_paged_reports_list_every_row_once(
    dev: DevApi, seeded: dict[str, Any], group_by: str | None
) -> None:
    params = {**RANGE, **({"group_by": group_by} if group_by else {})}
    whole = await dev.ok("GET", "/v1/usage", params=params)
    assert (whole["has_more"], whole["next_after"]) == (False, None)
    for limit in (1, 2, 5):
        got = await pages(dev, {**params, "limit": str(limit)})
        assert all(len(p["data"]) <= limit for p in got)
        assert [r for p in got for r in p["data"]] == whole["data"]
        # The total is over the whole range on every page.
        assert {p["total_billable_usd"] for p in got} == {"4.125138"}
        assert got[0]["has_more"] is (len(whole["data"]) > limit)
    # A page exactly as long as what is left has nothing more.
    exact = await dev.ok("GET", "/v1/usage", params={**params, "limit": str(len(whole["data"]))})
    assert (exact["has_more"], exact["next_after"]) == (False, None)


async def test_unpaged_reports_have_no_cursor(dev: DevApi, seeded: dict[str, Any]) -> None:
    report = await dev.ok("GET", "/v1/usage", params={**RANGE, "group_by": "model", "limit": "1"})
    assert len(report["data"]) == 2
    assert "has_more" not in report
    assert "next_after" not in report


async def test_rollups_agree_with_usage_daily_after_billed_calls(
    gateway: RunningGateway, dev: DevApi
) -> None:
    a = await dev.customer(external_id="a")
    await dev.ok("POST", f"/v1/customers/{a['id']}/wallet/topup", json={"amount_usd": "10"})
    calls = [
        ("fc:openai/gpt-4o-mini", {"FC-Customer": a["id"]}, (120, 30)),
        ("fc:openai/gpt-4o-mini", {"FC-Customer": a["id"]}, (7, 3)),
        ("fc:openai/gpt-4o", {"FC-Customer": a["id"]}, (50, 10)),
        ("fc:openai/gpt-4o-mini", {}, (11, 2)),
        ("fc:openai/gpt-4o", {"FC-Customer": "newcomer"}, (9, 9)),
    ]
    for model, headers, (prompt_tokens, completion_tokens) in calls:
        directive = {
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
        }
        body = {
            "model": model,
            "messages": [{"role": "user", "content": f"hi #sim{json.dumps(directive)}"}],
        }
        r = await dev("POST", "/v1/chat/completions", json=body, headers=headers)
        assert r.status_code == 200, r.text
    db = gateway.services.db
    sums = """sum(requests)::bigint, sum(input_tokens)::bigint,
              sum(cached_input_tokens)::bigint, sum(output_tokens)::bigint,
              sum(reasoning_tokens)::bigint, sum(cost_usd), sum(billable_usd)"""

    async def grouped(table: str, keys: str) -> set[tuple[Any, ...]]:
        rows = await db.fetch(
            f"SELECT {keys}, {sums} FROM {table} WHERE developer_id = $1 GROUP BY {keys}", dev.id
        )
        return {tuple(r) for r in rows}

    by_model = await grouped("usage_daily", "day, model")
    assert len(by_model) == 2
    assert sum(r[2] for r in by_model) == len(calls)
    assert await grouped("usage_daily_model", "day, model") == by_model
    by_customer = await grouped("usage_daily", "day, customer_id")
    assert len(by_customer) == 3
    assert await grouped("usage_daily_customer", "day, customer_id") == by_customer
    # And the events themselves agree with the aggregate.
    billed = await db.fetchval(
        "SELECT sum(billable_usd) FROM usage_event WHERE developer_id = $1", dev.id
    )
    report = await dev.ok("GET", "/v1/usage", params={"group_by": "customer"})
    assert Decimal(report["total_billable_usd"]) == billed > 0
    assert sum(Decimal(r["billable_amount_usd"]) for r in report["data"]) == billed
