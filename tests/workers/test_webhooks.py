"""The webhooks worker in process, against a real local receiver: signed deliveries, retries
with the same event id, events produced by real calls, giving up, delivery-time SSRF refusal,
timeouts, two workers sharing the queue, and the supervisor's restarts."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trio

from ringside.money import charge
from ringside.services import Services
from ringside.store.webhooks import AttemptResult
from tests.api.devapi import DevApi, new_dev
from tests.api.test_billing import chat, cost, new_customer, post_chat, prompt, topup
from tests.gateway import RunningGateway, open_gateway
from tests.simulator.server import RunningSimulator
from tests.workers.receiver import Receiver, open_receiver, verify
from workers import supervise
from workers.webhooks import _record_results, serve_webhooks

MODEL = "fc:openai/gpt-4o-mini"
FAST = {
    "RINGSIDE_WEBHOOKS_ALLOW_PRIVATE": "1",
    "RINGSIDE_WEBHOOK_POLL_SECONDS": "0.05",
    "RINGSIDE_WEBHOOK_BACKOFF_BASE_SECONDS": "0.05",
    "RINGSIDE_WEBHOOK_BACKOFF_MAX_SECONDS": "0.2",
    "RINGSIDE_WEBHOOK_TIMEOUT_SECONDS": "2",
}


@pytest.fixture
async def gateway(
    database_url: str, redis_url: str, simulator: RunningSimulator, data_dir: Path
) -> AsyncIterator[RunningGateway]:
    async with open_gateway(database_url, redis_url, simulator, data_dir, FAST) as gw:
        yield gw


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with open_receiver() as r:
        yield r


@pytest.fixture
async def dev(gateway: RunningGateway) -> DevApi:
    return await new_dev(gateway)


def tuned(svc: Services, **settings: Any) -> Services:
    return dataclasses.replace(svc, settings=dataclasses.replace(svc.settings, **settings))


async def endpoint(dev: DevApi, receiver: Receiver, events: list[str]) -> dict[str, Any]:
    we = await dev.ok("POST", "/v1/webhooks", json={"url": receiver.url, "events": events})
    receiver.secrets.append(we["secret"])
    return we


async def deliveries(dev: DevApi, we: dict[str, Any]) -> list[dict[str, Any]]:
    page = await dev.ok("GET", f"/v1/webhooks/{we['id']}/deliveries", params={"limit": 100})
    return list(page["data"])


async def settled(dev: DevApi, we: dict[str, Any], within: float = 10.0) -> list[dict[str, Any]]:
    with trio.fail_after(within):
        while True:
            data = await deliveries(dev, we)
            if data and all(d["status"] in ("succeeded", "failed") for d in data):
                return data
            await trio.sleep(0.05)


async def test_a_ping_is_signed_retried_and_delivered_with_one_event_id(
    gateway: RunningGateway, dev: DevApi, receiver: Receiver, nursery: trio.Nursery
) -> None:
    receiver.fail_first = 2
    we = await endpoint(dev, receiver, ["*"])
    await nursery.start(serve_webhooks, gateway.services)
    queued = await dev.ok("POST", f"/v1/webhooks/{we['id']}/test")
    await receiver.wait_for(1)
    attempts = receiver.received
    assert [r.headers["x-answer"] for r in attempts] == ["500", "500", "200"]
    assert {r.event_id for r in attempts} == {queued["event_id"]}
    for r in attempts:
        assert r.verified
        assert r.headers["content-type"] == "application/json"
        assert r.headers["host"] == receiver.url.split("/")[2]
        assert r.event == {
            "id": queued["event_id"],
            "type": "webhook.ping",
            "created": r.event["created"],
            "data": {"webhook_endpoint_id": we["id"]},
        }
    # A wrong secret or a stale timestamp does not verify.
    r = attempts[-1]
    assert not verify("whsec_wrong", r.headers["x-fc-signature"], r.body)
    t = int(r.headers["x-fc-signature"].split(",")[0][2:])
    assert not verify(we["secret"], r.headers["x-fc-signature"], r.body, now=t + 301)

    [d] = await settled(dev, we)
    assert d["status"] == "succeeded"
    assert d["attempt_count"] == 3
    assert d["response_status_code"] == 200
    assert d["next_attempt_at"] is None
    assert [a["response_status_code"] for a in d["attempts"]] == [500, 500, 200]
    assert [a["error"] for a in d["attempts"]] == ["HTTP 500", "HTTP 500", None]
    assert all(a["latency_ms"] is not None and a["finished"] for a in d["attempts"])

    # Redelivery sends the same event again.
    await dev.ok("POST", f"/v1/webhooks/{we['id']}/deliveries/{d['id']}/redeliver")
    await receiver.wait_until(lambda: len(receiver.received) == 4)
    assert receiver.received[-1].event_id == queued["event_id"]


async def test_a_rolled_secret_signs_the_next_attempts(
    gateway: RunningGateway, dev: DevApi, receiver: Receiver, nursery: trio.Nursery
) -> None:
    we = await endpoint(dev, receiver, ["*"])
    rolled = await dev.ok("POST", f"/v1/webhooks/{we['id']}/roll_secret")
    receiver.secrets[:] = [rolled["secret"]]
    await nursery.start(serve_webhooks, gateway.services)
    await dev.ok("POST", f"/v1/webhooks/{we['id']}/test")
    await receiver.wait_for(1)
    assert receiver.received[0].verified


async def test_budget_exceeded_and_wallet_low_from_real_calls_are_delivered(
    gateway: RunningGateway, dev: DevApi, receiver: Receiver, nursery: trio.Nursery
) -> None:
    receiver.fail_first = 1
    money = await endpoint(dev, receiver, ["customer.budget_exceeded", "wallet.low"])
    await nursery.start(serve_webhooks, gateway.services)
    budget = charge(cost(MODEL, 1000, 1000) * Decimal("1.1")) * 2
    await new_customer(gateway, dev.key, external_id="b1", monthly_budget_usd=str(budget))
    body = chat(prompt("a", 1000, 1000), max_tokens=1000)
    statuses = [(await post_chat(gateway, dev.key, body, **{"FC-Customer": "b1"})).status_code
                for _ in range(3)]  # fmt: skip
    assert statuses == [200, 200, 402]

    await new_customer(gateway, dev.key, external_id="poor", wallet_low_threshold_usd="0.5")
    await topup(gateway, dev.key, "poor", "0.001")
    big = chat(prompt("b", 10000, 10000), max_tokens=10000)
    assert (await post_chat(gateway, dev.key, big, **{"FC-Customer": "poor"})).status_code == 200

    await receiver.wait_for(2)
    events = {r.event["type"]: r.event for r in receiver.received if r.verified}
    assert set(events) == {"customer.budget_exceeded", "wallet.low"}
    assert events["customer.budget_exceeded"]["data"]["monthly_budget_usd"] == str(budget)
    assert events["wallet.low"]["data"]["wallet_low_threshold_usd"] == "0.500000"
    outbox = await gateway.services.db.fetch("SELECT id FROM webhook_event ORDER BY seq")
    assert {e["id"] for e in events.values()} == {e["id"] for e in outbox}
    for got in receiver.events().values():
        assert [r.headers["x-answer"] for r in got] == ["500", "200"]
    assert {d["status"] for d in await settled(dev, money)} == {"succeeded"}


async def test_a_delivery_gives_up_after_its_retry_window(
    gateway: RunningGateway, dev: DevApi, receiver: Receiver, nursery: trio.Nursery
) -> None:
    receiver.status = 503
    we = await endpoint(dev, receiver, ["*"])
    await nursery.start(serve_webhooks, tuned(gateway.services, webhook_retry_for_s=0.5))
    await dev.ok("POST", f"/v1/webhooks/{we['id']}/test")
    [d] = await settled(dev, we)
    assert d["status"] == "failed"
    assert d["attempt_count"] >= 3
    assert d["response_status_code"] == 503
    assert len(d["attempts"]) == d["attempt_count"] == len(receiver.received)


@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]", "localhost"])
async def test_private_targets_are_refused_again_at_delivery_time(
    gateway: RunningGateway, dev: DevApi, nursery: trio.Nursery, host: str
) -> None:
    # Registered while private targets were allowed; the worker no longer allows them.
    url = f"http://{host}:9/hooks"
    we = await dev.ok("POST", "/v1/webhooks", json={"url": url, "events": ["*"]})
    strict = tuned(gateway.services, webhooks_allow_private=False, webhook_retry_for_s=0.3)
    await nursery.start(serve_webhooks, strict)
    await dev.ok("POST", f"/v1/webhooks/{we['id']}/test")
    [d] = await settled(dev, we)
    assert d["status"] == "failed"
    assert d["response_status_code"] is None
    assert all("non-public address" in a["error"] for a in d["attempts"]), d


async def test_a_slow_receiver_times_out_and_is_retried(
    gateway: RunningGateway, dev: DevApi, receiver: Receiver, nursery: trio.Nursery
) -> None:
    receiver.delay_s = 1.0
    we = await endpoint(dev, receiver, ["*"])
    svc = tuned(gateway.services, webhook_timeout_s=0.3, webhook_retry_for_s=0.6)
    await nursery.start(serve_webhooks, svc)
    await dev.ok("POST", f"/v1/webhooks/{we['id']}/test")
    [d] = await settled(dev, we)
    assert d["status"] == "failed"
    assert d["attempts"][0]["error"] == "timeout after 0.3 s"
    assert d["attempts"][0]["latency_ms"] >= 300


async def test_two_workers_share_the_queue_and_send_each_event_once(
    gateway: RunningGateway, dev: DevApi, receiver: Receiver, nursery: trio.Nursery
) -> None:
    we = await endpoint(dev, receiver, ["wallet.low"])
    for _ in range(2):
        await nursery.start(serve_webhooks, tuned(gateway.services, webhook_concurrency=4))
    await gateway.services.db.execute(
        """INSERT INTO webhook_event (id, developer_id, type, data)
           SELECT 'evt_bulk' || i, $1, 'wallet.low', jsonb_build_object('i', i)
             FROM generate_series(1, 200) AS i""",
        dev.id,
    )
    await receiver.wait_for(200, within=20)
    assert len(receiver.received) == 200
    assert all(len(got) == 1 for got in receiver.events().values())
    workers = await gateway.services.db.fetch(
        "SELECT DISTINCT worker FROM webhook_attempt WHERE delivery_id IN"
        " (SELECT id FROM webhook_delivery WHERE endpoint_id = $1)",
        we["id"],
    )
    assert len(workers) == 2


async def test_a_crashed_worker_is_logged_and_restarted(
    gateway: RunningGateway, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    runs: list[int] = []
    third = trio.Event()

    async def flaky(
        svc: Services, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        runs.append(1)
        if len(runs) == 3:
            third.set()
        if len(runs) < 3:
            raise RuntimeError("boom")
        await trio.sleep_forever()

    await nursery.start(
        lambda **kw: supervise("flaky", flaky, gateway.services, first_delay_s=0.01, **kw)
    )
    with trio.fail_after(5):
        await third.wait()
    crashes = [r for r in caplog.records if "worker flaky crashed" in r.getMessage()]
    assert len(crashes) == 2
    assert crashes[0].exc_info is not None


async def test_the_recorder_ends_cleanly_when_the_last_sender_leaves_mid_batch(
    gateway: RunningGateway,
) -> None:
    """Results still queued when every sender has closed its end are written as one batch,
    and the recorder returns (it once raised EndOfChannel while draining that batch, which
    took the worker down as it stopped)."""
    send, receive = trio.open_memory_channel[AttemptResult](math.inf)
    async with send:
        for i in range(3):  # deliveries that do not exist: the statement touches no row
            send.send_nowait(AttemptResult(f"whd_gone{i}", 1, "succeeded", 0.0, 200, 5, None))
    with trio.fail_after(10):
        await _record_results(gateway.services, receive)
