"""``POST /v1/embeddings`` through the official openai SDK: every OpenAI-wire provider with an
embeddings model, OpenAI's request shapes and refusals, and the money (held, settled once,
billed at the catalog's input price with the developer's markup, idempotent replays)."""

from __future__ import annotations

import base64
import struct
from decimal import Decimal
from typing import Any

import httpx
import openai
import orjson
import pytest

from ringside.catalog import load_catalog
from ringside.money import charge
from tests.api.test_billing import ledger_matches_balance, new_customer, topup
from tests.gateway import SIMULATED, RunningGateway
from tests.simulator.openapi import validate

CATALOG = load_catalog()
SMALL = "fc:openai/text-embedding-3-small"
LARGE = "fc:openai/text-embedding-3-large"
EMBEDDING_PROVIDERS = sorted(
    {m.provider for m in CATALOG.all() if "embeddings" in m.capabilities} & set(SIMULATED)
)


def embedding_model(provider: str) -> str:
    return next(
        m.ref for m in CATALOG.all() if m.provider == provider and "embeddings" in m.capabilities
    )


def input_cost(ref: str, prompt_tokens: int) -> Decimal:
    info = CATALOG.by_ref(ref)
    assert info is not None
    assert info.cost(input=prompt_tokens, cached_input=0, output=0, reasoning=0) == (
        info.pricing.input * prompt_tokens / 1_000_000
    )
    return info.pricing.input * prompt_tokens / 1_000_000


def tokens(n: int) -> str:
    """A directive making the simulated provider report ``n`` prompt tokens."""
    return f'#sim{{"usage": {{"prompt_tokens": {n}}}}}'


def floats(encoded: str) -> list[float]:
    raw = base64.b64decode(encoded)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def body_of(raw: Any) -> dict[str, Any]:
    """The response body as sent, checked against OpenAI's ``CreateEmbeddingResponse`` (whose
    ``embedding`` is typed as floats only, so base64 vectors are decoded for the check)."""
    body: dict[str, Any] = orjson.loads(raw.http_response.content)
    data = [
        {**d, "embedding": floats(d["embedding"])} if isinstance(d["embedding"], str) else d
        for d in body["data"]
    ]
    validate({**body, "data": data}, "CreateEmbeddingResponse")
    return body


async def post(
    gw: RunningGateway, key: str, body: dict[str, Any], **headers: str
) -> httpx.Response:
    return await gw.http.post(
        "/v1/embeddings", json=body, headers={"Authorization": f"Bearer {key}", **headers}
    )


async def billed(gw: RunningGateway) -> int:
    return int(await gw.services.db.fetchval("SELECT count(*) FROM usage_event"))


@pytest.mark.parametrize("provider", EMBEDDING_PROVIDERS)
async def test_every_openai_wire_provider_embeds(gateway: RunningGateway, provider: str) -> None:
    key = await gateway.new_key()
    model = embedding_model(provider)
    raw = await gateway.openai(key).embeddings.with_raw_response.create(
        model=model, input="hello embedding world", encoding_format="float",
        extra_headers={"FC-Customer": "cus_9"},
    )  # fmt: skip
    result = raw.parse()
    body_of(raw)
    assert len(result.data) == 1
    assert result.usage.prompt_tokens == 3
    assert raw.headers["x-ringside-model-resolved"] == model
    assert raw.headers["x-ringside-model-used"] == model
    assert raw.headers["x-ringside-fallback-triggered"] == "false"

    (sent,) = gateway.sim.embeddings(provider)
    upstream_model = model.split("/", 1)[1]
    if provider == "azure_openai":
        assert sent.path == f"/azure_openai/openai/deployments/{upstream_model}/embeddings"
        assert "api-version=" in sent.query
        assert sent.headers["api-key"] == "sk-azure_openai-test"
    elif provider == "ollama":
        assert "authorization" not in sent.headers
    else:
        assert sent.headers["authorization"] == f"Bearer sk-{provider}-test"
    assert sent.json["model"] == upstream_model
    assert key not in str(sent.headers)

    event = await gateway.usage_event(raw.headers["x-request-id"])
    assert (event["provider"], event["model_resolved"]) == (provider, model)
    assert (event["status"], event["usage_source"], event["stream"]) == ("ok", "upstream", False)
    assert (event["input_tokens"], event["output_tokens"]) == (3, 0)
    assert event["customer_ref"] == "cus_9"
    assert event["cost_usd"] == input_cost(model, 3)


