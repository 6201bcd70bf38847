"""Google Gemini through the official openai SDK: the gateway translates OpenAI chat and
embeddings calls to Gemini's ``generateContent`` / ``streamGenerateContent`` /
``batchEmbedContents`` (the simulator checks the native requests as Google does) and the
answers back to OpenAI's shapes, usage and billing."""

from __future__ import annotations

import base64
import json
import math
import struct
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from ringside.catalog import load_catalog
from ringside.errors import InvalidRequest, RateLimited, UpstreamError, UpstreamUnavailable
from ringside.upstream.gemini import ADAPTER, SKIP_SIGNATURE, GeminiStreamDecoder
from tests.gateway import RunningGateway, open_gateway
from tests.simulator.app import Received
from tests.simulator.openapi import validate
from tests.simulator.server import RunningSimulator

CATALOG = load_catalog()
MODEL = "fc:gemini/gemini-3.8-flash"
LITE = "fc:gemini/gemini-2.5-flash-lite"
EMBED = "fc:gemini/gemini-embedding-001"
BASE = "/gemini/v1beta/models/"
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
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
PIXEL = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "YPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


def directive(text: str, **d: Any) -> str:
    return f"{text} #sim{json.dumps(d)}"


def sent(gateway: RunningGateway) -> Received:
    """The last request the simulated Gemini received."""
    return [r for r in gateway.sim.received if r.provider == "gemini"][-1]


def gemini_requests(gateway: RunningGateway) -> list[Received]:
    return [r for r in gateway.sim.received if r.provider == "gemini"]


def body(raw: Any) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(raw.http_response.content)
    return data


def body_of_first(reply: Any) -> str:
    return json.dumps(reply.model_dump())


async def client(gateway: RunningGateway) -> openai.AsyncOpenAI:
    return gateway.openai(await gateway.new_key())


async def post(gateway: RunningGateway, key: str, payload: dict[str, Any]) -> httpx.Response:
    return await gateway.http.post(
        "/v1/chat/completions", json=payload, headers={"Authorization": f"Bearer {key}"}
    )


def cost(ref: str, prompt: int, completion: int, reasoning: int = 0) -> Decimal:
    info = CATALOG.by_ref(ref)
    assert info is not None
    return info.cost(input=prompt, cached_input=0, output=completion, reasoning=reasoning)


# ------------------------------------------------------------------------------- chat


async def test_plain_completion(gateway: RunningGateway) -> None:
    c = await client(gateway)
    raw = await c.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "user", "content": "hello there"}],
        extra_headers={"FC-Customer": "cus_g"},
    )
    validate(body(raw), "CreateChatCompletionResponse")
    reply = raw.parse()
    assert reply.choices[0].message.content == "Echo: hello there"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (5, 3)

    request = sent(gateway)
    assert request.path == BASE + "gemini-3.8-flash:generateContent"
    assert request.headers["x-goog-api-key"] == "sk-gemini-test"
    assert "authorization" not in request.headers
    assert request.json == {"contents": [{"role": "user", "parts": [{"text": "hello there"}]}]}

    event = await gateway.usage_event(raw.headers["x-request-id"])
    assert (event["provider"], event["status"], event["usage_source"]) == (
        "gemini",
        "ok",
        "upstream",
    )
    assert (event["input_tokens"], event["output_tokens"]) == (5, 3)
    assert event["cost_usd"] == cost(MODEL, 5, 3)


