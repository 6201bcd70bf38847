"""Property: whatever interleaving of top-ups, calls (answered, refused by the provider,
streamed, abandoned mid-stream), refunds and adjustments hits a wallet, every wallet's balance
equals the sum of its ledger, every settled call has exactly one usage event and at most one
debit (equal to its billable amount), nothing stays held, and budget spend equals billed
usage. Runs against a real gateway process and PostgreSQL.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringside.store.bridge import open_storage
from tests.gateway import ADMIN_KEY
from tests.live import LiveGateway, open_live_gateway

_customers = itertools.count()


@dataclass(frozen=True)
class Target:
    live: LiveGateway
    key: str


@pytest.fixture(scope="module")
def target(
    server_url: str, template_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    with open_live_gateway(server_url, redis_url, tmp_path_factory.mktemp("ledger")) as live:
        r = httpx.post(
            f"{live.url}/admin/v1/developers",
            json={"name": "ledger"},
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        )
        yield Target(live, r.json()["api_key"]["key"])


_amount = st.decimals(min_value=Decimal("0.000001"), max_value=Decimal("0.01"), places=6)
_tokens = st.integers(min_value=0, max_value=5000)
_op = st.one_of(
    st.tuples(st.just("topup"), _amount),
    st.tuples(st.just("adjust"), _amount, st.booleans()),
    st.tuples(st.just("refund"), st.integers(0, 20), st.booleans()),
    st.tuples(
        st.just("call"),
        st.sampled_from(["ok", "failed", "stream", "aborted"]),
        _tokens,
        _tokens,
    ),
)
# Operations in groups that run concurrently; groups run one after another.
_plan = st.lists(st.lists(_op, min_size=1, max_size=6), min_size=1, max_size=5)


async def _call(client: httpx.AsyncClient, customer: str, kind: str, p: int, c: int) -> None:
    directive: dict[str, Any] = {"usage": {"prompt_tokens": p, "completion_tokens": c}}
    if kind == "failed":
        directive["status"] = 503
    if kind == "aborted":
        directive["chunk_delay"] = 0.05
    text = f"one two three four five #sim{json.dumps(directive)}"
    body = {
        "model": "fc:openai/gpt-4o-mini",
        "messages": [{"role": "user", "content": text}],
        "stream": kind in ("stream", "aborted"),
    }
    headers = {"FC-Customer": customer}
    if kind != "aborted":
        await client.post("/v1/chat/completions", json=body, headers=headers)
        return
    async with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
        seen = b""
        async for part in r.aiter_bytes():
            seen += part
            if b"two" in seen:
                return  # the client leaves mid-stream


async def _run(target: Target, customer: str, plan: list[list[tuple[Any, ...]]]) -> None:
    headers = {"Authorization": f"Bearer {target.key}"}
    async with httpx.AsyncClient(base_url=target.live.url, headers=headers, timeout=30) as client:
        wallet = f"/v1/customers/{customer}/wallet"
        r = await client.post("/v1/customers", json={"external_id": customer})
        assert r.status_code == 200, r.text
        r = await client.post(wallet + "/topup", json={"amount_usd": "0.005"})
        assert r.status_code == 200, r.text

        async def one(op: tuple[Any, ...]) -> None:
            if op[0] == "topup":
                r = await client.post(wallet + "/topup", json={"amount_usd": str(op[1])})
                assert r.status_code == 200, r.text
            elif op[0] == "adjust":
                amount = op[1] if op[2] else -op[1]
                body = {"amount_usd": str(amount), "description": "property test"}
                r = await client.post(wallet + "/adjust", json=body)
                assert r.status_code == 200, r.text
            elif op[0] == "refund":
                listing = (await client.get(wallet, params={"limit": 100})).json()
                debits = [t for t in listing["transactions"]["data"] if t["type"] == "debit"]
                if debits:
                    debit = debits[op[1] % len(debits)]
                    body: dict[str, Any] = {"request_id": debit["request_id"]}
                    if op[2]:
                        body["amount_usd"] = "0.000001"
                    r = await client.post(wallet + "/refund", json=body)
                    # Refunding more than the rest of a debit is refused, and changes nothing.
                    assert r.status_code in (200, 400, 409), r.text
            else:
                await _call(client, customer, op[1], op[2], op[3])

        for group in plan:
            async with trio.open_nursery() as nursery:
                for op in group:
                    nursery.start_soon(one, op)


async def _check_books(live: LiveGateway) -> None:
    async with open_storage(live.database_url, live.redis_url) as (db, _):
        with trio.fail_after(10):  # streams the client left settle as the server notices
            while True:
                if not await db.fetchval("SELECT count(*) FROM billing_hold"):
                    break
                await trio.sleep(0.05)
        bad_wallets = await db.fetch(
            """SELECT w.id, w.balance_usd, w.held_usd, COALESCE(sum(t.amount_usd), 0) AS total
                 FROM wallet AS w LEFT JOIN wallet_transaction AS t ON t.wallet_id = w.id
                GROUP BY w.id HAVING w.balance_usd <> COALESCE(sum(t.amount_usd), 0)
                    OR w.held_usd <> 0"""
        )
        assert not bad_wallets, [dict(w) for w in bad_wallets]
        bad_debits = await db.fetch(
            """SELECT t.request_id FROM wallet_transaction AS t
                 LEFT JOIN usage_event AS e ON e.request_id = t.request_id
                WHERE t.type = 'debit' AND (e.id IS NULL OR -t.amount_usd <> e.billable_usd)"""
        )
        assert not bad_debits, [dict(d) for d in bad_debits]
        unpaid = await db.fetchval(
            """SELECT count(*) FROM usage_event AS e
                WHERE e.billable_usd > 0 AND NOT EXISTS (
                    SELECT 1 FROM wallet_transaction AS t
                     WHERE t.request_id = e.request_id AND t.type = 'debit')"""
        )
        assert unpaid == 0
        refunds = await db.fetch(
            """SELECT t.request_id, sum(t.amount_usd) AS refunded,
                      (SELECT -d.amount_usd FROM wallet_transaction AS d
                        WHERE d.request_id = t.request_id AND d.type = 'debit') AS debited
                 FROM wallet_transaction AS t WHERE t.type = 'refund' GROUP BY t.request_id"""
        )
        for row in refunds:
            assert row["refunded"] <= row["debited"], dict(row)
        spent = await db.fetchval("SELECT COALESCE(sum(spent_usd), 0) FROM customer_budget_month")
        billed = await db.fetchval("SELECT COALESCE(sum(billable_usd), 0) FROM usage_event")
        assert spent == billed


@settings(
    max_examples=int(os.environ.get("RINGSIDE_LEDGER_EXAMPLES", "25")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=_plan)
def test_books_balance_under_any_interleaving(
    target: Target, plan: list[list[tuple[Any, ...]]]
) -> None:
    customer = f"prop-{next(_customers)}"
    trio.run(_run, target, customer, plan)
    trio.run(_check_books, target.live)
