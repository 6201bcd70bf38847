"""``/v1/webhooks``: CRUD with the developer's key, the secret shown only on create and roll,
isolation between developers, validation, SSRF refusals at registration, pings and
redeliveries queued as real ``webhook_delivery`` rows (no worker runs here: nothing is sent)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.devapi import DevApi, assert_error, new_dev
from tests.gateway import RunningGateway

# A public literal address: registration checks it without a lookup, and no worker runs.
PUBLIC = "https://93.184.216.34/hooks/ringside"
ENDPOINT_KEYS = {"id", "object", "url", "events", "enabled", "description", "created"}


@pytest.fixture
async def dev(gateway: RunningGateway) -> DevApi:
    return await new_dev(gateway)


async def create(dev: DevApi, **fields: Any) -> dict[str, Any]:
    body = {"url": PUBLIC, "events": ["wallet.low"], **fields}
    return await dev.ok("POST", "/v1/webhooks", json=body)


async def test_create_read_update_delete(gateway: RunningGateway, dev: DevApi) -> None:
    we = await create(dev, events=["customer.budget_exceeded", "wallet.low"], description="ops")
    assert set(we) == ENDPOINT_KEYS | {"secret"}
    assert we["id"].startswith("we_")
    assert we["object"] == "webhook_endpoint"
    assert we["secret"].startswith("whsec_")
    assert we["enabled"] is True
    assert we["events"] == ["customer.budget_exceeded", "wallet.low"]
    got = await dev.ok("GET", f"/v1/webhooks/{we['id']}")
    assert "secret" not in got
    assert got == {k: v for k, v in we.items() if k != "secret"}

    patched = await dev.ok(
        "PATCH", f"/v1/webhooks/{we['id']}", json={"enabled": False, "events": ["*"]}
    )
    assert patched["enabled"] is False
    assert patched["events"] == ["*"]
    assert patched["url"] == PUBLIC
    assert "secret" not in patched

    rolled = await dev.ok("POST", f"/v1/webhooks/{we['id']}/roll_secret")
    assert rolled["secret"].startswith("whsec_")
    assert rolled["secret"] != we["secret"]
    stored = await gateway.services.db.fetchval(
        "SELECT secret FROM webhook_endpoint WHERE id = $1", we["id"]
    )
    assert stored == rolled["secret"]

    gone = await dev.ok("DELETE", f"/v1/webhooks/{we['id']}")
    assert gone == {"id": we["id"], "object": "webhook_endpoint.deleted", "deleted": True}
    assert_error(await dev("GET", f"/v1/webhooks/{we['id']}"), 404, "not_found")
    assert_error(await dev("DELETE", f"/v1/webhooks/{we['id']}"), 404, "not_found")


async def test_every_spec_event_type_is_accepted(dev: DevApi) -> None:
    types = [
        "run.completed", "run.failed", "customer.budget_exceeded", "wallet.low",
        "vector_store.file.completed", "vector_store.file.failed",
    ]  # fmt: skip
    assert (await create(dev, events=types))["events"] == types


async def test_list_is_paginated(dev: DevApi) -> None:
    ids = [(await create(dev, description=str(i)))["id"] for i in range(5)]
    page = await dev.ok("GET", "/v1/webhooks", params={"limit": 2, "order": "asc"})
    assert page["object"] == "list"
    assert [w["id"] for w in page["data"]] == ids[:2]
    assert page["has_more"] is True
    assert all("secret" not in w for w in page["data"])
    rest = await dev.ok("GET", "/v1/webhooks", params={"order": "asc", "after": page["last_id"]})
    assert [w["id"] for w in rest["data"]] == ids[2:]
    assert rest["has_more"] is False
    newest = await dev.ok("GET", "/v1/webhooks")
    assert [w["id"] for w in newest["data"]] == ids[::-1]


async def test_another_developers_endpoint_is_a_404(gateway: RunningGateway, dev: DevApi) -> None:
    we = await create(dev)
    other = await new_dev(gateway, "other")
    for method, path in [
        ("GET", ""), ("PATCH", ""), ("DELETE", ""), ("POST", "/roll_secret"), ("POST", "/test"),
        ("GET", "/deliveries"),
    ]:  # fmt: skip
        kw = {"json": {"enabled": False}} if method == "PATCH" else {}
        assert_error(await other(method, f"/v1/webhooks/{we['id']}{path}", **kw), 404, "not_found")
    assert (await other.ok("GET", "/v1/webhooks"))["data"] == []
    assert (await dev.ok("GET", f"/v1/webhooks/{we['id']}"))["enabled"] is True


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"events": ["wallet.low"]}, "url"),
        ({"url": PUBLIC}, "events"),
        ({"url": PUBLIC, "events": []}, "events"),
        ({"url": PUBLIC, "events": ["wallet.high"]}, "events"),
        ({"url": PUBLIC, "events": "wallet.low"}, "events"),
        ({"url": PUBLIC, "events": ["webhook.ping"]}, "events"),
        ({"url": "ftp://example.com/x", "events": ["*"]}, "url"),
        ({"url": "not a url", "events": ["*"]}, "url"),
        ({"url": PUBLIC, "events": ["*"], "enabled": "yes"}, "enabled"),
        ({"url": PUBLIC, "events": ["*"], "secret": "whsec_mine"}, "secret"),
    ],
)
async def test_invalid_bodies_are_400(dev: DevApi, body: dict[str, Any], param: str) -> None:
    assert_error(await dev("POST", "/v1/webhooks", json=body), 400, "invalid_request", param)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "https://[::1]/hook",
        "http://localhost:9999/hook",
        "http://10.0.0.7/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::ffff:127.0.0.1]/hook",
    ],
)
async def test_private_targets_are_refused_at_registration(dev: DevApi, url: str) -> None:
    r = await dev("POST", "/v1/webhooks", json={"url": url, "events": ["*"]})
    assert_error(r, 400, "webhook_url_not_allowed", "url")
    we = await create(dev)
    r = await dev("PATCH", f"/v1/webhooks/{we['id']}", json={"url": url})
    assert_error(r, 400, "webhook_url_not_allowed", "url")
    assert (await dev.ok("GET", "/v1/webhooks"))["data"][0]["url"] == PUBLIC


async def test_test_queues_a_ping_and_deliveries_list_it(
    gateway: RunningGateway, dev: DevApi
) -> None:
    we = await create(dev)
    queued = await dev.ok("POST", f"/v1/webhooks/{we['id']}/test")
    assert queued["type"] == "webhook.ping"
    assert queued["event_id"].startswith("evt_")
    page = await dev.ok("GET", f"/v1/webhooks/{we['id']}/deliveries")
    assert page["object"] == "list"
    [d] = page["data"]
    assert d["id"] == queued["delivery_id"]
    assert d["event_id"] == queued["event_id"]
    assert d["event_type"] == "webhook.ping"
    assert d["status"] == "pending"
    assert d["attempt_count"] == 0
    assert isinstance(d["next_attempt_at"], int)
    assert d["attempts"] == []
    # A ping goes to its endpoint only, even when another one takes every event.
    other = await create(dev, events=["*"])
    await dev.ok("POST", f"/v1/webhooks/{we['id']}/test")
    assert (await dev.ok("GET", f"/v1/webhooks/{other['id']}/deliveries"))["data"] == []


async def test_outbox_events_fan_out_to_subscribed_enabled_endpoints(
    gateway: RunningGateway, dev: DevApi
) -> None:
    low = await create(dev, events=["wallet.low"])
    everything = await create(dev, events=["*"])
    budget = await create(dev, events=["customer.budget_exceeded"])
    disabled = await create(dev, events=["*"], enabled=False)
    other = await new_dev(gateway, "other")
    foreign = await create(other, events=["*"])
    await gateway.services.db.execute(
        "INSERT INTO webhook_event (id, developer_id, type, data)"
        " VALUES ('evt_test1', $1, 'wallet.low', '{\"balance_usd\": \"0.1\"}')",
        dev.id,
    )
    rows = await gateway.services.db.fetch(
        "SELECT endpoint_id FROM webhook_delivery WHERE event_id = 'evt_test1'"
    )
    assert {r["endpoint_id"] for r in rows} == {low["id"], everything["id"]}
    for we in (budget, disabled, foreign):
        assert we["id"] not in {r["endpoint_id"] for r in rows}


async def test_redeliver_requeues_the_same_event(gateway: RunningGateway, dev: DevApi) -> None:
    we = await create(dev)
    queued = await dev.ok("POST", f"/v1/webhooks/{we['id']}/test")
    path = f"/v1/webhooks/{we['id']}/deliveries/{queued['delivery_id']}/redeliver"
    await gateway.services.db.execute(
        "UPDATE webhook_delivery SET state = 'failed', finished_at = now(), attempts = 9"
        " WHERE id = $1",
        queued["delivery_id"],
    )
    d = await dev.ok("POST", path)
    assert d["status"] == "pending"
    assert d["event_id"] == queued["event_id"]
    await gateway.services.db.execute(
        "UPDATE webhook_delivery SET state = 'delivering' WHERE id = $1", queued["delivery_id"]
    )
    assert_error(await dev("POST", path), 409, "webhook_delivery_in_progress")
    missing = f"/v1/webhooks/{we['id']}/deliveries/whd_nope/redeliver"
    assert_error(await dev("POST", missing), 404, "not_found")