async def test_streamed_completion_with_usage(gateway: RunningGateway) -> None:
    c = await client(gateway)
    raw = await c.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "user", "content": "one two three"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in raw.parse()]
    for chunk in chunks:
        validate(chunk.model_dump(exclude_unset=True), "CreateChatCompletionStreamResponse")
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == "Echo: one two three"
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices]
    assert [f for f in finishes if f] == ["stop"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (6, 4)
    request = sent(gateway)
    assert request.path == BASE + "gemini-3.8-flash:streamGenerateContent"
    assert request.query == "alt=sse"
    event = await gateway.usage_event(raw.headers["x-request-id"])
    assert (event["status"], event["stream"], event["usage_source"]) == ("ok", True, "upstream")
    assert (event["input_tokens"], event["output_tokens"]) == (6, 4)


async def test_stream_without_include_usage_is_still_metered(gateway: RunningGateway) -> None:
    c = await client(gateway)
    raw = await c.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "a b"}], stream=True
    )
    chunks = [chunk async for chunk in raw.parse()]
    assert all(ch.choices for ch in chunks)
    assert all(ch.usage is None for ch in chunks)
    event = await gateway.usage_event(raw.headers["x-request-id"])
    assert (event["usage_source"], event["output_tokens"]) == ("upstream", 3)


async def test_system_and_developer_messages_become_the_system_instruction(
    gateway: RunningGateway,
) -> None:
    c = await client(gateway)
    reply = await c.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Be kind."}]},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "Hello!"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "how"}, {"type": "text", "text": "are you"}],
            },
        ],
    )
    assert reply.choices[0].message.content == "Echo: how are you"
    request = sent(gateway).json
    assert request["systemInstruction"] == {"parts": [{"text": "Be brief."}, {"text": "Be kind."}]}
    assert request["contents"] == [
        {"role": "user", "parts": [{"text": "hi"}]},
        {"role": "model", "parts": [{"text": "Hello!"}]},
        {"role": "user", "parts": [{"text": "how"}, {"text": "are you"}]},
    ]
    # Counted as on the OpenAI wire: 5 messages (3 tokens each) and 9 words.
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == 5 * 3 + 9


async def test_sampling_options_map_to_the_generation_config(gateway: RunningGateway) -> None:
    c = await client(gateway)
    reply = await c.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "one two three four"}],
        temperature=0.3,
        top_p=0.9,
        max_completion_tokens=3,
        stop=["zzz"],
        n=2,
        seed=7,
        presence_penalty=0.5,
        frequency_penalty=0.25,
    )
    assert sent(gateway).json["generationConfig"] == {
        "temperature": 0.3,
        "topP": 0.9,
        "seed": 7,
        "presencePenalty": 0.5,
        "frequencyPenalty": 0.25,
        "maxOutputTokens": 3,
        "stopSequences": ["zzz"],
        "candidateCount": 2,
    }
    assert [ch.index for ch in reply.choices] == [0, 1]
    assert all(ch.finish_reason == "length" for ch in reply.choices)
    assert reply.choices[1].message.content == "Echo: one two"
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 6  # 3 tokens x 2 candidates
    await c.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=9
    )
    assert sent(gateway).json["generationConfig"] == {"maxOutputTokens": 9}


async def test_image_parts(gateway: RunningGateway) -> None:
    c = await client(gateway)
    reply = await c.chat.completions.create(
        model=MODEL,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this"},
                    {"type": "image_url", "image_url": {"url": PIXEL}},
                    {
                        "type": "image_url",
                        "image_url": {"url": "https://example.com/cat.png", "detail": "low"},
                    },
                ],
            }
        ],
    )
    assert reply.choices[0].message.content == "Echo: what is this"
    parts = sent(gateway).json["contents"][0]["parts"]
    assert parts == [
        {"text": "what is this"},
        {"inlineData": {"mimeType": "image/png", "data": PIXEL.partition(",")[2]}},
        {"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/cat.png"}},
    ]
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == 3 + 3 + 2 * 85  # images count as on the OpenAI wire


async def test_json_schema_is_requested_natively(gateway: RunningGateway) -> None:
    c = await client(gateway)
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    }
    reply = await c.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": directive("Where?", reply='{"city": "Paris"}')}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "city", "strict": True, "schema": schema},
        },
    )
    assert json.loads(reply.choices[0].message.content or "") == {"city": "Paris"}
    assert sent(gateway).json["generationConfig"] == {
        "responseMimeType": "application/json",
        "responseJsonSchema": schema,
    }
    await c.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": directive("json", reply='{"a": 1}')}],
        response_format={"type": "json_object"},
    )
    assert sent(gateway).json["generationConfig"] == {"responseMimeType": "application/json"}


