"""Customer wallets: top-ups, adjusts, refunds, the append-only ledger and its pagination,
exact money, wallet.low events; checked against the real ``wallet`` and ``wallet_transaction``
rows."""

from __future__ import annotations

import json
import random
import secrets
from decimal import Decimal
from typing import Any

import pytest
import trio

from tests.api.devapi import DevApi, assert_error, new_dev
from tests.gateway import RunningGateway

TX_KEYS = {
    "id", "object", "type", "amount_usd", "balance_after_usd", "request_id", "description",
    "created",
}  # fmt: skip


@pytest.fixture
async def dev(gateway: RunningGateway) -> DevApi:
    return await new_dev(gateway)


@pytest.fixture
async def customer(dev: DevApi) -> dict[str, Any]:
    return await dev.customer(external_id="wallet-owner")


def wallet_path(customer: dict[str, Any], what: str = "") -> str:
    return f"/v1/customers/{customer['id']}/wallet{what}"


async def ledger_is_consistent(gateway: RunningGateway) -> None:
    """The balance is the sum of the ledger, and each row's balance_after the running sum."""
    db = gateway.services.db
    for wallet in await db.fetch("SELECT id, balance_usd FROM wallet"):
        rows = await db.fetch(
            "SELECT amount_usd, balance_after_usd FROM wallet_transaction"
            " WHERE wallet_id = $1 ORDER BY seq",
            wallet["id"],
        )
        running = Decimal(0)
        for row in rows:
            running += row["amount_usd"]
            assert row["balance_after_usd"] == running
        assert wallet["balance_usd"] == running


async def bill(gateway: RunningGateway, dev: DevApi, customer_ref: str, billable: str) -> str:
    """A call reserved and settled by the SQL the chat path uses; its request id."""
    request_id = f"req_{secrets.token_hex(6)}"
    db = gateway.services.db
    row = await db.fetchrow(
        """SELECT * FROM ringside_reserve($1, 'proc_test', $2, $3, $4, 'm', 'm', 'openai', 'm',
                                          false, $5, $5)""",
        request_id, dev.id, dev.key_id, customer_ref, Decimal(billable),
    )  # fmt: skip
    assert row["outcome"] == "ok", dict(row)
    settled = await db.fetchrow(
        """SELECT * FROM ringside_settle($1, 'ok', 200, 'upstream', 'm', 'openai', 'm',
                                         10, 0, 5, 0, $2, $2, 12)""",
        request_id, Decimal(billable),
    )  # fmt: skip
    assert settled["settled"] is True
    return request_id


async def test_a_customer_without_a_wallet(dev: DevApi, customer: dict[str, Any]) -> None:
    w = await dev.ok("GET", wallet_path(customer))
    assert w == {
        "id": None,
        "object": "customer.wallet",
        "customer_id": customer["id"],
        "balance_usd": "0.000000",
        "held_usd": "0.000000",
        "transactions": {
            "object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False,
        },
    }  # fmt: skip
    # By external id too.
    assert await dev.ok("GET", "/v1/customers/wallet-owner/wallet") == w


async def test_topup_opens_the_wallet(
    gateway: RunningGateway, dev: DevApi, customer: dict[str, Any]
) -> None:
    r = await dev("POST", wallet_path(customer, "/topup"), json={"amount_usd": "10.00"})
    assert r.status_code == 200, r.text
    tx = r.json()
    assert set(tx) == TX_KEYS
    assert tx["id"].startswith("wtx_")
    assert tx["object"] == "wallet.transaction"
    assert tx["type"] == "topup"
    assert tx["amount_usd"] == "10.000000"
    assert tx["balance_after_usd"] == "10.000000"
    assert tx["request_id"] == r.headers["x-request-id"]
    assert tx["description"] is None

    wallet = await gateway.services.db.fetchrow(
        "SELECT * FROM wallet WHERE customer_id = $1", customer["id"]
    )
    assert wallet["id"].startswith("wal_")
    assert wallet["developer_id"] == dev.id
    assert wallet["balance_usd"] == Decimal(10)

    second = await dev.ok(
        "POST", wallet_path(customer, "/topup"), json={"amount_usd": 5, "description": "promo"}
    )
    assert second["balance_after_usd"] == "15.000000"
    assert second["description"] == "promo"
    w = await dev.ok("GET", wallet_path(customer))
    assert w["id"] == wallet["id"]
    assert w["balance_usd"] == "15.000000"
    assert [t["id"] for t in w["transactions"]["data"]] == [second["id"], tx["id"]]
    assert w["transactions"]["data"][0] == second
    assert await gateway.services.db.fetchval("SELECT count(*) FROM wallet") == 1
    await ledger_is_consistent(gateway)


