"""The cross-provider contract (seed 002): the same openai SDK calls — plain, streamed, with
tools, with a JSON schema — give the same answers, shapes and usage on all 19 providers, each
simulator speaking its provider's own wire format."""

from __future__ import annotations

import json
from typing import Any

import openai
import orjson
import pytest

from ringside.catalog import load_catalog
from tests.gateway import ALL_PROVIDERS, RunningGateway
from tests.simulator.openapi import validate

CATALOG = load_catalog()

# "hello there": 3 tokens per message + 2 words in; "Echo: hello there" is 3 tokens out.
PROMPT_TOKENS = 5
COMPLETION_TOKENS = 3

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
CITY_SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "city",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


def chat_model(provider: str, capability: str = "chat") -> str | None:
    """The first catalog chat model of ``provider`` with ``capability`` (None: there is none)."""
    if provider == "ollama":
        return "fc:ollama/llama3.2"
    models = [
        m
        for m in CATALOG.all()
        if m.provider == provider and "chat" in m.capabilities and capability in m.capabilities
    ]
    return models[0].ref if models else None


def chat(provider: str) -> str:
    ref = chat_model(provider)
    assert ref is not None, provider
    return ref


@pytest.mark.parametrize("provider", ALL_PROVIDERS)
async def test_plain(gateway: RunningGateway, provider: str) -> None:
    client = gateway.openai(await gateway.new_key())
    raw = await client.chat.completions.with_raw_response.create(
        model=chat(provider), messages=[{"role": "user", "content": "hello there"}]
    )
    body = orjson.loads(raw.http_response.content)
    validate(body, "CreateChatCompletionResponse")
    reply = raw.parse()
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == "Echo: hello there"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (
        PROMPT_TOKENS,
        COMPLETION_TOKENS,
    )
    assert raw.headers["x-ringside-model-used"] == chat(provider)


@pytest.mark.parametrize("provider", ALL_PROVIDERS)
async def test_streamed(gateway: RunningGateway, provider: str) -> None:
    client = gateway.openai(await gateway.new_key())
    stream = await client.chat.completions.create(
        model=chat(provider),
        messages=[{"role": "user", "content": "hello there"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text = []
    finishes = []
    usage = None
    async for chunk in stream:
        validate(chunk.model_dump(exclude_unset=True), "CreateChatCompletionStreamResponse")
        assert chunk.object == "chat.completion.chunk"
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
        if chunk.usage is not None:
            usage = chunk.usage
    assert "".join(text) == "Echo: hello there"
    assert finishes == ["stop"]
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (PROMPT_TOKENS, COMPLETION_TOKENS)


@pytest.mark.parametrize("provider", ALL_PROVIDERS)
async def test_tools_round_trip(gateway: RunningGateway, provider: str) -> None:
    client = gateway.openai(await gateway.new_key())
    model = chat_model(provider, "tools")
    ask = 'weather? #sim{"tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}}}'
    messages: list[Any] = [{"role": "user", "content": ask}]
    if model is None:  # a provider without tools: a clear 400, never a silent drop
        with pytest.raises(openai.BadRequestError) as info:
            await client.chat.completions.create(
                model=chat(provider), messages=messages, tools=[WEATHER]
            )
        assert info.value.code == "tools_unsupported"
        return
    first = await client.chat.completions.create(model=model, messages=messages, tools=[WEATHER])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert call.id
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 21}'},
    ]
    second = await client.chat.completions.create(model=model, messages=messages, tools=[WEATHER])
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == "Echo: weather?"


@pytest.mark.parametrize("provider", ALL_PROVIDERS)
async def test_json_schema(gateway: RunningGateway, provider: str) -> None:
    client = gateway.openai(await gateway.new_key())
    reply = await client.chat.completions.create(
        model=chat(provider),
        messages=[{"role": "user", "content": 'Where? #sim{"reply": "{\\"city\\": \\"Paris\\"}"}'}],
        response_format=CITY_SCHEMA,  # type: ignore[arg-type]
    )
    content = reply.choices[0].message.content
    assert content is not None
    assert json.loads(content) == {"city": "Paris"}