@pytest.mark.parametrize(("effort", "budget"), [("low", 1024), ("high", 24576)])
async def test_reasoning_effort_sets_the_thinking_budget_and_bills_thoughts(
    gateway: RunningGateway, effort: str, budget: int
) -> None:
    c = await client(gateway)
    raw = await c.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "user", "content": directive("think", reasoning_tokens=40)}],
        reasoning_effort=effort,  # type: ignore[arg-type]
    )
    assert sent(gateway).json["generationConfig"] == {
        "thinkingConfig": {"thinkingBudget": budget, "includeThoughts": True}
    }
    data = body(raw)
    validate(data, "CreateChatCompletionResponse")
    msg = data["choices"][0]["message"]
    assert msg["content"] == "Echo: think"
    assert msg["reasoning_content"].startswith("**Thinking it over**")
    usage = data["usage"]
    assert (usage["completion_tokens"], usage["completion_tokens_details"]["reasoning_tokens"]) == (
        2 + 40,
        40,
    )
    event = await gateway.usage_event(raw.headers["x-request-id"])
    assert (event["output_tokens"], event["reasoning_tokens"]) == (42, 40)
    assert event["cost_usd"] == cost(MODEL, usage["prompt_tokens"], 42, 40)


async def test_reasoning_effort_none_turns_thinking_off(gateway: RunningGateway) -> None:
    c = await client(gateway)
    await c.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "quick"}],
        reasoning_effort="none",  # type: ignore[arg-type]
    )
    assert sent(gateway).json["generationConfig"] == {
        "thinkingConfig": {"thinkingBudget": 0, "includeThoughts": False}
    }


async def test_streamed_reasoning_and_cached_tokens(gateway: RunningGateway) -> None:
    c = await client(gateway)
    text = directive("a b", reasoning_tokens=5, usage={"cached_tokens": 4})
    stream = await c.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": text}],
        reasoning_effort="medium",
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    deltas = [ch.choices[0].delta.model_dump() for ch in chunks if ch.choices]
    assert any(str(d.get("reasoning_content", "")).startswith("**Thinking") for d in deltas)
    assert "".join(d.get("content") or "" for d in deltas) == "Echo: a b"
    usage = chunks[-1].usage
    assert usage is not None
    assert usage.completion_tokens == 3 + 5
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 5
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 4


# ------------------------------------------------------------------------------ tools


async def test_tools_are_declared_and_calls_come_back_as_tool_calls(
    gateway: RunningGateway,
) -> None:
    c = await client(gateway)
    raw = await c.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[
            {
                "role": "user",
                "content": directive(
                    "weather?", tool_call={"name": "get_weather", "arguments": {"city": "Paris"}}
                ),
            }
        ],
        tools=[WEATHER, TIME],  # type: ignore[list-item]
    )
    request = sent(gateway).json
    assert request["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "The weather in a city.",
                    "parametersJsonSchema": WEATHER["function"]["parameters"],  # type: ignore[index]
                },
                {"name": "get_time", "parametersJsonSchema": {"type": "object"}},
            ]
        }
    ]
    assert request["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}
    data = body(raw)
    validate(data, "CreateChatCompletionResponse")
    choice = raw.parse().choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert not call.id.startswith("call_")  # Gemini 3 names its calls: its id is kept
    assert (call.function.name, json.loads(call.function.arguments)) == (
        "get_weather",
        {"city": "Paris"},
    )
    # Gemini 3 signs its calls; the signature rides on the tool call, as Google's own
    # OpenAI-compatible endpoint sends it.
    signature = data["choices"][0]["message"]["tool_calls"][0]["extra_content"]["google"]
    assert signature["thought_signature"]


@pytest.mark.parametrize(
    ("tool_choice", "expected"),
    [
        ("required", {"mode": "ANY"}),
        ("none", {"mode": "NONE"}),
        ("auto", {"mode": "AUTO"}),
        (
            {"type": "function", "function": {"name": "get_time"}},
            {"mode": "ANY", "allowedFunctionNames": ["get_time"]},
        ),
    ],
)
async def test_tool_choice_maps_to_the_function_calling_mode(
    gateway: RunningGateway, tool_choice: Any, expected: dict[str, Any]
) -> None:
    c = await client(gateway)
    reply = await c.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "what now"}],
        tools=[WEATHER, TIME],  # type: ignore[list-item]
        tool_choice=tool_choice,
    )
    assert sent(gateway).json["toolConfig"] == {"functionCallingConfig": expected}
    calls = reply.choices[0].message.tool_calls
    if expected["mode"] == "ANY":  # the simulated model obeys: it calls the forced function
        assert calls is not None
        assert calls[0].function.name == expected.get("allowedFunctionNames", ["get_weather"])[0]
        assert reply.choices[0].finish_reason == "tool_calls"
    else:
        assert calls is None
        assert reply.choices[0].message.content == "Echo: what now"


