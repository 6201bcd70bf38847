"""Client tokens: minted by the developer's backend, used by a browser through the official
openai SDK (``Authorization: Client <jwt>`` and an ``Origin``), bound to one customer, origin
and IP, revocable, rotatable, and refused everywhere but inference."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import jwt
import openai
import pytest
import trio

from tests.gateway import RunningGateway, open_gateway
from tests.simulator.server import RunningSimulator

MODEL = "fc:openai/gpt-4o-mini"
EMBEDDING = "fc:openai/text-embedding-3-small"
ORIGIN = "https://app.example"
OLD = ("k1", "old-secret-" + "x" * 32)
NEW = ("k2", "new-secret-" + "y" * 32)


def keys_env(*keys: tuple[str, str]) -> dict[str, str]:
    return {"RINGSIDE_CLIENT_TOKEN_KEYS": ",".join(f"{k}:{s}" for k, s in keys)}


@asynccontextmanager
async def gateway_with(
    database_url: str, redis_url: str, sim: RunningSimulator, data_dir: Path, **env: str
) -> AsyncIterator[RunningGateway]:
    async with open_gateway(database_url, redis_url, sim, data_dir, env) as gw:
        yield gw


@pytest.fixture
async def keyed(
    database_url: str, redis_url: str, simulator: RunningSimulator, data_dir: Path
) -> AsyncIterator[RunningGateway]:
    async with gateway_with(database_url, redis_url, simulator, data_dir, **keys_env(OLD)) as gw:
        yield gw


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def developer(gw: RunningGateway) -> tuple[str, str, dict[str, Any]]:
    """A developer's key, its id, and one customer of it."""
    dev = await gw.new_developer()
    key = dev["api_key"]["key"]
    r = await gw.http.post("/v1/customers", json={"external_id": "acct-1"}, headers=auth(key))
    assert r.status_code == 200, r.text
    return key, dev["api_key"]["id"], r.json()


async def mint(gw: RunningGateway, key: str, customer: str, **body: Any) -> httpx.Response:
    body.setdefault("origin", ORIGIN)
    return await gw.http.post(
        f"/v1/customers/{customer}/client_tokens", json=body, headers=auth(key)
    )


async def token_for(gw: RunningGateway, key: str, customer: str, **body: Any) -> str:
    r = await mint(gw, key, customer, **body)
    assert r.status_code == 200, r.text
    return str(r.json()["token"])


def browser(gw: RunningGateway, token: str, origin: str = ORIGIN) -> openai.AsyncOpenAI:
    # The SDK insists on an api_key; the Authorization in default_headers replaces its Bearer.
    return gw.openai(
        "unused", default_headers={"Authorization": f"Client {token}", "Origin": origin}
    )


async def chat_status(gw: RunningGateway, token: str, **headers: str) -> httpx.Response:
    headers = {"Authorization": f"Client {token}", "Origin": ORIGIN, **headers}
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    return await gw.http.post("/v1/chat/completions", json=body, headers=headers)


def code_of(r: httpx.Response) -> tuple[int, str]:
    return r.status_code, r.json()["error"]["code"]


