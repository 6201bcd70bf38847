"""Usage reports from the ``usage_daily`` aggregate: ``GET /v1/customers/{id}/usage`` and
``GET /v1/usage`` (grouped by customer, model or day). The aggregate is written here directly,
as ringside_settle keeps it."""

from __future__ import annotations

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
    await gateway.services.db.execute(
        """INSERT INTO usage_daily (developer_id, day, customer_id, model, requests,
               input_tokens, cached_input_tokens, output_tokens, reasoning_tokens, cost_usd,
               billable_usd)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)""",
        developer_id, day, customer_id, model, requests, *tokens, Decimal(cost),
        Decimal(billable),
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
    ],
)
async def test_bad_report_parameters(dev: DevApi, params: dict[str, str], param: str) -> None:
    assert_error(await dev("GET", "/v1/usage", params=params), 400, "invalid_request", param)
    if "group_by" not in params:
        c = await dev.customer()
        r = await dev("GET", f"/v1/customers/{c['id']}/usage", params=params)
        assert_error(r, 400, "invalid_request", param)


async def test_a_leap_year_fits(dev: DevApi) -> None:
    report = await dev.ok("GET", "/v1/usage", params={"from": "2024-01-01", "to": "2024-12-31"})
    assert report["data"] == []


async def test_usage_needs_a_developer_key(gateway: RunningGateway) -> None:
    assert_error(await gateway.http.get("/v1/usage"), 401, "invalid_api_key")