async def test_parallel_calls_round_trip_with_ids_and_signatures(gateway: RunningGateway) -> None:
    c = await client(gateway)
    calls = [
        {"name": "get_weather", "arguments": {"city": "Paris"}},
        {"name": "get_weather", "arguments": {"city": "Rome"}},
        {"name": "get_time", "arguments": {}},
    ]
    messages: list[Any] = [{"role": "user", "content": directive("plan my day", tool_call=calls)}]
    first = await c.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER, TIME])  # type: ignore[list-item]
    tool_calls = first.choices[0].message.tool_calls
    assert tool_calls is not None
    assert [(t.function.name, json.loads(t.function.arguments)) for t in tool_calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_weather", {"city": "Rome"}),
        ("get_time", {}),
    ]
    assert len({t.id for t in tool_calls}) == 3
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    messages += reversed(  # answered in any order: sent in the order of the calls
        [
            {"role": "tool", "tool_call_id": t.id, "content": f"result {i}"}
            for i, t in enumerate(tool_calls)
        ]
    )
    second = await c.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER, TIME])  # type: ignore[list-item]
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == "Echo: plan my day"

    model_turn, results = sent(gateway).json["contents"][1:]
    assert model_turn["role"] == "model"
    assert [p["functionCall"] for p in model_turn["parts"]] == [
        {"name": t.function.name, "args": json.loads(t.function.arguments), "id": t.id}
        for t in tool_calls
    ]
    # The signature Gemini put on the first call went back unchanged; the others had none.
    assert model_turn["parts"][0]["thoughtSignature"] not in (None, SKIP_SIGNATURE)
    assert "thoughtSignature" not in model_turn["parts"][1]
    assert results == {
        "role": "user",
        "parts": [
            {
                "functionResponse": {
                    "name": t.function.name,
                    "id": t.id,
                    "response": {"output": f"result {i}"},
                }
            }
            for i, t in enumerate(tool_calls)
        ],
    }
    # Usage counts as on the OpenAI wire: 5 messages, 3 + 2 x 3 words.
    assert second.usage is not None
    assert second.usage.prompt_tokens == 5 * 3 + 3 + 6


async def test_gemini_2_calls_get_generated_ids_that_stay_in_the_gateway(
    gateway: RunningGateway,
) -> None:
    c = await client(gateway)
    calls = [{"name": "get_weather", "arguments": {"city": "Rome"}}, {"name": "get_time"}]
    messages: list[Any] = [{"role": "user", "content": directive("go", tool_call=calls)}]
    first = await c.chat.completions.create(model=LITE, messages=messages, tools=[WEATHER, TIME])  # type: ignore[list-item]
    tool_calls = first.choices[0].message.tool_calls
    assert tool_calls is not None
    assert all(t.id.startswith("call_") for t in tool_calls)  # Gemini 2.5 sends no ids
    assert "extra_content" not in body_of_first(first)  # nor signatures
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    messages += [
        {"role": "tool", "tool_call_id": tool_calls[1].id, "content": "noon"},
        {"role": "tool", "tool_call_id": tool_calls[0].id, "content": "rain"},
    ]
    second = await c.chat.completions.create(model=LITE, messages=messages, tools=[WEATHER, TIME])  # type: ignore[list-item]
    assert second.choices[0].message.content == "Echo: go"
    model_turn, results = sent(gateway).json["contents"][1:]
    assert [p["functionCall"] for p in model_turn["parts"]] == [
        {"name": "get_weather", "args": {"city": "Rome"}},
        {"name": "get_time", "args": {}},
    ]
    assert results["parts"] == [
        {"functionResponse": {"name": "get_weather", "response": {"output": "rain"}}},
        {"functionResponse": {"name": "get_time", "response": {"output": "noon"}}},
    ]