async def test_a_browser_calls_chat_and_embeddings_billed_to_the_tokens_customer(
    keyed: RunningGateway,
) -> None:
    key, key_id, customer = await developer(keyed)
    r = await mint(keyed, key, "acct-1", ip="127.0.0.1", ttl_seconds=600)
    assert r.status_code == 200, r.text
    minted = r.json()
    assert set(minted) == {"token", "expires_at", "customer_id", "origin", "ip"}
    assert minted["customer_id"] == customer["id"]
    assert (minted["origin"], minted["ip"]) == (ORIGIN, "127.0.0.1")
    assert abs(minted["expires_at"] - (time.time() + 600)) < 5
    assert jwt.get_unverified_header(minted["token"])["kid"] == "k1"
    client = browser(keyed, minted["token"])

    plain = await client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "hello"}]
    )
    assert plain.parse().choices[0].message.content == "Echo: hello"
    assert plain.headers["access-control-allow-origin"] == ORIGIN
    assert "Origin" in plain.headers["vary"]
    assert "X-Ringside-Wallet-Deducted" in plain.headers["access-control-expose-headers"]
    streamed = await client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "hello stream"}], stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in streamed.parse() if c.choices])
    assert text == "Echo: hello stream"
    vectors = await client.embeddings.with_raw_response.create(model=EMBEDDING, input="hello")
    # The browser may name its own customer (by id or external id), but no other.
    own = await client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], user="acct-1",
        extra_headers={"FC-Customer": customer["id"]},
    )  # fmt: skip
    for raw in (plain, streamed, vectors, own):
        event = await keyed.usage_event(raw.headers["x-request-id"])
        assert event["customer_id"] == customer["id"]
        assert event["api_key_id"] == key_id
    with pytest.raises(openai.PermissionDeniedError) as other:
        await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}],
            extra_headers={"FC-Customer": "someone-else"},
        )  # fmt: skip
    assert other.value.code == "customer_mismatch"
    with pytest.raises(openai.PermissionDeniedError):
        await client.embeddings.create(model=EMBEDDING, input="x", user="someone-else")
    models = await client.models.list()
    assert any(m.id == MODEL for m in models.data)


async def test_the_token_is_bound_to_its_origin_and_ip(keyed: RunningGateway) -> None:
    key, _, _ = await developer(keyed)
    pinned = await token_for(keyed, key, "acct-1", ip="127.0.0.1")
    elsewhere = await token_for(keyed, key, "acct-1", ip="203.0.113.7")
    anywhere = await token_for(keyed, key, "acct-1")  # ip omitted: bound to the origin only
    assert (await chat_status(keyed, pinned)).status_code == 200
    assert (await chat_status(keyed, anywhere)).status_code == 200
    # Browsers send the origin lower-case without a default port; both forms match.
    assert (await chat_status(keyed, pinned, Origin="https://APP.example:443")).status_code == 200
    assert code_of(await chat_status(keyed, elsewhere)) == (403, "origin_mismatch")
    r = await chat_status(keyed, pinned, Origin="https://evil.example")
    assert code_of(r) == (403, "origin_mismatch")
    assert r.json()["error"]["type"] == "permission_error"
    assert r.headers["access-control-allow-origin"] == "https://evil.example"  # readable error
    for origin in ("http://app.example", "https://app.example:8443", "null"):
        assert code_of(await chat_status(keyed, pinned, Origin=origin)) == (403, "origin_mismatch")
    no_origin = await keyed.http.post(
        "/v1/embeddings",
        json={"model": EMBEDDING, "input": "x"},
        headers={"Authorization": f"Client {pinned}"},
    )
    assert code_of(no_origin) == (403, "origin_mismatch")
    with pytest.raises(openai.PermissionDeniedError) as sdk:
        await browser(keyed, pinned, "https://evil.example").chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}]
        )
    assert sdk.value.code == "origin_mismatch"


async def test_behind_a_trusted_proxy_the_ip_binding_reads_x_forwarded_for(
    keyed: RunningGateway,
    database_url: str,
    redis_url: str,
    simulator: RunningSimulator,
    data_dir: Path,
) -> None:
    key, _, _ = await developer(keyed)
    bound = await token_for(keyed, key, "acct-1", ip="203.0.113.7")
    # Not a trusted proxy: the header is the client's own claim and is ignored.
    forged = await chat_status(keyed, bound, **{"X-Forwarded-For": "203.0.113.7"})
    assert code_of(forged) == (403, "origin_mismatch")
    env = {**keys_env(OLD), "RINGSIDE_TRUSTED_PROXIES": "127.0.0.1/32"}
    async with gateway_with(database_url, redis_url, simulator, data_dir, **env) as proxied:
        via = {"X-Forwarded-For": "198.51.100.1, 203.0.113.7"}  # the proxy appends the peer
        assert (await chat_status(proxied, bound, **via)).status_code == 200
        other = await chat_status(proxied, bound, **{"X-Forwarded-For": "203.0.113.8"})
        assert code_of(other) == (403, "origin_mismatch")
        assert code_of(await chat_status(proxied, bound)) == (403, "origin_mismatch")


