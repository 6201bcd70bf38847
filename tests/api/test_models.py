"""The catalog over ``/v1/models`` and model-reference resolution."""

from __future__ import annotations

from decimal import Decimal

import openai
import orjson
import pytest

from ringside.catalog import load_catalog
from ringside.tokens import TokenUsage
from ringside.upstream.providers import PROVIDERS
from tests.gateway import RunningGateway
from tests.simulator.openapi import validate


async def test_list_models_covers_all_19_providers(gateway: RunningGateway) -> None:
    client = gateway.openai(await gateway.new_key())
    raw = await client.models.with_raw_response.list()
    validate(orjson.loads(raw.http_response.content), "ListModelsResponse")
    models = [m async for m in await client.models.list()]
    assert {m.owned_by for m in models} == set(PROVIDERS)
    assert len(PROVIDERS) == 19
    mini = next(m for m in models if m.id == "fc:openai/gpt-4o-mini")
    extra = mini.model_extra
    assert extra["pricing"] == {
        "input": "0.15",
        "cached_input": "0.075",
        "output": "0.60",
        "reasoning": "0.60",
    }
    assert extra["capabilities"]["tools"] is True
    assert extra["capabilities"]["embeddings"] is False


async def test_supports_filter(gateway: RunningGateway) -> None:
    key = await gateway.new_key()
    r = await gateway.http.get(
        "/v1/models?supports=reasoning,tools", headers={"Authorization": f"Bearer {key}"}
    )
    data = r.json()["data"]
    assert data
    assert all(m["capabilities"]["reasoning"] and m["capabilities"]["tools"] for m in data)
    everything = (
        await gateway.http.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
    ).json()
    assert len(data) < len(everything["data"])
    bad = await gateway.http.get(
        "/v1/models?supports=teleportation", headers={"Authorization": f"Bearer {key}"}
    )
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "supports"


async def test_models_need_a_key(gateway: RunningGateway) -> None:
    r = await gateway.http.get("/v1/models")
    assert r.status_code == 401


async def test_retrieve_model_and_match_selector(gateway: RunningGateway) -> None:
    client = gateway.openai(await gateway.new_key())
    model = await client.models.retrieve("fc:openai/gpt-4o-mini")
    assert model.id == "fc:openai/gpt-4o-mini"
    validate(model.model_dump(), "Model")

    newest = max(
        (
            m
            for m in gateway.services.catalog.all()
            if m.provider == "anthropic" and m.family == "sonnet"
        ),
        key=lambda m: m.version,
    )
    raw = await client.models.with_raw_response.retrieve("match:anthropic/sonnet>=4")
    assert raw.headers["x-ringside-model-resolved"] == newest.ref
    assert raw.parse().id == newest.ref

    older = await client.models.retrieve("match:anthropic/sonnet<5")
    assert older.model_extra["version"].startswith("4")

    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("fc:openai/not-a-model")


async def test_match_in_a_completion(gateway: RunningGateway) -> None:
    client = gateway.openai(await gateway.new_key())
    newest = max(
        (m for m in gateway.services.catalog.all() if m.provider == "openai" and m.family == "gpt"),
        key=lambda m: m.version,
    )
    raw = await client.chat.completions.with_raw_response.create(
        model="match:openai/gpt>=4", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["x-ringside-model-resolved"] == newest.ref
    assert gateway.sim.chats("openai")[-1].json["model"] == newest.model


async def test_capabilities_show_caching_and_cache_write_prices(gateway: RunningGateway) -> None:
    key = await gateway.new_key()
    auth = {"Authorization": f"Bearer {key}"}
    cached = (await gateway.http.get("/v1/models?supports=caching", headers=auth)).json()["data"]
    assert cached
    for m in cached:  # caching: a cache read is cheaper than fresh input
        assert Decimal(m["pricing"]["cached_input"]) < Decimal(m["pricing"]["input"])
    assert "fc:anthropic/claude-sonnet-5" in {m["id"] for m in cached}
    sonnet = (
        await gateway.http.get("/v1/models/fc:anthropic/claude-sonnet-5", headers=auth)
    ).json()
    assert sonnet["pricing"]["cache_write"] == "2.50"  # 1.25x input, Anthropic's cache write
    assert {c for c, on in sonnet["capabilities"].items() if on} == {
        "chat",
        "tools",
        "vision",
        "json_schema",
        "reasoning",
        "streaming",
        "caching",
    }


def test_cache_writes_are_billed_at_their_own_price() -> None:
    info = load_catalog().by_ref("fc:anthropic/claude-sonnet-5")
    assert info is not None
    # 1,000 prompt tokens: 600 read from the cache, 300 written to it, 100 fresh.
    cost = info.cost(input=1000, cached_input=600, output=0, reasoning=0, cache_write=300)
    per = Decimal(1_000_000)
    assert cost == (100 * Decimal("2.00") + 600 * Decimal("0.20") + 300 * Decimal("2.50")) / per
    assert TokenUsage.from_openai(
        {
            "prompt_tokens": 1000,
            "prompt_tokens_details": {"cached_tokens": 600, "cache_write_tokens": 300},
        }
    ) == TokenUsage(input=1000, cached_input=600, cache_write=300)