async def test_string_and_list_input_relayed_verbatim(gateway: RunningGateway) -> None:
    key = await gateway.new_key()
    client = gateway.openai(key)
    one = await client.embeddings.create(model=SMALL, input="alpha", encoding_format="float")
    raw = await client.embeddings.with_raw_response.create(
        model=SMALL, input=["alpha", "beta gamma", "alpha"], encoding_format="float",
        extra_body={"input_type": "query"},
    )  # fmt: skip
    many = raw.parse()
    body_of(raw)
    assert [d.index for d in many.data] == [0, 1, 2]
    assert many.data[0].embedding == many.data[2].embedding == one.data[0].embedding
    assert many.data[1].embedding != one.data[0].embedding
    assert len(one.data[0].embedding) == 1536
    assert many.usage.prompt_tokens == many.usage.total_tokens == 4
    sent = gateway.sim.embeddings("openai")[-1]
    assert sent.json["input_type"] == "query"  # unknown fields pass through
    assert sent.json["input"] == ["alpha", "beta gamma", "alpha"]
    # The provider's bytes, untouched (the simulator writes compact JSON).
    assert raw.http_response.content.startswith(b'{"object":"list","data":[{"object":"embedding"')


async def test_token_inputs(gateway: RunningGateway) -> None:
    client = gateway.openai(await gateway.new_key())
    flat = await client.embeddings.create(model=SMALL, input=[1212, 318, 257])
    nested = await client.embeddings.create(model=SMALL, input=[[1212, 318], [257]])
    assert (len(flat.data), flat.usage.prompt_tokens) == (1, 3)
    assert (len(nested.data), nested.usage.prompt_tokens) == (2, 3)


async def test_base64_encoding(gateway: RunningGateway) -> None:
    client = gateway.openai(await gateway.new_key())
    plain = await client.embeddings.create(model=SMALL, input="a b", encoding_format="float")
    raw = await client.embeddings.with_raw_response.create(
        model=SMALL, input="a b", encoding_format="base64"
    )
    body = body_of(raw)
    encoded = body["data"][0]["embedding"]
    assert isinstance(encoded, str)
    assert floats(encoded) == plain.data[0].embedding
    # Without encoding_format the SDK asks for base64 and decodes it itself.
    implicit = await client.embeddings.create(model=SMALL, input="a b")
    assert gateway.sim.embeddings()[-1].json["encoding_format"] == "base64"
    assert implicit.data[0].embedding == plain.data[0].embedding


async def test_dimensions(gateway: RunningGateway) -> None:
    client = gateway.openai(await gateway.new_key())
    raw = await client.embeddings.with_raw_response.create(
        model=LARGE, input="shorter", dimensions=256, encoding_format="float"
    )
    body_of(raw)
    assert len(raw.parse().data[0].embedding) == 256
    assert gateway.sim.embeddings()[-1].json["dimensions"] == 256


@pytest.mark.parametrize(
    ("value", "param"),
    [
        ("", "input"),
        ([], "input"),
        (["a", ""], "input"),
        (["x"] * 2049, "input"),
        ([[]], "input"),
        (["a", 1], "input"),
        ([-1], "input"),
    ],
)
async def test_invalid_input_is_a_400_before_any_provider(
    gateway: RunningGateway, value: Any, param: str
) -> None:
    client = gateway.openai(await gateway.new_key())
    with pytest.raises(openai.BadRequestError) as info:
        await client.embeddings.create(model=SMALL, input=value)
    assert info.value.code == "invalid_request"
    body = info.value.body
    assert isinstance(body, dict)
    assert body["param"] == param
    assert gateway.sim.embeddings() == []
    assert await billed(gateway) == 0