def encode_claims(token: str, secret: str | None, alg: str, drop: str = "") -> str:
    claims = jwt.decode(token, options={"verify_signature": False})
    claims.pop(drop, None)
    return jwt.encode(claims, secret, algorithm=alg, headers={"kid": "k1"})


def resign(token: str, secret: str, kid: str = "k1", **changes: Any) -> str:
    claims = jwt.decode(token, options={"verify_signature": False})
    claims.update(changes)
    return jwt.encode(claims, secret, algorithm="HS256", headers={"kid": kid})


async def test_expired_forged_and_malformed_tokens_are_401(keyed: RunningGateway) -> None:
    key, _, _ = await developer(keyed)
    good = await token_for(keyed, key, "acct-1")
    now = int(time.time())
    header, _, signature = good.split(".")
    bad = {
        "expired": resign(good, OLD[1], iat=now - 120, exp=now - 60),
        "forged": resign(good, "not-the-secret-" + "z" * 32),
        "unknown kid": resign(good, OLD[1], kid="k9"),
        "tampered": f"{header}.{resign(good, OLD[1], sub='cus_other').split('.')[1]}.{signature}",
        "wrong audience": resign(good, OLD[1], aud="someone-else"),
        "no exp": encode_claims(good, OLD[1], "HS256", drop="exp"),
        "alg none": encode_claims(good, None, "none"),
        "bad claim type": resign(good, OLD[1], gen="0"),
        "garbage": "not.a.jwt",
        "not base64": "%%%.%%%.%%%",
        "huge": "a" * 10_000,
    }
    for name, token in bad.items():
        r = await chat_status(keyed, token)
        assert code_of(r) == (401, "invalid_client_token"), name
        assert r.json()["error"]["type"] == "authentication_error"
    with pytest.raises(openai.AuthenticationError) as sdk:
        await browser(keyed, bad["expired"]).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}]
        )
    assert sdk.value.code == "invalid_client_token"


async def test_a_one_second_token_expires(keyed: RunningGateway) -> None:
    key, _, _ = await developer(keyed)
    token = await token_for(keyed, key, "acct-1", ttl_seconds=1)
    assert (await chat_status(keyed, token)).status_code == 200
    await trio.sleep(2.1)  # exp is whole seconds
    assert code_of(await chat_status(keyed, token)) == (401, "invalid_client_token")


async def test_minting_checks_its_body_and_the_customer(keyed: RunningGateway) -> None:
    key, _, customer = await developer(keyed)
    r = await mint(keyed, key, customer["id"])
    assert abs(r.json()["expires_at"] - (time.time() + 900)) < 5  # the default TTL
    for body in (
        {"ttl_seconds": 0}, {"ttl_seconds": 3601}, {"ttl_seconds": "900"},
        {"ttl_seconds": True}, {"ttl_seconds": 1.5}, {"origin": None}, {"origin": ""},
        {"origin": "app.example"}, {"origin": "https://app.example/path"},
        {"origin": "https://user@app.example"}, {"origin": "https://app.example?q=1"},
        {"origin": 7}, {"ip": "localhost"}, {"ip": 127}, {"scope": "all"},
    ):  # fmt: skip
        r = await mint(keyed, key, "acct-1", **body)
        assert code_of(r) == (400, "invalid_request"), body
    r = await keyed.http.post("/v1/customers/acct-1/client_tokens", json=[], headers=auth(key))
    assert r.status_code == 400
    assert (await mint(keyed, key, "nobody")).status_code == 404
    other_key = await keyed.new_key()
    assert (await mint(keyed, other_key, customer["id"])).status_code == 404
    assert (await mint(keyed, other_key, "acct-1")).status_code == 404
    r = await mint(keyed, key, "acct-1", ip="::ffff:127.0.0.1", origin="HTTPS://App.Example:443")
    assert (r.json()["ip"], r.json()["origin"]) == ("127.0.0.1", ORIGIN)


