"""Money across real processes: two Hypercorn workers racing one budget, and a gateway killed
with SIGKILL under load, restarted, and swept by the settlement worker."""

from __future__ import annotations

import json
import os
import signal
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from ringside.catalog import load_catalog
from ringside.money import charge
from ringside.store.bridge import open_storage
from tests.gateway import ADMIN_KEY, simulator_env
from tests.processes import BIN, ROOT, base_env, run_cli, spawn_gateway
from tests.simulator.server import RunningSimulator

MODEL = "fc:openai/gpt-4o-mini"
INFO = load_catalog().by_ref(MODEL)
assert INFO is not None


def body(text: str, **directive: Any) -> dict[str, Any]:
    directive.setdefault("usage", {"prompt_tokens": 100, "completion_tokens": 100})
    content = f"{text} #sim{json.dumps(directive)}"
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 100}


@pytest.fixture
def env(database_url: str, redis_url: str, simulator: RunningSimulator) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "RINGSIDE_ADMIN_KEY": ADMIN_KEY,
        "RINGSIDE_HEARTBEAT_SECONDS": "0.5",
        "RINGSIDE_PROCESS_DEAD_AFTER_SECONDS": "2",
        "RINGSIDE_SWEEP_INTERVAL_SECONDS": "0.5",
        **simulator_env(simulator),
    }


async def setup_customer(url: str, key: str, **fields: Any) -> None:
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}) as c:
        r = await c.post("/v1/customers", json={"external_id": "tabs", **fields})
        assert r.status_code == 200, r.text
        r = await c.post("/v1/customers/tabs/wallet/topup", json={"amount_usd": "10"})
        assert r.status_code == 200, r.text


async def check_books(database_url: str, redis_url: str) -> dict[str, Any]:
    """Every hold settled, every wallet's balance the sum of its ledger, and every debit the
    billable amount of exactly one usage event."""
    async with open_storage(database_url, redis_url) as (db, _):
        assert await db.fetchval("SELECT count(*) FROM billing_hold") == 0
        wallets = await db.fetch(
            """SELECT w.balance_usd, w.held_usd, COALESCE(sum(t.amount_usd), 0) AS total
                 FROM wallet AS w LEFT JOIN wallet_transaction AS t ON t.wallet_id = w.id
                GROUP BY w.id"""
        )
        for w in wallets:
            assert w["balance_usd"] == w["total"]
            assert w["held_usd"] == 0
        mismatched = await db.fetchval(
            """SELECT count(*) FROM usage_event AS e
                 FULL JOIN wallet_transaction AS t
                   ON t.request_id = e.request_id AND t.type = 'debit'
                WHERE e.customer_id IS NOT NULL AND e.billable_usd > 0
                  AND (t.id IS NULL OR e.id IS NULL OR -t.amount_usd <> e.billable_usd)"""
        )
        assert mismatched == 0
        events = await db.fetch("SELECT request_id, status, billable_usd FROM usage_event")
        spent = await db.fetchval("SELECT COALESCE(sum(spent_usd), 0) FROM customer_budget_month")
        assert spent == sum((e["billable_usd"] for e in events), Decimal(0))
        return {"events": {e["request_id"]: dict(e) for e in events}, "spent": spent}


async def test_two_workers_racing_one_budget_never_pass_cap_plus_one_reservation(
    env: dict[str, str], tmp_path: Path, database_url: str, redis_url: str
) -> None:
    per_call = charge(
        INFO.cost(input=100, cached_input=0, output=100, reasoning=0) * Decimal("1.1")
    )
    budget = per_call * 5
    async with spawn_gateway(env, tmp_path, workers=2) as gw:
        dev = await run_cli(env, "developers", "create", "--name", "racer")
        key = dev["api_key"]["key"]
        await setup_customer(gw.url, key, monthly_budget_usd=str(budget))
        statuses: list[int] = []
        limits = httpx.Limits(max_keepalive_connections=0)  # spread over both workers
        async with httpx.AsyncClient(base_url=gw.url, limits=limits, timeout=30) as client:

            async def tab(i: int) -> None:
                r = await client.post(
                    "/v1/chat/completions",
                    json=body(f"tab {i}", delay=0.05),
                    headers={"Authorization": f"Bearer {key}", "FC-Customer": "tabs"},
                )
                statuses.append(r.status_code)

            async with trio.open_nursery() as nursery:
                for i in range(50):
                    nursery.start_soon(tab, i)
        served = {line["pid"] for line in gw.log_lines() if line.get("status") in (200, 402)}
    assert len(served) == 2
    assert set(statuses) <= {200, 402}
    books = await check_books(database_url, redis_url)
    worst = max(e["billable_usd"] for e in books["events"].values())
    assert books["spent"] == per_call * statuses.count(200)
    assert books["spent"] <= budget + worst


