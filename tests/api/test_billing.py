"""Every call attributed, priced, held and settled: customers, budgets, wallets, markup,
through the openai SDK (``extra_headers``, ``user``) and plain HTTP, against real PostgreSQL."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import trio

from ringside.catalog import load_catalog
from ringside.money import charge
from tests.gateway import RunningGateway, open_gateway
from tests.simulator.server import RunningSimulator

CATALOG = load_catalog()
MODEL = "fc:openai/gpt-4o-mini"
DEAR = "fc:openai/gpt-4o"


def prompt(text: str, prompt_tokens: int, completion_tokens: int, **more: Any) -> str:
    directive = {"usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}}
    directive.update(more)
    return f"{text} #sim{json.dumps(directive)}"


def cost(ref: str, prompt_tokens: int, completion_tokens: int) -> Decimal:
    info = CATALOG.by_ref(ref)
    assert info is not None
    return info.cost(input=prompt_tokens, cached_input=0, output=completion_tokens, reasoning=0)


def chat(content: str, **more: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **more}


async def post_chat(
    gw: RunningGateway, key: str, body: dict[str, Any], **headers: str
) -> httpx.Response:
    return await gw.http.post(
        "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}", **headers}
    )


async def new_customer(gw: RunningGateway, key: str, **fields: Any) -> dict[str, Any]:
    r = await gw.http.post("/v1/customers", json=fields, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    return dict(r.json())


async def topup(gw: RunningGateway, key: str, customer: str, amount: str) -> None:
    r = await gw.http.post(
        f"/v1/customers/{customer}/wallet/topup",
        json={"amount_usd": amount},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert r.status_code == 200, r.text


async def ledger_matches_balance(gw: RunningGateway) -> None:
    rows = await gw.services.db.fetch(
        """SELECT w.id, w.balance_usd, w.held_usd, COALESCE(sum(t.amount_usd), 0) AS total
             FROM wallet AS w LEFT JOIN wallet_transaction AS t ON t.wallet_id = w.id
            GROUP BY w.id"""
    )
    for row in rows:
        assert row["balance_usd"] == row["total"], dict(row)
        assert row["held_usd"] == 0, dict(row)
    assert await gw.services.db.fetchval("SELECT count(*) FROM billing_hold") == 0


async def test_calls_are_attributed_to_customers_by_header_or_user(
    gateway: RunningGateway,
) -> None:
    key = await gateway.new_key()
    client = gateway.openai(key)
    known = await new_customer(gateway, key, external_id="acct-7", name="Seven")
    by_header = await client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}],
        extra_headers={"FC-Customer": known["id"]}, user="ignored-when-header",
    )  # fmt: skip
    by_user = await client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], user="acct-7"
    )
    unknown = await client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}],
        extra_headers={"FC-Customer": "cus_42"},
    )  # fmt: skip
    db = gateway.services.db
    first = await gateway.usage_event(by_header.headers["x-request-id"])
    second = await gateway.usage_event(by_user.headers["x-request-id"])
    third = await gateway.usage_event(unknown.headers["x-request-id"])
    assert first["customer_id"] == second["customer_id"] == known["id"]
    stub = await db.fetchrow("SELECT * FROM customer WHERE id = $1", third["customer_id"])
    assert stub["external_id"] == "cus_42"
    assert stub["stub"] is True
    # The stub is a customer like any other: found by its external id.
    r = await gateway.http.get("/v1/customers/cus_42", headers={"Authorization": f"Bearer {key}"})
    assert r.json()["id"] == stub["id"]


async def test_fifty_first_calls_for_an_unknown_customer_create_it_once(
    gateway: RunningGateway,
) -> None:
    key = await gateway.new_key()
    statuses: list[int] = []

    async def one() -> None:
        r = await post_chat(gateway, key, chat("hi"), **{"FC-Customer": "newcomer"})
        statuses.append(r.status_code)

    async with trio.open_nursery() as nursery:
        for _ in range(50):
            nursery.start_soon(one)
    assert statuses == [200] * 50
    rows = await gateway.services.db.fetch("SELECT id FROM customer WHERE external_id = 'newcomer'")
    assert len(rows) == 1
    events = await gateway.services.db.fetchval(
        "SELECT count(*) FROM usage_event WHERE customer_id = $1", rows[0]["id"]
    )
    assert events == 50


async def test_billable_is_cost_times_markup_exactly(gateway: RunningGateway) -> None:
    dev = await gateway.new_developer(tier="developer")
    key = dev["api_key"]["key"]
    r = await post_chat(gateway, key, chat(prompt("a", 1234, 567)), **{"FC-Customer": "c1"})
    event = await gateway.usage_event(r.headers["x-request-id"])
    exact = cost(MODEL, 1234, 567)
    assert event["cost_usd"] == exact
    assert event["billable_usd"] == charge(exact * Decimal("1.10"))

    pro = await gateway.new_developer(name="pro", tier="pro")
    r = await post_chat(gateway, pro["api_key"]["key"], chat(prompt("a", 1234, 567)))
    event = await gateway.usage_event(r.headers["x-request-id"])
    assert event["billable_usd"] == charge(exact * Decimal("1.06"))

    # The operator overrides a developer's markup and rate; the next call uses them.
    r = await gateway.admin(
        "PATCH", f"/developers/{dev['id']}",
        json={"markup_percent": "2.5", "rate_multiplier": "1.5"},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    await trio.sleep(0.6)  # the key cache TTL of other processes; this one forgets at once
    r = await post_chat(gateway, key, chat(prompt("a", 1234, 567)))
    event = await gateway.usage_event(r.headers["x-request-id"])
    assert event["billable_usd"] == charge(exact * Decimal("1.025") * Decimal("1.5"))


async def test_model_multipliers_and_decimal_prices_from_configuration(
    database_url: str, redis_url: str, simulator: RunningSimulator, tmp_path: Path
) -> None:
    config = tmp_path / "ringside.toml"
    config.write_text(
        '[pricing.markup_percent]\ndeveloper = 12.5\n\n'
        '[pricing.model_multipliers]\n"fc:openai/gpt-4o-mini" = 1.1234567\n'
    )  # fmt: skip
    catalog = tmp_path / "catalog.json"
    catalog.write_text(
        '{"models": [{"provider": "openai", "model": "gpt-4o-mini", "family": "gpt-mini",'
        ' "version": "4", "released": "2024-07-18", "context_window": 128000,'
        ' "max_output_tokens": 16384, "pricing": {"input": 0.1234567, "output": 0.7654321},'
        ' "capabilities": ["chat", "streaming"]}]}'
    )
    env = {"RINGSIDE_CONFIG": str(config), "RINGSIDE_CATALOG": str(catalog)}
    async with open_gateway(database_url, redis_url, simulator, tmp_path, env) as gw:
        key = await gw.new_key()
        r = await post_chat(gw, key, chat(prompt("a", 1000, 1000)))
        event = await gw.usage_event(r.headers["x-request-id"])
    exact = (Decimal("0.1234567") * 1000 + Decimal("0.7654321") * 1000) / 1_000_000
    assert event["cost_usd"] == exact
    assert event["billable_usd"] == charge(exact * Decimal("1.125") * Decimal("1.1234567"))


async def test_wallet_is_debited_and_reported_in_headers(gateway: RunningGateway) -> None:
    key = await gateway.new_key()
    client = gateway.openai(key)
    customer = await new_customer(gateway, key, external_id="w1")
    await topup(gateway, key, "w1", "1.000000")
    raw = await client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": prompt("a", 1000, 1000)}],
        extra_headers={"FC-Customer": "w1"},
    )  # fmt: skip
    billed = charge(cost(MODEL, 1000, 1000) * Decimal("1.1"))
    assert raw.headers["x-ringside-wallet-deducted"] == str(billed)
    assert raw.headers["x-ringside-wallet-balance"] == str(Decimal("1.000000") - billed)
    r = await gateway.http.get(
        f"/v1/customers/{customer['id']}/wallet", headers={"Authorization": f"Bearer {key}"}
    )
    wallet = r.json()
    assert wallet["balance_usd"] == str(Decimal("1.000000") - billed)
    debit = wallet["transactions"]["data"][0]
    assert debit["type"] == "debit"
    assert debit["amount_usd"] == str(-billed)
    assert debit["request_id"] == raw.headers["x-request-id"]
    await ledger_matches_balance(gateway)


async def test_an_empty_wallet_refuses_calls_before_the_provider(gateway: RunningGateway) -> None:
    key = await gateway.new_key()
    client = gateway.openai(key)
    await new_customer(gateway, key, external_id="poor", wallet_low_threshold_usd="0.5")
    await topup(gateway, key, "poor", "0.001")
    await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": prompt("a", 10000, 10000)}],
        extra_headers={"FC-Customer": "poor"},
    )  # fmt: skip
    before = len(gateway.sim.chats())
    with pytest.raises(openai.APIStatusError) as info:
        await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "again"}],
            extra_headers={"FC-Customer": "poor"},
        )  # fmt: skip
    assert info.value.status_code == 402
    body = info.value.body
    assert isinstance(body, dict)
    assert body["code"] == "customer_wallet_empty"
    assert len(gateway.sim.chats()) == before
    # The balance went below zero by the last call's overshoot, and below the low threshold
    # once: one wallet.low event.
    events = await gateway.services.db.fetch("SELECT type, data FROM webhook_event")
    assert [e["type"] for e in events] == ["wallet.low"]
    await ledger_matches_balance(gateway)


async def test_budget_refuses_with_402_and_writes_one_outbox_event(
    gateway: RunningGateway,
) -> None:
    key = await gateway.new_key()
    budget = charge(cost(MODEL, 1000, 1000) * Decimal("1.1")) * 2
    await new_customer(gateway, key, external_id="b1", monthly_budget_usd=str(budget))
    body = chat(prompt("a", 1000, 1000), max_tokens=1000)
    assert (await post_chat(gateway, key, body, **{"FC-Customer": "b1"})).status_code == 200
    assert (await post_chat(gateway, key, body, **{"FC-Customer": "b1"})).status_code == 200
    for _ in range(2):
        r = await post_chat(gateway, key, body, **{"FC-Customer": "b1"})
        assert r.status_code == 402
        error = r.json()["error"]
        assert error["code"] == "customer_budget_exceeded"
        assert error["type"] == "insufficient_quota"
        customer_id = (await gateway.services.db.fetchval(
            "SELECT id FROM customer WHERE external_id = 'b1'"))  # fmt: skip
        assert customer_id in error["message"]
    events = await gateway.services.db.fetch("SELECT type, data FROM webhook_event")
    assert [e["type"] for e in events] == ["customer.budget_exceeded"]
    spent = await gateway.services.db.fetchval("SELECT spent_usd FROM customer_budget_month")
    assert spent == budget


async def test_fifty_concurrent_calls_never_spend_past_the_cap_plus_one_reservation(
    gateway: RunningGateway,
) -> None:
    key = await gateway.new_key()
    per_call = charge(cost(MODEL, 100, 100) * Decimal("1.1"))
    budget = per_call * 5
    await new_customer(gateway, key, external_id="tabs", monthly_budget_usd=str(budget))
    await topup(gateway, key, "tabs", str(budget))
    body = chat(prompt("a", 100, 100, delay=0.05), max_tokens=100)
    statuses: list[int] = []

    async def tab() -> None:
        statuses.append(
            (await post_chat(gateway, key, body, **{"FC-Customer": "tabs"})).status_code
        )

    async with trio.open_nursery() as nursery:
        for _ in range(50):
            nursery.start_soon(tab)
    assert set(statuses) <= {200, 402}
    assert statuses.count(200) >= 1
    db = gateway.services.db
    spent = await db.fetchval("SELECT spent_usd FROM customer_budget_month")
    worst = await db.fetchval("SELECT max(billable_usd) FROM usage_event")
    assert spent == per_call * statuses.count(200)
    assert spent <= budget + worst
    assert await db.fetchval("SELECT count(*) FROM usage_event") == statuses.count(200)
    await ledger_matches_balance(gateway)


async def test_a_refused_call_is_not_billed_and_a_cascade_bills_the_model_that_answered(
    database_url: str, redis_url: str, simulator: RunningSimulator, tmp_path: Path
) -> None:
    # No key for groq here: the cascade's first model fails over to the second.
    env = {"GROQ_API_KEY": ""}
    async with open_gateway(database_url, redis_url, simulator, tmp_path, env) as gw:
        key = await gw.new_key()
        await new_customer(gw, key, external_id="f1")
        await topup(gw, key, "f1", "1")
        r = await post_chat(gw, key, chat('x #sim{"status": 503}'), **{"FC-Customer": "f1"})
        assert r.status_code == 503
        event = await gw.usage_event(r.headers["x-request-id"])
        assert event["billable_usd"] == 0
        assert event["status"] == "upstream_error"
        cascade = {
            "model": ["fc:groq/llama-3.3-70b-versatile", DEAR],
            "messages": [{"role": "user", "content": prompt("y", 1000, 1000)}],
        }
        r = await post_chat(gw, key, cascade, **{"FC-Customer": "f1"})
        assert r.status_code == 200
        assert r.headers["x-ringside-fallback-triggered"] == "true"
        event = await gw.usage_event(r.headers["x-request-id"])
        assert event["model_resolved"] == DEAR
        assert event["billable_usd"] == charge(cost(DEAR, 1000, 1000) * Decimal("1.1"))
        debits = await gw.services.db.fetch(
            "SELECT amount_usd FROM wallet_transaction WHERE type = 'debit'"
        )
        assert [d["amount_usd"] for d in debits] == [-event["billable_usd"]]
        await ledger_matches_balance(gw)


async def test_streams_are_held_before_the_first_byte_and_billed_when_aborted(
    gateway: RunningGateway,
) -> None:
    key = await gateway.new_key()
    await new_customer(gateway, key, external_id="s1")
    await topup(gateway, key, "s1", "5")
    body = chat("one two three four five six seven eight #sim{\"chunk_delay\": 0.2}",
                stream=True)  # fmt: skip
    headers = {"Authorization": f"Bearer {key}", "FC-Customer": "s1"}
    db = gateway.services.db
    async with gateway.http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
        assert r.headers["x-ringside-wallet-balance"] == "5.000000"
        request_id = r.headers["x-request-id"]
        hold = await db.fetchrow("SELECT * FROM billing_hold WHERE request_id = $1", request_id)
        assert hold is not None  # durable before (and while) the provider streams
        assert hold["wallet_held_usd"] > 0
        seen = b""
        async for part in r.aiter_bytes():
            seen += part
            if b"three" in seen:
                break  # the client goes away mid-stream
    event = await gateway.usage_event(request_id)
    assert event["status"] == "client_aborted"
    assert 0 < event["output_tokens"] < 10
    assert event["billable_usd"] > 0
    await ledger_matches_balance(gateway)


async def test_a_prepaid_developer_is_refused_when_its_wallet_is_used_up(
    gateway: RunningGateway,
) -> None:
    dev = await gateway.new_developer()
    key = dev["api_key"]["key"]
    assert (await post_chat(gateway, key, chat("postpaid"))).status_code == 200
    r = await gateway.admin(
        "POST", f"/developers/{dev['id']}/wallet/topup", json={"amount_usd": "0.000001"}
    )
    assert r.status_code == 200, r.text
    assert (await post_chat(gateway, key, chat(prompt("a", 100, 100)))).status_code == 200
    r = await post_chat(gateway, key, chat("now empty"))
    assert r.status_code == 402
    assert r.json()["error"]["code"] == "wallet_empty"
    await ledger_matches_balance(gateway)