async def test_a_history_without_signatures_gets_the_skip_value(gateway: RunningGateway) -> None:
    """A client that rebuilds the assistant message from id/name/arguments drops the
    signature: Gemini 3 would refuse the call, so the documented skip value stands in."""
    c = await client(gateway)
    ask = directive("weather?", tool_call={"name": "get_weather", "arguments": {"city": "Oslo"}})
    messages: list[Any] = [{"role": "user", "content": ask}]
    first = await c.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER])  # type: ignore[list-item]
    tool_calls = first.choices[0].message.tool_calls
    assert tool_calls is not None
    call = tool_calls[0]
    messages += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.function.name, "arguments": call.function.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    second = await c.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER])  # type: ignore[list-item]
    assert second.choices[0].message.content == "Echo: weather?"
    assert sent(gateway).json["contents"][1]["parts"][0]["thoughtSignature"] == SKIP_SIGNATURE


async def test_a_corrupted_signature_is_refused_by_gemini(gateway: RunningGateway) -> None:
    c = await client(gateway)
    messages: list[Any] = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                    "extra_content": {"google": {"thought_signature": "c2lnbmF0dXJl"}},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    with pytest.raises(openai.BadRequestError) as caught:
        await c.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER])  # type: ignore[list-item]
    assert caught.value.body["code"] == "upstream_rejected_request"  # type: ignore[index]
    assert "Corrupted thought signature" in caught.value.body["message"]  # type: ignore[index]


async def test_a_tool_result_for_no_call_is_refused_before_gemini(gateway: RunningGateway) -> None:
    c = await client(gateway)
    with pytest.raises(openai.BadRequestError) as caught:
        await c.chat.completions.create(
            model=MODEL,
            messages=[
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "tool", "tool_call_id": "call_nope", "content": "x"},
            ],
        )
    assert caught.value.body["param"] == "messages[2].tool_call_id"  # type: ignore[index]
    assert gemini_requests(gateway) == []


async def test_streamed_tool_calls(gateway: RunningGateway) -> None:
    c = await client(gateway)
    calls = [{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "get_time"}]
    stream = await c.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": directive("go", tool_call=calls)}],
        tools=[WEATHER, TIME],  # type: ignore[list-item]
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    for chunk in chunks:
        validate(chunk.model_dump(exclude_unset=True), "CreateChatCompletionStreamResponse")
    deltas = [d for ch in chunks if ch.choices for d in ch.choices[0].delta.tool_calls or ()]
    assert [(d.index, d.function.name, d.function.arguments) for d in deltas if d.function] == [
        (0, "get_weather", '{"city":"Paris"}'),
        (1, "get_time", "{}"),
    ]
    assert all(d.id for d in deltas)
    assert deltas[0].model_dump()["extra_content"]["google"]["thought_signature"]
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices]
    assert [f for f in finishes if f] == ["tool_calls"]
    assert chunks[-1].usage is not None


# ------------------------------------------------------------------- safety, finish reasons


async def test_a_blocked_prompt_is_a_content_filter_finish(gateway: RunningGateway) -> None:
    c = await client(gateway)
    raw = await c.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": directive("bad idea", block=True)}]
    )
    data = body(raw)
    validate(data, "CreateChatCompletionResponse")
    assert data["choices"][0]["message"]["content"] is None
    assert data["choices"][0]["finish_reason"] == "content_filter"
    assert (data["usage"]["prompt_tokens"], data["usage"]["completion_tokens"]) == (5, 0)

    stream = await c.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": directive("bad idea", block="PROHIBITED_CONTENT")}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices]
    assert [f for f in finishes if f] == ["content_filter"]
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == ""
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == 5


