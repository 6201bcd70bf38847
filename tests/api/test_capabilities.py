"""What the catalog says a model cannot do is a clear 400 before any provider call, never a
silent drop: tools, images, reasoning_effort; in a cascade, every model must be able to."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.gateway import RunningGateway, open_gateway
from tests.simulator.server import RunningSimulator

TEXT = "fc:openai/sim-text"  # chat and streaming only
FULL = "fc:openai/sim-full"  # tools, vision, reasoning, json_schema
LOCAL = "fc:ollama/some-local-model"  # outside the catalog: capabilities unknown
WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
}
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}


def _model(name: str, *capabilities: str) -> dict[str, Any]:
    return {
        "provider": "openai",
        "model": name,
        "family": name,
        "version": "1",
        "released": "2026-01-01",
        "context_window": 32000,
        "max_output_tokens": 1000,
        "pricing": {"input": "1.00", "output": "2.00"},
        "capabilities": ["chat", "streaming", *capabilities],
    }


@pytest.fixture
async def gw(
    database_url: str, redis_url: str, simulator: RunningSimulator, tmp_path: Path
) -> AsyncIterator[RunningGateway]:
    models = [
        _model("sim-text"),
        _model("sim-full", "tools", "vision", "reasoning", "json_schema"),
    ]
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps({"models": models}))
    env = {"RINGSIDE_CATALOG": str(catalog)}
    async with open_gateway(database_url, redis_url, simulator, tmp_path, env) as running:
        yield running


async def refused(gw: RunningGateway, **body: Any) -> dict[str, Any]:
    """The error of a request that must be a 400 before any provider call (or money)."""
    client = gw.openai(await gw.new_key())
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(**body)
    assert gw.sim.chats() == []
    assert await gw.services.db.fetchval("SELECT count(*) FROM usage_event") == 0
    error = info.value.body
    assert isinstance(error, dict)
    return error


def hello() -> list[dict[str, Any]]:
    return [{"role": "user", "content": "hello"}]


@pytest.mark.parametrize("stream", [False, True])
async def test_tools_on_a_model_without_tools(gw: RunningGateway, stream: bool) -> None:
    error = await refused(gw, model=TEXT, messages=hello(), tools=[WEATHER], stream=stream)
    assert error["code"] == "tools_unsupported"
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "tools"
    assert TEXT in error["message"]
    assert "supports=tools" in error["message"]


@pytest.mark.parametrize(
    "choice", ["required", "auto", {"type": "function", "function": {"name": "f"}}]
)
async def test_tool_choice_on_a_model_without_tools(gw: RunningGateway, choice: Any) -> None:
    error = await refused(gw, model=TEXT, messages=hello(), tool_choice=choice)
    assert error["code"] == "tools_unsupported"
    assert error["param"] == "tool_choice"


async def test_legacy_functions_on_a_model_without_tools(gw: RunningGateway) -> None:
    error = await refused(
        gw, model=TEXT, messages=hello(), extra_body={"functions": [WEATHER["function"]]}
    )
    assert error["code"] == "tools_unsupported"
    assert error["param"] == "functions"


async def test_images_on_a_model_without_vision(gw: RunningGateway) -> None:
    messages = [
        {"role": "system", "content": "Describe."},
        {"role": "user", "content": [{"type": "text", "text": "what is this"}, IMAGE]},
    ]
    error = await refused(gw, model=TEXT, messages=messages)
    assert error["code"] == "vision_unsupported"
    assert error["param"] == "messages.1.content.1"
    assert "supports=vision" in error["message"]


async def test_reasoning_effort_on_a_model_without_reasoning(gw: RunningGateway) -> None:
    error = await refused(gw, model=TEXT, messages=hello(), reasoning_effort="high")
    assert error["code"] == "reasoning_unsupported"
    assert error["param"] == "reasoning_effort"


async def test_a_cascade_is_refused_naming_the_model_that_cannot(gw: RunningGateway) -> None:
    error = await refused(gw, model=[FULL, TEXT], messages=hello(), tools=[WEATHER])
    assert error["code"] == "tools_unsupported"
    assert "Every model of a cascade must support tools" in error["message"]
    assert TEXT in error["message"]
    assert FULL not in error["message"]


async def test_what_a_model_can_do_goes_through(gw: RunningGateway) -> None:
    client = gw.openai(await gw.new_key())
    ask = 'weather? #sim{"tool_call": {"name": "get_weather", "arguments": {}}}'
    reply = await client.chat.completions.create(
        model=FULL,
        messages=[{"role": "user", "content": [{"type": "text", "text": ask}, IMAGE]}],
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="auto",
        reasoning_effort="low",
    )
    assert reply.choices[0].finish_reason == "tool_calls"
    sent = gw.sim.chats("openai")[-1].json
    assert sent["tools"] == [WEATHER]
    assert sent["reasoning_effort"] == "low"


async def test_a_model_outside_the_catalog_is_not_refused(gw: RunningGateway) -> None:
    client = gw.openai(await gw.new_key())
    reply = await client.chat.completions.create(
        model=LOCAL,
        messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}, IMAGE]}],
        tools=[WEATHER],  # type: ignore[list-item]
    )
    assert reply.choices[0].message.content == "Echo: hi"
    assert gw.sim.chats("ollama")[-1].json["tools"] == [WEATHER]