async def test_money_is_exact(
    gateway: RunningGateway, dev: DevApi, customer: dict[str, Any]
) -> None:
    for _ in range(10):
        await dev.ok("POST", wallet_path(customer, "/topup"), json={"amount_usd": "0.000001"})
    assert (await dev.ok("GET", wallet_path(customer)))["balance_usd"] == "0.000010"

    # A JSON number (not a string) is read exactly, never through a float.
    tx = await dev.ok("POST", wallet_path(customer, "/topup"), content=b'{"amount_usd": 10.123456}')
    assert tx["amount_usd"] == "10.123456"
    assert tx["balance_after_usd"] == "10.123466"
    tx = await dev.ok("POST", wallet_path(customer, "/topup"), content=b'{"amount_usd": 0.1000000}')
    assert tx["balance_after_usd"] == "10.223466"
    balance = await gateway.services.db.fetchval(
        "SELECT balance_usd FROM wallet WHERE customer_id = $1", customer["id"]
    )
    assert balance == Decimal("10.223466")

    for body in (b'{"amount_usd": "0.0000001"}', b'{"amount_usd": 0.0000001}'):
        r = await dev("POST", wallet_path(customer, "/topup"), content=body)
        assert_error(r, 400, "invalid_request", "amount_usd")
    await ledger_is_consistent(gateway)


async def test_the_ledger_sums_to_the_balance(
    gateway: RunningGateway, dev: DevApi, customer: dict[str, Any]
) -> None:
    rng = random.Random(7)
    expected = Decimal(0)
    await dev.ok("POST", wallet_path(customer, "/topup"), json={"amount_usd": "1"})
    expected += 1
    for i in range(40):
        amount = Decimal(rng.randint(1, 5_000_000)) / 1_000_000
        if rng.random() < 0.5:
            await dev.ok("POST", wallet_path(customer, "/topup"), json={"amount_usd": str(amount)})
            expected += amount
        else:
            amount = -amount if rng.random() < 0.7 else amount
            body = {"amount_usd": str(amount), "description": f"correction {i}"}
            await dev.ok("POST", wallet_path(customer, "/adjust"), json=body)
            expected += amount
    w = await dev.ok("GET", wallet_path(customer), params={"limit": 1})
    assert Decimal(w["balance_usd"]) == expected
    assert w["transactions"]["data"][0]["balance_after_usd"] == w["balance_usd"]
    await ledger_is_consistent(gateway)


async def test_parallel_topups_all_land(
    gateway: RunningGateway, dev: DevApi, customer: dict[str, Any]
) -> None:
    results: list[dict[str, Any]] = []

    async def one() -> None:
        results.append(
            await dev.ok("POST", wallet_path(customer, "/topup"), json={"amount_usd": "0.01"})
        )

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(one)
    assert (await dev.ok("GET", wallet_path(customer)))["balance_usd"] == "0.200000"
    assert sorted(r["balance_after_usd"] for r in results) == [
        f"{Decimal(i) / 100:.6f}" for i in range(1, 21)
    ]
    assert await gateway.services.db.fetchval("SELECT count(*) FROM wallet") == 1
    await ledger_is_consistent(gateway)