@pytest.mark.parametrize(
    ("finish", "expected"),
    [("SAFETY", "content_filter"), ("RECITATION", "content_filter"), ("STOP", "stop")],
)
async def test_gemini_finish_reasons(gateway: RunningGateway, finish: str, expected: str) -> None:
    c = await client(gateway)
    reply = await c.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": directive("x", finish=finish)}]
    )
    assert reply.choices[0].finish_reason == expected
    stream = await c.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": directive("x", finish=finish)}],
        stream=True,
    )
    finishes = [ch.choices[0].finish_reason async for ch in stream if ch.choices]
    assert [f for f in finishes if f] == [expected]


# ------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("status", "http_status", "code", "words"),
    [
        (429, 429, "upstream_rate_limited", "exceeded your current quota"),
        (503, 503, "upstream_unavailable", "overloaded"),
        (500, 503, "upstream_unavailable", "internal error"),
        (400, 400, "upstream_rejected_request", "HTTP 400"),
    ],
)
async def test_upstream_errors_are_mapped(
    gateway: RunningGateway, status: int, http_status: int, code: str, words: str
) -> None:
    key = await gateway.new_key()
    for stream in (False, True):
        gateway.services.upstreams.reset_keys()  # a 429 rests the only key
        text = directive("x", status=status)
        r = await post(
            gateway,
            key,
            {"model": MODEL, "messages": [{"role": "user", "content": text}], "stream": stream},
        )
        assert r.status_code == http_status, r.text
        error = r.json()["error"]
        assert error["code"] == code
        assert words in error["message"]
        if status == 429:
            assert r.headers["retry-after"] == "1"
        event = await gateway.usage_event(error["request_id"])
        assert (event["status"], event["billable_usd"]) == ("upstream_error", 0)


async def test_a_refused_provider_key_is_not_the_callers_mistake(
    database_url: str, redis_url: str, simulator: RunningSimulator, data_dir: Path
) -> None:
    """Google answers a bad key with a 400 API_KEY_INVALID: the caller sees a 502 naming it
    (as a 401 from an OpenAI-wire provider), not a 400 blaming the request."""
    env = {"GEMINI_API_KEY": "sk-bad"}
    async with open_gateway(database_url, redis_url, simulator, data_dir, env) as gw:
        c = gw.openai(await gw.new_key())
        with pytest.raises(openai.APIStatusError) as caught:
            await c.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "x"}]
            )
        assert caught.value.status_code == 502
        assert "API key not valid" in caught.value.body["message"]  # type: ignore[index]


