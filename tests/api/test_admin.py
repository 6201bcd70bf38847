"""Admin API: developers and their keys; revocation takes effect within a second."""

from __future__ import annotations

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