async def test_sigkill_under_load_loses_no_money_and_bills_nothing_twice(
    env: dict[str, str],
    tmp_path: Path,
    database_url: str,
    redis_url: str,
    simulator: RunningSimulator,
) -> None:
    dev = await run_cli(env, "developers", "create", "--name", "crash")
    key = dev["api_key"]["key"]
    answered: list[str] = []  # request ids the client saw complete
    async with spawn_gateway(env, tmp_path) as gw:
        await setup_customer(gw.url, key)
        headers = {"Authorization": f"Bearer {key}", "FC-Customer": "tabs"}
        async with httpx.AsyncClient(base_url=gw.url, timeout=10) as client:

            async def caller(i: int) -> None:
                n = 0
                while True:
                    n += 1
                    stream = n % 2 == 0
                    payload = body(f"c{i} n{n}", delay=0.02, chunk_delay=0.02) | {"stream": stream}
                    try:
                        r = await client.post("/v1/chat/completions", json=payload, headers=headers)
                    except httpx.TransportError:
                        return  # the gateway is gone
                    if r.status_code == 200 and (not stream or r.text.endswith("[DONE]\n\n")):
                        answered.append(r.headers["x-request-id"])

            async with trio.open_nursery() as nursery:
                for i in range(8):
                    nursery.start_soon(caller, i)
                await trio.sleep(2.0)
                os.killpg(gw.process.pid, signal.SIGKILL)  # master and workers, mid-call
    assert len(answered) > 10
    seen_upstream = {
        r.headers["x-client-request-id"]
        for r in simulator.sim.chats()
        if "x-client-request-id" in r.headers
    }
    async with open_storage(database_url, redis_url) as (db, _):
        orphans = await db.fetchval("SELECT count(*) FROM billing_hold")
    assert orphans > 0, "the kill should have caught calls in flight"

    # Restart the gateway and run the settlement worker until every hold is settled.
    async with spawn_gateway(env, tmp_path):
        worker = await trio.lowlevel.open_process(
            [str(BIN / "python"), "-m", "workers"], env=base_env(env), cwd=ROOT
        )
        try:
            async with open_storage(database_url, redis_url) as (db, _):
                with trio.fail_after(20):
                    while True:
                        if not await db.fetchval("SELECT count(*) FROM billing_hold"):
                            break
                        await trio.sleep(0.2)
        finally:
            worker.kill()
            await worker.wait()

    books = await check_books(database_url, redis_url)
    events = books["events"]
    # Every call the provider answered is billed exactly once (request ids are unique), the
    # ones that finished at their real amount, the ones cut by the kill at their hold.
    assert seen_upstream <= set(events)
    assert set(answered) <= set(events)
    for request_id in answered:
        assert events[request_id]["status"] == "ok"
    interrupted = [e for e in events.values() if e["status"] == "interrupted"]
    assert len(interrupted) == orphans


async def test_clients_leaving_under_load_leave_no_hold_behind(
    env: dict[str, str], tmp_path: Path, database_url: str, redis_url: str
) -> None:
    # A load generator closing its connections mid-call (as wrk does at the end of a run): a
    # cancellation landing while the hold's statement commits must not orphan the hold.
    async with spawn_gateway(env, tmp_path) as gw:
        dev = await run_cli(env, "developers", "create", "--name", "leaver")
        headers = {"Authorization": f"Bearer {dev['api_key']['key']}"}
        payload = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}

        async def client(n: int) -> None:
            async with httpx.AsyncClient(base_url=gw.url, timeout=10) as http:
                with trio.move_on_after(1.0 + n * 0.003):
                    while True:
                        await http.post("/v1/chat/completions", json=payload, headers=headers)

        for _ in range(3):
            async with trio.open_nursery() as nursery:
                for n in range(64):
                    nursery.start_soon(client, n)
        async with open_storage(database_url, redis_url) as (db, _):
            with trio.fail_after(10):
                while True:
                    if not await db.fetchval("SELECT count(*) FROM billing_hold"):
                        break
                    await trio.sleep(0.1)