def test_the_stream_decoder_reassembles_reads_and_relays_errors() -> None:
    chunk = {
        "candidates": [{"content": {"parts": [{"text": "Hi"}], "role": "model"}, "index": 0}],
        "usageMetadata": {"promptTokenCount": 4, "totalTokenCount": 4},
    }
    last = {
        "candidates": [{"content": {"parts": [{"text": "!"}]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 2, "totalTokenCount": 6},
    }
    wire = b"".join(b"data: " + orjson.dumps(c) + b"\r\n\r\n" for c in (chunk, last))
    decoder = GeminiStreamDecoder("gemini-3.8-flash")
    out = [p for i in range(0, len(wire), 7) for p in decoder.feed(wire[i : i + 7])]
    assert out[-1] == b"[DONE]"
    chunks = [orjson.loads(p) for p in out[:-1]]
    for c in chunks:
        validate(c, "CreateChatCompletionStreamResponse")
    assert (
        "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
        == "Hi!"
    )
    assert chunks[-1]["usage"]["prompt_tokens"] == 4
    assert chunks[-1]["usage"]["completion_tokens"] == 2
    assert decoder.feed(b"data: " + orjson.dumps(chunk) + b"\r\n\r\n") == []  # after the end

    failing = GeminiStreamDecoder("gemini-3.8-flash")
    error = {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}
    out = failing.feed(
        b"data: " + orjson.dumps(chunk) + b"\r\n\r\ndata: " + orjson.dumps(error) + b"\r\n\r\n"
    )
    assert orjson.loads(out[-1]) == {
        "error": {"message": "The model is overloaded.", "type": "api_error", "code": "UNAVAILABLE"}
    }
    assert b"[DONE]" not in out  # the relay ends the call as an upstream failure


def test_google_error_bodies_are_read() -> None:
    def google(code: int, status: str, message: str, **extra: Any) -> bytes:
        return orjson.dumps(
            {"error": {"code": code, "message": message, "status": status, **extra}}
        )

    retry = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "13s"}]
    quota = ADAPTER.error(
        "gemini", 429, google(429, "RESOURCE_EXHAUSTED", "quota", details=retry), httpx.Headers()
    )
    assert isinstance(quota, RateLimited)
    assert quota.retry_after_seconds == 13  # Google sends RetryInfo, not a Retry-After header
    # The streaming endpoint wraps its error in an array.
    busy = ADAPTER.error(
        "gemini", 503, b"[" + google(503, "UNAVAILABLE", "overloaded") + b"]", httpx.Headers()
    )
    assert isinstance(busy, UpstreamUnavailable)
    assert busy.message == "gemini returned HTTP 503: overloaded"
    region = google(400, "FAILED_PRECONDITION", "User location is not supported for the API use.")
    located = ADAPTER.error("gemini", 400, region, httpx.Headers())
    assert type(located) is UpstreamError  # the operator's setup, not the caller's request
    bad = ADAPTER.error("gemini", 400, google(400, "INVALID_ARGUMENT", "bad"), httpx.Headers())
    assert isinstance(bad, InvalidRequest)


async def test_a_streaming_n_above_one_is_refused(gateway: RunningGateway) -> None:
    c = await client(gateway)
    with pytest.raises(openai.BadRequestError) as caught:
        await c.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], n=2, stream=True
        )
    assert caught.value.body["param"] == "n"  # type: ignore[index]


async def test_client_disconnect_mid_stream_aborts_the_upstream(gateway: RunningGateway) -> None:
    key = await gateway.new_key()
    payload = {
        "model": MODEL,
        "messages": [{"role": "user", "content": directive("a b c d e f g h", chunk_delay=0.2)}],
        "stream": True,
    }
    async with gateway.http.stream(
        "POST", "/v1/chat/completions", json=payload, headers={"Authorization": f"Bearer {key}"}
    ) as response:
        assert response.status_code == 200
        request_id = response.headers["x-request-id"]
        async for part in response.aiter_bytes():
            if b"Echo" in part:
                break
    await gateway.sim.wait_until(lambda s: s.cancelled_streams == 1)
    assert gateway.sim.open_streams == 0
    event = await gateway.usage_event(request_id)
    assert event["status"] == "client_aborted"


async def test_a_stream_cut_by_gemini_is_an_upstream_failure(gateway: RunningGateway) -> None:
    key = await gateway.new_key()
    text = directive("a b c d e f", stream_error_after=2)
    r = await post(
        gateway,
        key,
        {"model": MODEL, "messages": [{"role": "user", "content": text}], "stream": True},
    )
    assert r.status_code == 200
    assert b"[DONE]" not in r.content
    assert b"The provider ended the stream" in r.content
    event = await gateway.usage_event(r.headers["x-request-id"])
    assert event["status"] == "upstream_error"


# -------------------------------------------------------------------------- embeddings


def _unpack(encoded: str) -> list[float]:
    raw = base64.b64decode(encoded)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