async def test_transactions_are_paginated_newest_first(
    dev: DevApi, customer: dict[str, Any]
) -> None:
    ids = [
        (await dev.ok("POST", wallet_path(customer, "/topup"), json={"amount_usd": str(i)}))["id"]
        for i in range(1, 6)
    ]
    page = (await dev.ok("GET", wallet_path(customer), params={"limit": 2}))["transactions"]
    assert [t["id"] for t in page["data"]] == [ids[4], ids[3]]
    assert page["has_more"] is True
    assert page["first_id"] == ids[4]
    assert page["last_id"] == ids[3]
    page = (await dev.ok("GET", wallet_path(customer), params={"after": ids[3]}))["transactions"]
    assert [t["id"] for t in page["data"]] == [ids[2], ids[1], ids[0]]
    assert page["has_more"] is False
    page = await dev.ok("GET", wallet_path(customer), params={"before": ids[1], "limit": 2})
    assert [t["id"] for t in page["transactions"]["data"]] == [ids[3], ids[2]]
    page = await dev.ok("GET", wallet_path(customer), params={"order": "asc", "limit": 2})
    assert [t["id"] for t in page["transactions"]["data"]] == ids[:2]

    other = await dev.customer(external_id="someone-else")
    await dev.ok("POST", wallet_path(other, "/topup"), json={"amount_usd": "1"})
    # A transaction of another wallet is no cursor here.
    r = await dev("GET", wallet_path(other), params={"after": ids[0]})
    assert_error(r, 400, "invalid_request", "after")
    r = await dev("GET", wallet_path(customer), params={"limit": 500})
    assert_error(r, 400, "invalid_request", "limit")


async def test_adjust(gateway: RunningGateway, dev: DevApi, customer: dict[str, Any]) -> None:
    body = {"amount_usd": "1", "description": "x"}
    r = await dev("POST", wallet_path(customer, "/adjust"), json=body)
    assert_error(r, 409, "no_wallet")
    await dev.ok("POST", wallet_path(customer, "/topup"), json={"amount_usd": "3"})
    r = await dev(
        "POST", wallet_path(customer, "/adjust"), json={"amount_usd": "-4.5", "description": "fix"}
    )
    assert r.status_code == 200, r.text
    tx = r.json()
    assert tx["type"] == "adjust"
    assert tx["amount_usd"] == "-4.500000"
    assert tx["balance_after_usd"] == "-1.500000"
    assert tx["description"] == "fix"
    assert tx["request_id"] == r.headers["x-request-id"]
    await ledger_is_consistent(gateway)


@pytest.mark.parametrize(
    ("what", "body", "param"),
    [
        ("/topup", {}, "amount_usd"),
        ("/topup", {"amount_usd": "0"}, "amount_usd"),
        ("/topup", {"amount_usd": "-1"}, "amount_usd"),
        ("/topup", {"amount_usd": "ten"}, "amount_usd"),
        ("/topup", {"amount_usd": None}, "amount_usd"),
        ("/topup", {"amount_usd": "NaN"}, "amount_usd"),
        ("/topup", {"amount_usd": "Infinity"}, "amount_usd"),
        ("/topup", {"amount_usd": "1e13"}, "amount_usd"),
        ("/topup", {"amount_usd": "123456789012345678901234567890.1234567"}, "amount_usd"),
        ("/topup", {"amount_usd": [1]}, "amount_usd"),
        ("/topup", {"amount_usd": "1", "description": "x" * 501}, "description"),
        ("/topup", {"amount_usd": "1", "description": "a\nb"}, "description"),
        ("/topup", {"amount_usd": "1", "memo": "x"}, "memo"),
        ("/topup", ["x"], None),
        ("/adjust", {"amount_usd": "1"}, "description"),
        ("/adjust", {"amount_usd": "0", "description": "x"}, "amount_usd"),
        ("/adjust", {"description": "x"}, "amount_usd"),
        ("/refund", {}, "request_id"),
        ("/refund", {"request_id": ""}, "request_id"),
        ("/refund", {"request_id": "req_x", "amount_usd": "0"}, "amount_usd"),
        ("/refund", {"request_id": "req_x", "amount_usd": "-1"}, "amount_usd"),
    ],
)
async def test_bad_wallet_bodies(
    gateway: RunningGateway,
    dev: DevApi,
    customer: dict[str, Any],
    what: str,
    body: Any,
    param: str | None,
) -> None:
    await dev.ok("POST", wallet_path(customer, "/topup"), json={"amount_usd": "1"})
    r = await dev("POST", wallet_path(customer, what), json=body)
    assert_error(r, 400, "invalid_request", param)
    assert await gateway.services.db.fetchval("SELECT count(*) FROM wallet_transaction") == 1