async def test_a_client_token_reaches_nothing_but_inference(keyed: RunningGateway) -> None:
    key, _, customer = await developer(keyed)
    token = await token_for(keyed, key, "acct-1")
    headers = {"Authorization": f"Client {token}", "Origin": ORIGIN}
    cid = customer["id"]
    dev_id = await keyed.services.db.fetchval("SELECT developer_id FROM customer")
    refused = [
        ("GET", "/v1/customers"), ("POST", "/v1/customers"), ("GET", f"/v1/customers/{cid}"),
        ("PATCH", f"/v1/customers/{cid}"), ("DELETE", f"/v1/customers/{cid}"),
        ("GET", f"/v1/customers/{cid}/wallet"), ("POST", f"/v1/customers/{cid}/wallet/topup"),
        ("GET", f"/v1/customers/{cid}/usage"), ("GET", "/v1/usage"),
        ("POST", f"/v1/customers/{cid}/client_tokens"),
        ("POST", f"/v1/customers/{cid}/client_tokens/revoke"),
        ("GET", "/v1/webhooks"), ("POST", "/v1/webhooks"),
        ("GET", "/v1/assistants"), ("POST", "/v1/assistants"),
    ]  # fmt: skip
    for method, path in refused:
        r = await keyed.http.request(method, path, headers=headers, json={})
        assert code_of(r) == (403, "client_token_not_allowed"), (method, path)
        assert r.json()["error"]["type"] == "permission_error"
    for method, path in [
        ("POST", "/developers"), ("GET", f"/developers/{dev_id}"),
        ("POST", f"/developers/{dev_id}/api_keys"), ("GET", f"/developers/{dev_id}/wallet"),
    ]:  # fmt: skip
        r = await keyed.http.request(method, f"/admin/v1{path}", headers=headers, json={})
        assert r.status_code == 401, (method, path)
    # Every route the app serves: only inference, the customer's own threads (tests/api/
    # test_threads.py) and health answer a client token.
    inference = {"/v1/chat/completions", "/v1/embeddings", "/v1/models"}
    for rule in keyed.app.url_map.iter_rules():
        path = rule.rule.replace("<customer_id>", cid).replace("<developer_id>", dev_id)
        path = path.replace("<path:model_id>", MODEL)
        if path in inference or path.startswith(
            ("/v1/models/", "/v1/threads", "/healthz", "/readyz", "/static")
        ):
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            r = await keyed.http.request(method, path, headers=headers, json={})
            assert r.status_code in (401, 403, 404), (method, path, r.status_code)
    assert await keyed.services.db.fetchval("SELECT count(*) FROM customer") == 1


async def test_revoking_kills_live_tokens_in_every_process_within_the_cache_ttl(
    database_url: str, redis_url: str, simulator: RunningSimulator, data_dir: Path
) -> None:
    env = keys_env(OLD)
    async with (
        gateway_with(database_url, redis_url, simulator, data_dir, **env) as one,
        gateway_with(database_url, redis_url, simulator, data_dir, **env) as two,
    ):
        key, _, _ = await developer(one)
        token = await token_for(one, key, "acct-1")
        assert (await chat_status(one, token)).status_code == 200
        assert (await chat_status(two, token)).status_code == 200  # now cached in two
        r = await one.http.post("/v1/customers/acct-1/client_tokens/revoke", headers=auth(key))
        assert r.status_code == 200, r.text
        revoked = trio.current_time()
        assert code_of(await chat_status(one, token)) == (401, "invalid_client_token")
        for _ in range(100):
            if (await chat_status(two, token)).status_code != 200:
                break
            await trio.sleep(0.05)
        lag = trio.current_time() - revoked
        assert lag <= two.services.settings.key_cache_ttl_s + 0.3, lag
        # A token minted after the revocation works at once, even where the old epoch is cached.
        fresh = await token_for(one, key, "acct-1")
        assert (await chat_status(one, fresh)).status_code == 200
        assert (await chat_status(two, fresh)).status_code == 200
        # Revoking the API key that minted a token, or deleting its customer, kills it too.
        dev_id = await one.services.db.fetchval("SELECT developer_id FROM customer")
        key_id = await one.services.db.fetchval("SELECT id FROM api_key")
        assert (await one.admin("DELETE", f"/developers/{dev_id}/api_keys/{key_id}")).is_success
        await trio.sleep(one.services.settings.key_cache_ttl_s + 0.1)
        assert code_of(await chat_status(one, fresh)) == (401, "invalid_client_token")


