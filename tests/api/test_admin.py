"""Admin API: developers and their keys; revocation takes effect within a second."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import openai
import pytest
import trio

from ringside.ids import hash_api_key
from tests.gateway import RunningGateway, open_gateway
from tests.simulator.server import RunningSimulator


async def test_create_developer_returns_a_working_key_once(gateway: RunningGateway) -> None:
    dev = await gateway.new_developer("Acme", "pro")
    assert dev["id"].startswith("dev_")
    assert dev["tier"] == "pro"
    key = dev["api_key"]["key"]
    assert key.startswith("sk_live_")
    assert len(key) > 40
    client = gateway.openai(key)
    done = await client.chat.completions.create(
        model="fc:openai/gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    assert done.choices[0].message.content == "Echo: hi"
    # The key is stored hashed, never in plain text, and listing never shows it.
    stored = await gateway.services.db.fetchrow(
        "SELECT * FROM api_key WHERE developer_id = $1", dev["id"]
    )
    assert stored["key_hash"] == hash_api_key(key)
    assert key not in str(dict(stored))
    listing = (await gateway.admin("GET", f"/developers/{dev['id']}/api_keys")).json()
    assert [k["id"] for k in listing["data"]] == [dev["api_key"]["id"]]
    assert "key" not in listing["data"][0]


async def test_add_and_revoke_keys(gateway: RunningGateway) -> None:
    dev = await gateway.new_developer()
    r = await gateway.admin("POST", f"/developers/{dev['id']}/api_keys", json={"name": "ci"})
    assert r.status_code == 201
    second = r.json()
    client = gateway.openai(second["key"])
    await client.chat.completions.create(
        model="fc:openai/gpt-4o-mini", messages=[{"role": "user", "content": "a"}]
    )

    r = await gateway.admin("DELETE", f"/developers/{dev['id']}/api_keys/{second['id']}")
    assert r.status_code == 200
    assert r.json()["revoked"] is True
    with pytest.raises(openai.AuthenticationError):
        await client.chat.completions.create(
            model="fc:openai/gpt-4o-mini", messages=[{"role": "user", "content": "a"}]
        )
    # The first key still works.
    first = gateway.openai(dev["api_key"]["key"])
    await first.chat.completions.create(
        model="fc:openai/gpt-4o-mini", messages=[{"role": "user", "content": "a"}]
    )


async def test_revocation_elsewhere_is_seen_within_a_second(gateway: RunningGateway) -> None:
    """A revocation written by another process (the CLI, another worker) reaches this one's
    key cache within its TTL."""
    dev = await gateway.new_developer()
    key = dev["api_key"]["key"]
    client = gateway.openai(key)
    await client.models.list()  # warm the cache
    await gateway.services.db.execute(
        "UPDATE api_key SET revoked_at = now() WHERE id = $1", dev["api_key"]["id"]
    )
    start = trio.current_time()
    while True:
        try:
            await client.models.list()
        except openai.AuthenticationError:
            break
        assert trio.current_time() - start < 1.0
        await trio.sleep(0.05)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/developers", {"name": ""}),
        ("POST", "/developers", {"name": "x", "tier": "gold"}),
        ("POST", "/developers", {"tier": "pro"}),
        ("POST", "/developers", ["x"]),
    ],
)
async def test_admin_bad_input(
    gateway: RunningGateway, method: str, path: str, body: object
) -> None:
    r = await gateway.admin(method, path, json=body)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_request"


async def test_admin_unknown_ids_are_404(gateway: RunningGateway) -> None:
    assert (await gateway.admin("POST", "/developers/dev_nope/api_keys")).status_code == 404
    dev = await gateway.new_developer()
    r = await gateway.admin("DELETE", f"/developers/{dev['id']}/api_keys/key_nope")
    assert r.status_code == 404
    assert r.json()["error"]["type"] == "not_found_error"


async def test_admin_auth(gateway: RunningGateway) -> None:
    r = await gateway.http.post(
        "/admin/v1/developers", json={"name": "x"}, headers={"Authorization": "Bearer wrong"}
    )
    assert r.status_code == 401
    dev_key = await gateway.new_key()
    r = await gateway.http.post(
        "/admin/v1/developers", json={"name": "x"}, headers={"Authorization": f"Bearer {dev_key}"}
    )
    assert r.status_code == 401


async def test_admin_disabled_without_admin_key(
    database_url: str, redis_url: str, simulator: RunningSimulator, data_dir: Path
) -> None:
    async with open_gateway(
        database_url, redis_url, simulator, data_dir, {"RINGSIDE_ADMIN_KEY": ""}
    ) as gw:
        r = await gw.admin("POST", "/developers", json={"name": "x"})
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "not_found"


# --- pricing overrides -------------------------------------------------------------------------
async def test_developer_json_carries_pricing(gateway: RunningGateway) -> None:
    dev = await gateway.new_developer("Acme", "pro")
    assert {"id", "object", "name", "tier", "created"} <= set(dev)
    assert dev["markup_percent"] is None
    assert dev["rate_multiplier"] == "1.000000"
    got = (await gateway.admin("GET", f"/developers/{dev['id']}")).json()
    assert got == {k: v for k, v in dev.items() if k != "api_key"}


async def test_patch_developer_pricing(gateway: RunningGateway) -> None:
    dev = await gateway.new_developer("Acme")
    key = dev["api_key"]["key"]
    auth = gateway.services.auth
    before = await auth.caller_from({"Authorization": f"Bearer {key}"})  # warms the key cache
    assert before.tier == "developer"

    r = await gateway.admin(
        "PATCH",
        f"/developers/{dev['id']}",
        content=b'{"tier": "pro", "markup_percent": "8", "rate_multiplier": 1.25}',
    )
    assert r.status_code == 200, r.text
    patched = r.json()
    assert patched["tier"] == "pro"
    assert patched["markup_percent"] == "8.000000"
    assert patched["rate_multiplier"] == "1.250000"
    assert patched["name"] == "Acme"
    row = await gateway.services.db.fetchrow("SELECT * FROM developer WHERE id = $1", dev["id"])
    assert row["markup_percent"] == Decimal(8)
    assert row["rate_multiplier"] == Decimal("1.25")
    # This process's key cache forgot the old pricing at once.
    after = await auth.caller_from({"Authorization": f"Bearer {key}"})
    assert after.tier == "pro"
    assert after.markup_percent == Decimal(8)

    r = await gateway.admin(
        "PATCH", f"/developers/{dev['id']}", json={"markup_percent": None, "name": "Acme 2"}
    )
    assert r.json()["markup_percent"] is None
    assert r.json()["rate_multiplier"] == "1.250000"
    assert r.json()["name"] == "Acme 2"
    r = await gateway.admin(
        "PATCH", f"/developers/{dev['id']}", json={"markup_percent": "0.000001"}
    )
    assert r.json()["markup_percent"] == "0.000001"
    r = await gateway.admin("PATCH", f"/developers/{dev['id']}", json={"rate_multiplier": None})
    assert r.json()["rate_multiplier"] == "1.000000"
    r = await gateway.admin("PATCH", f"/developers/{dev['id']}", json={"rate_multiplier": 0})
    assert r.json()["rate_multiplier"] == "0.000000"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tier": "gold"}, "tier"),
        ({"markup_percent": "-1"}, "markup_percent"),
        ({"markup_percent": "1.0000001"}, "markup_percent"),
        ({"markup_percent": "1000"}, "markup_percent"),
        ({"markup_percent": "ten"}, "markup_percent"),
        ({"markup_percent": True}, "markup_percent"),
        ({"markup_percent": "NaN"}, "markup_percent"),
        ({"markup_percent": "123456789012345678901234567890.1234567"}, "markup_percent"),
        ({"rate_multiplier": "-0.5"}, "rate_multiplier"),
        ({"rate_multiplier": "1e7"}, "rate_multiplier"),
        ({"rate_multiplier": [1]}, "rate_multiplier"),
        ({"name": ""}, "name"),
        ({"markup": "8"}, "markup"),
        (["x"], None),
    ],
)
async def test_patch_developer_bad_input(
    gateway: RunningGateway, body: object, param: str | None
) -> None:
    dev = await gateway.new_developer()
    r = await gateway.admin("PATCH", f"/developers/{dev['id']}", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_request"
    assert r.json()["error"]["param"] == param
    got = (await gateway.admin("GET", f"/developers/{dev['id']}")).json()
    assert (got["tier"], got["markup_percent"], got["rate_multiplier"]) == (
        "developer", None, "1.000000",
    )  # fmt: skip


# --- developer wallets -------------------------------------------------------------------------
async def test_developer_wallet(gateway: RunningGateway) -> None:
    dev = await gateway.new_developer()
    path = f"/developers/{dev['id']}/wallet"
    empty = (await gateway.admin("GET", path)).json()
    assert empty == {
        "id": None,
        "object": "developer.wallet",
        "developer_id": dev["id"],
        "balance_usd": "0.000000",
        "held_usd": "0.000000",
        "transactions": {
            "object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False,
        },
    }  # fmt: skip
    r = await gateway.admin("POST", f"{path}/adjust", json={"amount_usd": "1", "description": "x"})
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "no_wallet"

    r = await gateway.admin(
        "POST", f"{path}/topup", json={"amount_usd": "100.00", "description": "invoice 7"}
    )
    assert r.status_code == 200, r.text
    topup = r.json()
    assert (topup["type"], topup["amount_usd"], topup["balance_after_usd"]) == (
        "topup", "100.000000", "100.000000",
    )  # fmt: skip
    assert topup["request_id"] == r.headers["x-request-id"]
    wallet = await gateway.services.db.fetchrow(
        "SELECT * FROM wallet WHERE developer_id = $1", dev["id"]
    )
    assert wallet["customer_id"] is None
    assert wallet["id"].startswith("wal_")

    r = await gateway.admin(
        "POST", f"{path}/adjust", json={"amount_usd": "-0.5", "description": "credit note"}
    )
    assert r.json()["balance_after_usd"] == "99.500000"
    got = (await gateway.admin("GET", path)).json()
    assert got["id"] == wallet["id"]
    assert got["balance_usd"] == "99.500000"
    assert [t["type"] for t in got["transactions"]["data"]] == ["adjust", "topup"]
    # A customer wallet of the same developer is another wallet.
    key = dev["api_key"]["key"]
    headers = {"Authorization": f"Bearer {key}"}
    c = (await gateway.http.post("/v1/customers", json={}, headers=headers)).json()
    await gateway.http.post(
        f"/v1/customers/{c['id']}/wallet/topup", json={"amount_usd": "1"}, headers=headers
    )
    assert (await gateway.admin("GET", path)).json()["balance_usd"] == "99.500000"


async def test_a_developer_is_prepaid_from_its_first_topup(gateway: RunningGateway) -> None:
    """ringside_reserve (what the chat path calls) refuses once the wallet is empty."""
    dev = await gateway.new_developer()
    db = gateway.services.db

    async def reserve(request_id: str) -> str:
        row = await db.fetchrow(
            """SELECT * FROM ringside_reserve($1, 'proc_test', $2, $3, NULL, 'm', 'm', 'openai',
                                              'm', false, 0.01, 0.01)""",
            request_id, dev["id"], dev["api_key"]["id"],
        )  # fmt: skip
        return str(row["outcome"])

    assert await reserve("req_postpaid") == "ok"
    path = f"/developers/{dev['id']}/wallet"
    await gateway.admin("POST", f"{path}/topup", json={"amount_usd": "1"})
    await gateway.admin("POST", f"{path}/adjust", json={"amount_usd": "-1", "description": "x"})
    assert await reserve("req_prepaid") == "wallet_empty"


async def test_developer_wallet_errors(gateway: RunningGateway) -> None:
    for method, path, body in [
        ("GET", "/developers/dev_nope/wallet", None),
        ("POST", "/developers/dev_nope/wallet/topup", {"amount_usd": "1"}),
        ("POST", "/developers/dev_nope/wallet/adjust", {"amount_usd": "1", "description": "x"}),
        ("PATCH", "/developers/dev_nope", {"tier": "pro"}),
    ]:
        r = await gateway.admin(method, path, json=body)
        assert r.status_code == 404, (method, path, r.text)
    dev = await gateway.new_developer()
    r = await gateway.admin("POST", f"/developers/{dev['id']}/wallet/topup", json={})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "amount_usd"
    # Developer keys never reach the admin API.
    r = await gateway.http.post(
        f"/admin/v1/developers/{dev['id']}/wallet/topup",
        json={"amount_usd": "1"},
        headers={"Authorization": f"Bearer {dev['api_key']['key']}"},
    )
    assert r.status_code == 401


async def test_developer_wallet_refund(gateway: RunningGateway) -> None:
    dev = await gateway.new_developer()
    path = f"/developers/{dev['id']}/wallet"
    await gateway.admin("POST", f"{path}/topup", json={"amount_usd": "2"})
    db = gateway.services.db
    row = await db.fetchrow(
        """SELECT * FROM ringside_reserve('req_dev_call', 'proc_test', $1, $2, NULL, 'm', 'm',
                                          'openai', 'm', false, 0.5, 0.5)""",
        dev["id"], dev["api_key"]["id"],
    )  # fmt: skip
    assert row["outcome"] == "ok"
    await db.execute(
        """SELECT ringside_settle('req_dev_call', 'ok', 200, 'upstream', 'm', 'openai', 'm',
                                  1, 0, 1, 0, 0.5, 0.5, 1)"""
    )
    r = await gateway.admin("POST", f"{path}/refund", json={"request_id": "req_dev_call"})
    assert r.status_code == 200, r.text
    assert (r.json()["amount_usd"], r.json()["balance_after_usd"]) == ("0.500000", "2.000000")
    r = await gateway.admin("POST", f"{path}/refund", json={"request_id": "req_dev_call"})
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "refund_exceeds_debit"
    got = (await gateway.admin("GET", path)).json()
    assert [t["type"] for t in got["transactions"]["data"]] == ["refund", "debit", "topup"]