async def test_a_balance_cannot_overflow(dev: DevApi, customer: dict[str, Any]) -> None:
    big = "999999999999.999999"
    await dev.ok("POST", wallet_path(customer, "/topup"), json={"amount_usd": big})
    r = await dev("POST", wallet_path(customer, "/topup"), json={"amount_usd": "0.000001"})
    assert_error(r, 400, "invalid_request", "amount_usd")


async def test_refunds_never_exceed_the_debit(
    gateway: RunningGateway, dev: DevApi, customer: dict[str, Any]
) -> None:
    await dev.ok("POST", wallet_path(customer, "/topup"), json={"amount_usd": "5"})
    request_id = await bill(gateway, dev, customer["id"], "1.25")
    w = await dev.ok("GET", wallet_path(customer))
    debit = w["transactions"]["data"][0]
    assert (debit["type"], debit["amount_usd"], debit["request_id"]) == (
        "debit", "-1.250000", request_id,
    )  # fmt: skip
    assert w["balance_usd"] == "3.750000"

    part = await dev.ok(
        "POST",
        wallet_path(customer, "/refund"),
        json={"request_id": request_id, "amount_usd": "0.25", "description": "bad answer"},
    )
    assert (part["type"], part["amount_usd"], part["balance_after_usd"]) == (
        "refund", "0.250000", "4.000000",
    )  # fmt: skip
    assert part["request_id"] == request_id
    body = {"request_id": request_id, "amount_usd": "1.01"}
    r = await dev("POST", wallet_path(customer, "/refund"), json=body)
    assert_error(r, 409, "refund_exceeds_debit", "amount_usd")
    assert "1.000000" in r.json()["error"]["message"]

    rest = await dev.ok("POST", wallet_path(customer, "/refund"), json={"request_id": request_id})
    assert rest["amount_usd"] == "1.000000"
    assert rest["balance_after_usd"] == "5.000000"
    r = await dev("POST", wallet_path(customer, "/refund"), json={"request_id": request_id})
    assert_error(r, 409, "refund_exceeds_debit", "request_id")

    r = await dev("POST", wallet_path(customer, "/refund"), json={"request_id": "req_unknown"})
    assert_error(r, 400, "invalid_request", "request_id")
    # A debit of another customer's wallet cannot be refunded here.
    other = await dev.customer(external_id="other")
    await dev.ok("POST", wallet_path(other, "/topup"), json={"amount_usd": "5"})
    theirs = await bill(gateway, dev, other["id"], "1")
    r = await dev("POST", wallet_path(customer, "/refund"), json={"request_id": theirs})
    assert_error(r, 400, "invalid_request", "request_id")
    await ledger_is_consistent(gateway)
    types = await gateway.services.db.fetch(
        """SELECT t.type, t.amount_usd FROM wallet_transaction AS t JOIN wallet AS w
               ON w.id = t.wallet_id WHERE w.customer_id = $1 ORDER BY t.seq""",
        customer["id"],
    )
    assert [(t["type"], str(t["amount_usd"])) for t in types] == [
        ("topup", "5.000000"), ("debit", "-1.250000"), ("refund", "0.250000"),
        ("refund", "1.000000"),
    ]  # fmt: skip