async def test_the_input_limit_is_inclusive(gateway: RunningGateway) -> None:
    client = gateway.openai(await gateway.new_key())
    result = await client.embeddings.create(model=SMALL, input=["x"] * 2048, dimensions=1)
    assert len(result.data) == 2048


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x"}, "model"),
        ({"model": SMALL}, "input"),
        ({"model": SMALL, "input": "x", "encoding_format": "binary"}, "encoding_format"),
        ({"model": SMALL, "input": "x", "dimensions": 0}, "dimensions"),
        ({"model": SMALL, "input": "x", "dimensions": True}, "dimensions"),
        ({"model": SMALL, "input": "x", "user": 7}, "user"),
        ({"model": [], "input": "x"}, "model"),
    ],
)
async def test_invalid_fields(gateway: RunningGateway, body: dict[str, Any], param: str) -> None:
    r = await post(gateway, await gateway.new_key(), body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_request", param)
    validate(r.json(), "ErrorResponse")
    assert gateway.sim.embeddings() == []


async def test_model_refusals(gateway: RunningGateway) -> None:
    client = gateway.openai(await gateway.new_key())
    with pytest.raises(openai.BadRequestError) as info:
        await client.embeddings.create(model="fc:openai/gpt-4o-mini", input="x")
    assert info.value.code == "invalid_request"
    assert "fc:openai/gpt-4o-mini" in info.value.message
    with pytest.raises(openai.BadRequestError) as info:
        await client.embeddings.create(model="fc:openai/text-embedding-9-huge", input="x")
    assert info.value.code == "unknown_model_pricing"
    with pytest.raises(openai.BadRequestError) as info:
        await client.embeddings.create(model="text-embedding-3-small", input="x")
    assert info.value.code == "invalid_model_ref"
    # A chat model anywhere in a cascade is refused before any provider is called.
    with pytest.raises(openai.BadRequestError) as info:
        await client.embeddings.create(model=[SMALL, "fc:openai/gpt-4o"], input="x")  # type: ignore[arg-type]
    assert "fc:openai/gpt-4o" in info.value.message
    assert gateway.sim.embeddings() == []


async def test_billable_is_input_price_times_tokens_with_markup(gateway: RunningGateway) -> None:
    client = gateway.openai(await gateway.new_key())
    raw = await client.embeddings.with_raw_response.create(
        model=LARGE, input=f"price me {tokens(123_457)}", user="acct-1"
    )
    assert raw.parse().usage.prompt_tokens == 123_457
    assert body_of(raw)["usage"] == {"prompt_tokens": 123_457, "total_tokens": 123_457}
    event = await gateway.usage_event(raw.headers["x-request-id"])
    exact = CATALOG.by_ref(LARGE).pricing.input * 123_457 / 1_000_000  # type: ignore[union-attr]
    assert exact == input_cost(LARGE, 123_457)
    assert event["cost_usd"] == exact
    assert event["billable_usd"] == charge(exact * Decimal("1.10"))
    assert (event["input_tokens"], event["output_tokens"]) == (123_457, 0)
    assert event["customer_ref"] == "acct-1"
    assert event["customer_id"] is not None
    await ledger_matches_balance(gateway)


async def test_usage_is_counted_when_the_provider_reports_none(gateway: RunningGateway) -> None:
    key = await gateway.new_key()
    text = 'twelve chars #sim{"no_usage": true}'
    r = await post(gateway, key, {"model": SMALL, "input": [text, "abcd"]})
    assert r.status_code == 200, r.text
    assert "usage" not in r.json()  # relayed as the provider sent it
    event = await gateway.usage_event(r.headers["x-request-id"])
    assert event["usage_source"] == "counted"
    assert event["input_tokens"] == (len(text) + 4 + 3) // 4
    assert event["cost_usd"] == input_cost(SMALL, event["input_tokens"])


async def test_wallet_is_debited_and_reported_in_headers(gateway: RunningGateway) -> None:
    key = await gateway.new_key()
    client = gateway.openai(key)
    customer = await new_customer(gateway, key, external_id="w-emb")
    await topup(gateway, key, "w-emb", "1.000000")
    raw = await client.embeddings.with_raw_response.create(
        model=LARGE, input=f"a {tokens(100_000)}", extra_headers={"FC-Customer": "w-emb"}
    )
    billed_usd = charge(input_cost(LARGE, 100_000) * Decimal("1.1"))
    assert raw.headers["x-ringside-wallet-deducted"] == str(billed_usd)
    assert raw.headers["x-ringside-wallet-balance"] == str(Decimal("1.000000") - billed_usd)
    r = await gateway.http.get(
        f"/v1/customers/{customer['id']}/wallet", headers={"Authorization": f"Bearer {key}"}
    )
    debit = r.json()["transactions"]["data"][0]
    assert (debit["type"], debit["amount_usd"]) == ("debit", str(-billed_usd))
    assert debit["request_id"] == raw.headers["x-request-id"]
    await ledger_matches_balance(gateway)


async def test_a_provider_refused_call_is_not_billed(gateway: RunningGateway) -> None:
    key = await gateway.new_key()
    await new_customer(gateway, key, external_id="r1")
    await topup(gateway, key, "r1", "1")
    # The provider refuses (more dimensions than the model has): the caller's mistake, a 400.
    r = await post(
        gateway, key, {"model": SMALL, "input": "x", "dimensions": 4096}, **{"FC-Customer": "r1"}
    )
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "upstream_rejected_request"
    event = await gateway.usage_event(r.headers["x-request-id"])
    assert (event["status"], event["billable_usd"]) == ("upstream_error", 0)
    r = await post(gateway, key, {"model": SMALL, "input": 'x #sim{"status": 503}'})
    assert r.status_code == 503
    event = await gateway.usage_event(r.headers["x-request-id"])
    assert (event["status"], event["billable_usd"]) == ("upstream_error", 0)
    assert await gateway.services.db.fetchval("SELECT count(*) FROM wallet_transaction") == 1
    await ledger_matches_balance(gateway)


async def test_cascade_falls_back_and_bills_the_model_that_answered(
    gateway: RunningGateway,
) -> None:
    key = await gateway.new_key()
    await new_customer(gateway, key, external_id="f-emb")
    await topup(gateway, key, "f-emb", "1")
    client = gateway.openai(key)
    # Mistral's only key is set aside (as after a 401): no usable key, the cascade moves on.
    gateway.services.upstreams.rings["mistral"].refused("sk-mistral-test")
    raw = await client.embeddings.with_raw_response.create(
        model=["fc:mistral/mistral-embed", LARGE],  # type: ignore[arg-type]
        input=f"fall {tokens(5000)}",
        extra_headers={"FC-Customer": "f-emb"},
    )
    body_of(raw)
    assert raw.headers["x-ringside-fallback-triggered"] == "true"
    assert raw.headers["x-ringside-model-used"] == LARGE
    assert raw.headers["x-ringside-models-tried"] == f"fc:mistral/mistral-embed,{LARGE}"
    event = await gateway.usage_event(raw.headers["x-request-id"])
    assert (event["model_resolved"], event["provider"]) == (LARGE, "openai")
    assert event["billable_usd"] == charge(input_cost(LARGE, 5000) * Decimal("1.1"))
    assert raw.headers["x-ringside-wallet-deducted"] == str(event["billable_usd"])
    assert len(gateway.sim.embeddings()) == 1
    await ledger_matches_balance(gateway)


async def test_idempotent_replay_calls_the_provider_and_bills_once(
    gateway: RunningGateway,
) -> None:
    key = await gateway.new_key()
    client = gateway.openai(key)
    headers = {"Idempotency-Key": "emb-1", "FC-Customer": "c1"}
    first = await client.embeddings.with_raw_response.create(
        model=SMALL, input=["one", "two"], extra_headers=headers
    )
    again = await client.embeddings.with_raw_response.create(
        model=SMALL, input=["one", "two"], extra_headers=headers
    )
    assert body_of(again) == body_of(first)
    assert again.http_response.content == first.http_response.content
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["x-ringside-model-used"] == SMALL
    assert again.headers["content-type"] == "application/json"
    assert again.parse().data[0].embedding == first.parse().data[0].embedding
    assert len(gateway.sim.embeddings()) == 1
    assert await billed(gateway) == 1
    # Another body under the same key is a conflict.
    with pytest.raises(openai.ConflictError) as info:
        await client.embeddings.create(model=SMALL, input="three", extra_headers=headers)
    assert info.value.code == "idempotency_key_reused"


async def test_a_failed_call_releases_its_key(gateway: RunningGateway) -> None:
    key = await gateway.new_key()
    failing = {"model": SMALL, "input": 'x #sim{"status": 503}'}
    for _ in range(2):
        r = await post(gateway, key, failing, **{"Idempotency-Key": "emb-2"})
        assert r.status_code == 503
    assert len(gateway.sim.embeddings()) == 2 * 3  # each with two upstream retries of a 503


async def test_a_cascade_with_an_idempotency_key_is_refused(gateway: RunningGateway) -> None:
    client = gateway.openai(await gateway.new_key())
    with pytest.raises(openai.BadRequestError) as info:
        await client.embeddings.create(
            model=[SMALL, LARGE],  # type: ignore[arg-type]
            input="x",
            extra_headers={"Idempotency-Key": "emb-3"},
        )
    assert info.value.code == "fallback_with_idempotency_unsupported"
    assert gateway.sim.embeddings() == []