async def test_embeddings_float_and_base64(gateway: RunningGateway) -> None:
    c = await client(gateway)
    raw = await c.embeddings.with_raw_response.create(
        model=EMBED, input=["the quick fox", "jumps"], encoding_format="float"
    )
    data = body(raw)
    validate(data, "CreateEmbeddingResponse")
    assert data["model"] == "gemini-embedding-001"
    assert data["usage"] == {"prompt_tokens": 4, "total_tokens": 4}
    floats = [item["embedding"] for item in data["data"]]
    assert [item["index"] for item in data["data"]] == [0, 1]
    assert [len(v) for v in floats] == [3072, 3072]
    assert all(math.isclose(math.hypot(*v), 1.0, rel_tol=1e-5) for v in floats)
    request = sent(gateway)
    assert request.path == BASE + "gemini-embedding-001:batchEmbedContents"
    assert request.headers["x-goog-api-key"] == "sk-gemini-test"
    assert request.json == {
        "requests": [
            {
                "model": "models/gemini-embedding-001",
                "content": {"parts": [{"text": "the quick fox"}]},
            },
            {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "jumps"}]}},
        ]
    }
    event = await gateway.usage_event(raw.headers["x-request-id"])
    assert (event["provider"], event["usage_source"], event["input_tokens"]) == (
        "gemini",
        "upstream",
        4,
    )
    info = CATALOG.by_ref(EMBED)
    assert info is not None
    assert event["cost_usd"] == info.pricing.input * 4 / 1_000_000

    # The SDK's default is base64: the same float32 values, little-endian.
    default = await c.embeddings.with_raw_response.create(
        model=EMBED, input=["the quick fox", "jumps"]
    )
    encoded = body(default)["data"]
    assert all(isinstance(item["embedding"], str) for item in encoded)
    assert [_unpack(item["embedding"]) for item in encoded] == floats
    parsed = default.parse()
    assert parsed.data[0].embedding == floats[0]


async def test_embedding_dimensions_are_normalised(gateway: RunningGateway) -> None:
    c = await client(gateway)
    full = await c.embeddings.create(model=EMBED, input="hello world", encoding_format="float")
    short = await c.embeddings.create(
        model=EMBED, input="hello world", dimensions=256, encoding_format="float"
    )
    assert sent(gateway).json["requests"][0]["outputDimensionality"] == 256
    vector = short.data[0].embedding
    assert len(vector) == 256
    # Gemini truncates without renormalising; the gateway answers a unit vector, as OpenAI.
    assert math.isclose(math.hypot(*vector), 1.0, rel_tol=1e-5)
    prefix = full.data[0].embedding[:256]
    norm = math.hypot(*prefix)
    assert all(
        math.isclose(a, b / norm, rel_tol=1e-4, abs_tol=1e-6)
        for a, b in zip(vector, prefix, strict=True)
    )


async def test_embeddings_over_a_hundred_inputs_go_in_batches(gateway: RunningGateway) -> None:
    c = await client(gateway)
    inputs = [f"item number {i}" for i in range(150)]
    reply = await c.embeddings.create(model=EMBED, input=inputs, dimensions=8)
    assert [d.index for d in reply.data] == list(range(150))
    assert reply.usage.prompt_tokens == 3 * 150
    batches = gemini_requests(gateway)
    assert [len(r.json["requests"]) for r in batches] == [100, 50]


async def test_token_array_inputs_are_refused(gateway: RunningGateway) -> None:
    c = await client(gateway)
    for tokens in ([1, 2, 3], [[1, 2], [3]]):
        with pytest.raises(openai.BadRequestError) as caught:
            await c.embeddings.create(model=EMBED, input=tokens)
        assert caught.value.body["param"] == "input"  # type: ignore[index]
        assert "text only" in caught.value.body["message"]  # type: ignore[index]
    assert gemini_requests(gateway) == []


async def test_embedding_errors_are_mapped(gateway: RunningGateway) -> None:
    c = await client(gateway)
    with pytest.raises(openai.InternalServerError) as caught:
        await c.embeddings.create(model=EMBED, input=directive("x", status=503))
    assert caught.value.status_code == 503
    with pytest.raises(openai.BadRequestError):
        await c.embeddings.create(model=EMBED, input="x", dimensions=5000)