async def test_parallel_refunds_of_one_call_never_exceed_it(
    gateway: RunningGateway, dev: DevApi, customer: dict[str, Any]
) -> None:
    await dev.ok("POST", wallet_path(customer, "/topup"), json={"amount_usd": "5"})
    request_id = await bill(gateway, dev, customer["id"], "1")
    statuses: list[int] = []

    async def one() -> None:
        body = {"request_id": request_id, "amount_usd": "0.3"}
        statuses.append(
            (await dev("POST", wallet_path(customer, "/refund"), json=body)).status_code
        )

    async with trio.open_nursery() as nursery:
        for _ in range(8):
            nursery.start_soon(one)
    assert sorted(statuses) == [200] * 3 + [409] * 5
    assert (await dev.ok("GET", wallet_path(customer)))["balance_usd"] == "4.900000"
    await ledger_is_consistent(gateway)


async def low_events(gateway: RunningGateway) -> list[dict[str, Any]]:
    rows = await gateway.services.db.fetch(
        "SELECT developer_id, data::text AS data FROM webhook_event"
        " WHERE type = 'wallet.low' ORDER BY seq"
    )
    return [{"developer_id": r["developer_id"], **json.loads(r["data"])} for r in rows]


async def test_wallet_low_is_written_once_per_crossing(
    gateway: RunningGateway, dev: DevApi
) -> None:
    c = await dev.customer(external_id="lowish", wallet_low_threshold_usd="5")

    async def notified() -> bool:
        return bool(
            await gateway.services.db.fetchval(
                "SELECT low_notified FROM wallet WHERE customer_id = $1", c["id"]
            )
        )

    await dev.ok("POST", wallet_path(c, "/topup"), json={"amount_usd": "10"})
    r = await dev("POST", wallet_path(c, "/adjust"), json={"amount_usd": "-6", "description": "x"})
    assert r.status_code == 200
    events = await low_events(gateway)
    assert events == [
        {
            "developer_id": dev.id,
            "customer_id": c["id"],
            "balance_usd": "4.000000",
            "wallet_low_threshold_usd": "5.000000",
            "request_id": r.headers["x-request-id"],
        }
    ]
    assert await notified()
    # Still below: no second event.
    await dev.ok("POST", wallet_path(c, "/adjust"), json={"amount_usd": "-1", "description": "x"})
    await dev.ok("POST", wallet_path(c, "/topup"), json={"amount_usd": "1"})
    assert len(await low_events(gateway)) == 1
    # Back at the threshold: re-armed; the next crossing notifies again.
    await dev.ok("POST", wallet_path(c, "/topup"), json={"amount_usd": "1"})
    assert not await notified()
    await dev.ok("POST", wallet_path(c, "/adjust"), json={"amount_usd": "-0.5", "description": "x"})
    assert [e["balance_usd"] for e in await low_events(gateway)] == ["4.000000", "4.500000"]
    # A debit below the threshold (ringside_settle) does not notify twice either.
    await bill(gateway, dev, c["id"], "0.1")
    assert len(await low_events(gateway)) == 2


async def test_no_threshold_no_event(gateway: RunningGateway, dev: DevApi) -> None:
    c = await dev.customer()
    await dev.ok("POST", wallet_path(c, "/topup"), json={"amount_usd": "1"})
    await dev.ok("POST", wallet_path(c, "/adjust"), json={"amount_usd": "-1", "description": "x"})
    assert await low_events(gateway) == []


async def test_a_deleted_customers_wallet_is_gone_from_the_api(
    dev: DevApi, customer: dict[str, Any]
) -> None:
    await dev.ok("POST", wallet_path(customer, "/topup"), json={"amount_usd": "1"})
    await dev.ok("DELETE", f"/v1/customers/{customer['id']}")
    assert_error(await dev("GET", wallet_path(customer)), 404, "not_found")
    r = await dev("POST", wallet_path(customer, "/topup"), json={"amount_usd": "1"})
    assert_error(r, 404, "not_found")