async def test_deleting_the_customer_kills_its_tokens(keyed: RunningGateway) -> None:
    key, _, customer = await developer(keyed)
    token = await token_for(keyed, key, "acct-1")
    assert (await chat_status(keyed, token)).status_code == 200
    r = await keyed.http.delete(f"/v1/customers/{customer['id']}", headers=auth(key))
    assert r.status_code == 200
    await trio.sleep(keyed.services.settings.key_cache_ttl_s + 0.1)
    assert code_of(await chat_status(keyed, token)) == (401, "invalid_client_token")


async def test_keys_rotate_without_breaking_live_tokens(
    database_url: str, redis_url: str, simulator: RunningSimulator, data_dir: Path
) -> None:
    async with gateway_with(database_url, redis_url, simulator, data_dir, **keys_env(OLD)) as gw:
        key, _, _ = await developer(gw)
        old = await token_for(gw, key, "acct-1")
    async with gateway_with(
        database_url, redis_url, simulator, data_dir, **keys_env(NEW, OLD)
    ) as gw:
        new = await token_for(gw, key, "acct-1")
        assert jwt.get_unverified_header(new)["kid"] == "k2"
        assert (await chat_status(gw, old)).status_code == 200
        assert (await chat_status(gw, new)).status_code == 200
    async with gateway_with(database_url, redis_url, simulator, data_dir, **keys_env(NEW)) as gw:
        assert code_of(await chat_status(gw, old)) == (401, "invalid_client_token")
        assert (await chat_status(gw, new)).status_code == 200


async def test_without_configured_keys_every_process_shares_one_generated_key(
    database_url: str, redis_url: str, simulator: RunningSimulator, data_dir: Path
) -> None:
    async with (
        gateway_with(database_url, redis_url, simulator, data_dir) as one,
        gateway_with(database_url, redis_url, simulator, data_dir) as two,
    ):
        key, _, _ = await developer(one)
        # Both processes need the key at the same moment: one row wins, both use it.
        tokens: list[str] = []

        async def mint_on(gw: RunningGateway) -> None:
            tokens.append(await token_for(gw, key, "acct-1"))

        async with trio.open_nursery() as nursery:
            for gw in (one, two, one, two):
                nursery.start_soon(mint_on, gw)
        for token in tokens:
            assert (await chat_status(one, token)).status_code == 200
            assert (await chat_status(two, token)).status_code == 200
        rows = await one.services.db.fetch("SELECT kid FROM client_token_key")
        assert [r["kid"] for r in rows] == [jwt.get_unverified_header(tokens[0])["kid"]]


async def test_cors_preflight_for_the_browser_endpoints_only(keyed: RunningGateway) -> None:
    asked = "authorization, content-type, x-stainless-os, x-stainless-retry-count"
    for path, method in (("/v1/chat/completions", "POST"), ("/v1/embeddings", "POST"),
                         ("/v1/models", "GET"), (f"/v1/models/{MODEL}", "GET")):  # fmt: skip
        r = await keyed.http.options(
            path,
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": method,
                "Access-Control-Request-Headers": asked,
            },
        )
        assert r.status_code == 204, path
        assert r.headers["access-control-allow-origin"] == ORIGIN
        assert method in r.headers["access-control-allow-methods"]
        assert r.headers["access-control-allow-headers"] == asked
        assert "Origin" in r.headers["vary"]
        assert "access-control-allow-credentials" not in r.headers
    r = await keyed.http.options(
        "/v1/chat/completions",
        headers={"Origin": ORIGIN, "Access-Control-Request-Headers": "bad header"},
    )
    assert "Idempotency-Key" in r.headers["access-control-allow-headers"]
    r = await keyed.http.options("/v1/customers", headers={"Origin": ORIGIN})
    assert r.status_code == 405
    assert "access-control-allow-origin" not in r.headers
    # Errors on a browser endpoint are readable by the page too.
    r = await keyed.http.post("/v1/chat/completions", json={}, headers={"Origin": ORIGIN})
    assert r.status_code == 401
    assert r.headers["access-control-allow-origin"] == ORIGIN
