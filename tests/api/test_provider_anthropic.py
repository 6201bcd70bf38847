"""Anthropic through the gateway: the official openai SDK on one side, the simulated Messages
API (tests/simulator/anthropic_wire.py) on the other. Each test checks what the client got
(OpenAI's shapes, validated against OpenAI's schemas) and what Anthropic was sent."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import orjson
import pytest

from ringside.catalog import load_catalog
from ringside.errors import InvalidRequest
from ringside.upstream.anthropic import StreamDecoder
from tests.gateway import RunningGateway
from tests.simulator.app import Received
from tests.simulator.openapi import validate
from tests.simulator.sse import sse_chunks, streamed_text

CATALOG = load_catalog()
MODEL = "fc:anthropic/claude-sonnet-5"
UPSTREAM_MODEL = "claude-sonnet-5"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}


def sent(gateway: RunningGateway) -> Received:
    """The last request Anthropic received."""
    requests = [r for r in gateway.sim.received if r.provider == "anthropic"]
    assert requests, "Anthropic received nothing"
    return requests[-1]


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def directive(text: str, **d: Any) -> str:
    return f"{text} #sim{json.dumps(d)}"


async def post(gateway: RunningGateway, key: str, body: dict[str, Any]) -> httpx.Response:
    return await gateway.http.post(
        "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
    )


async def client(gateway: RunningGateway) -> openai.AsyncOpenAI:
    return gateway.openai(await gateway.new_key())


async def test_plain_completion(gateway: RunningGateway) -> None:
    key = await gateway.new_key()
    raw = await gateway.openai(key).chat.completions.with_raw_response.create(
        model=MODEL, messages=user("hello there"), extra_headers={"FC-Customer": "cus_7"}
    )
    completion = raw.parse()

    assert completion.choices[0].message.content == "Echo: hello there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == UPSTREAM_MODEL
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (5, 3)
    assert raw.headers["x-ringside-model-used"] == MODEL
    assert raw.headers["x-ringside-fallback-triggered"] == "false"
    validate(orjson.loads(raw.http_response.content), "CreateChatCompletionResponse")

    request = sent(gateway)
    assert (request.method, request.path) == ("POST", "/anthropic/v1/messages")
    assert request.headers["x-api-key"] == "sk-anthropic-test"
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert request.headers["content-type"] == "application/json"
    assert "authorization" not in request.headers
    assert key not in str(request.headers)
    assert key not in request.body.decode()
    assert request.json == {
        "model": UPSTREAM_MODEL,
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hello there"}]}],
    }

    event = await gateway.usage_event(raw.headers["x-request-id"])
    assert (event["provider"], event["status"], event["usage_source"]) == (
        "anthropic",
        "ok",
        "upstream",
    )
    assert (event["input_tokens"], event["output_tokens"]) == (5, 3)
    assert event["customer_ref"] == "cus_7"
    info = CATALOG.by_ref(MODEL)
    assert info is not None
    assert event["cost_usd"] == info.cost(input=5, cached_input=0, output=3, reasoning=0)


async def test_request_parameters_and_system_prompt(gateway: RunningGateway) -> None:
    c = await client(gateway)
    completion = await c.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "developer", "content": [{"type": "text", "text": "no fluff"}]},
            {"role": "user", "content": "first"},
            {"role": "user", "content": "second one"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "last words"},
        ],
        temperature=0.3,
        top_p=0.9,
        max_completion_tokens=50,
        stop=["\n\n", "END"],
        user="end-user-9",
        seed=3,
    )
    assert completion.choices[0].message.content == "Echo: last words"
    body = sent(gateway).json
    assert body["system"] == "be brief\n\nno fluff"
    assert body["messages"] == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "first"}, {"type": "text", "text": "second one"}],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
        {"role": "user", "content": [{"type": "text", "text": "last words"}]},
    ]
    assert body["max_tokens"] == 50
    assert body["temperature"] == 0.3
    assert body["top_p"] == 0.9
    assert body["stop_sequences"] == ["END"]  # Anthropic refuses blank stop sequences
    assert body["metadata"] == {"user_id": "end-user-9"}
    assert "seed" not in body
    assert "user" not in body
    assert "stop" not in body

    # OpenAI's temperature goes to 2, Anthropic's to 1; the deprecated max_tokens is read too.
    await c.chat.completions.create(model=MODEL, messages=user("x"), temperature=1.7, max_tokens=9)
    assert (sent(gateway).json["temperature"], sent(gateway).json["max_tokens"]) == (1.0, 9)


async def test_stop_sequence_cuts_the_reply(gateway: RunningGateway) -> None:
    c = await client(gateway)
    completion = await c.chat.completions.create(
        model=MODEL, messages=user("alpha beta gamma"), stop=["gamma"]
    )
    assert completion.choices[0].message.content == "Echo: alpha beta"
    assert completion.choices[0].finish_reason == "stop"
    length = await c.chat.completions.create(model=MODEL, messages=user("a b c d"), max_tokens=2)
    assert length.choices[0].finish_reason == "length"
    assert length.choices[0].message.content == "Echo: a"


async def test_n_above_one_is_refused(gateway: RunningGateway) -> None:
    c = await client(gateway)
    before = len(gateway.sim.received)
    with pytest.raises(openai.BadRequestError) as caught:
        await c.chat.completions.create(model=MODEL, messages=user("x"), n=2)
    assert caught.value.body["param"] == "n"
    assert len(gateway.sim.received) == before  # never sent


async def test_streamed_completion(gateway: RunningGateway) -> None:
    key = await gateway.new_key()
    raw = await gateway.openai(key).chat.completions.with_raw_response.create(
        model=MODEL,
        messages=user("one two three"),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in raw.parse()]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: one two three"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == []
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (6, 4)
    assert sent(gateway).json["stream"] is True
    event = await gateway.usage_event(raw.headers["x-request-id"])
    assert (event["stream"], event["status"], event["usage_source"]) == (True, "ok", "upstream")
    assert (event["input_tokens"], event["output_tokens"]) == (6, 4)

    # The raw SSE: OpenAI's framing, every chunk valid, no usage chunk when not asked for.
    r = await post(gateway, key, {"model": MODEL, "messages": user("a b"), "stream": True})
    assert r.headers["content-type"].startswith("text/event-stream")
    chunks_json = sse_chunks(r.content)
    assert streamed_text(chunks_json) == "Echo: a b"
    assert all(c["choices"] for c in chunks_json)


async def test_tool_choice_variants(gateway: RunningGateway) -> None:
    c = await client(gateway)
    sent_choice = {}
    for choice in (
        "auto",
        "none",
        "required",
        {"type": "function", "function": {"name": "get_time"}},
    ):
        await c.chat.completions.create(
            model=MODEL, messages=user("hi"), tools=[WEATHER, TIME], tool_choice=choice
        )
        sent_choice[json.dumps(choice)] = sent(gateway).json["tool_choice"]
    assert list(sent_choice.values()) == [
        {"type": "auto"},
        {"type": "none"},
        {"type": "any"},
        {"type": "tool", "name": "get_time"},
    ]
    assert sent(gateway).json["tools"] == [
        {
            "name": "get_weather",
            "description": "The weather in a city.",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
        {"name": "get_time", "input_schema": {"type": "object"}},
    ]
    await c.chat.completions.create(
        model=MODEL, messages=user("hi"), tools=[WEATHER], parallel_tool_calls=False
    )
    assert sent(gateway).json["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    await c.chat.completions.create(model=MODEL, messages=user("no tools"))
    assert "tools" not in sent(gateway).json
    assert "tool_choice" not in sent(gateway).json


async def test_parallel_tool_calls_and_their_results(gateway: RunningGateway) -> None:
    c = await client(gateway)
    ask = directive(
        "weather and time?",
        tool_call=[
            {"name": "get_weather", "arguments": {"city": "Paris"}},
            {"name": "get_time", "arguments": {}},
        ],
    )
    raw = await c.chat.completions.with_raw_response.create(
        model=MODEL, messages=user(ask), tools=[WEATHER, TIME]
    )
    validate(orjson.loads(raw.http_response.content), "CreateChatCompletionResponse")
    first = raw.parse()
    message = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls"
    assert message.content is None
    calls = message.tool_calls
    assert [t.function.name for t in calls] == ["get_weather", "get_time"]
    assert orjson.loads(calls[0].function.arguments) == {"city": "Paris"}
    assert calls[1].function.arguments == "{}"
    assert all(t.id.startswith("toolu_") for t in calls)

    second = await c.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "user", "content": ask},
            message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": calls[0].id, "content": "22C"},
            {
                "role": "tool",
                "tool_call_id": calls[1].id,
                "content": [{"type": "text", "text": "noon"}],
            },
        ],
        tools=[WEATHER, TIME],
    )
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == "Echo: weather and time?"
    turns = sent(gateway).json["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert turns[1]["content"] == [
        {"type": "tool_use", "id": calls[0].id, "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": calls[1].id, "name": "get_time", "input": {}},
    ]
    assert turns[2]["content"] == [
        {
            "type": "tool_result",
            "tool_use_id": calls[0].id,
            "content": [{"type": "text", "text": "22C"}],
        },
        {
            "type": "tool_result",
            "tool_use_id": calls[1].id,
            "content": [{"type": "text", "text": "noon"}],
        },
    ]


async def test_streamed_tool_calls(gateway: RunningGateway) -> None:
    key = await gateway.new_key()
    ask = directive(
        "both",
        tool_call=[
            {"name": "get_weather", "arguments": {"city": "Lyon"}},
            {"name": "get_time", "arguments": {}},
        ],
    )
    body = {"model": MODEL, "messages": user(ask), "tools": [WEATHER, TIME], "stream": True}
    chunks = sse_chunks((await post(gateway, key, body)).content)
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for tc in chunk["choices"][0]["delta"].get("tool_calls") or ():
            call = calls.setdefault(tc["index"], {"id": "", "name": "", "arguments": ""})
            call["id"] += tc.get("id") or ""
            call["name"] += tc["function"].get("name") or ""
            call["arguments"] += tc["function"].get("arguments") or ""
    assert sorted(calls) == [0, 1]
    assert [calls[i]["name"] for i in (0, 1)] == ["get_weather", "get_time"]
    assert orjson.loads(calls[0]["arguments"]) == {"city": "Lyon"}
    assert calls[1]["arguments"] == "{}"
    assert all(calls[i]["id"].startswith("toolu_") for i in (0, 1))
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_image_parts(gateway: RunningGateway) -> None:
    c = await client(gateway)
    completion = await c.chat.completions.create(
        model=MODEL,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                ],
            }
        ],
    )
    assert completion.usage.prompt_tokens == 3 + 3 + 2 * 85
    assert sent(gateway).json["messages"][0]["content"] == [
        {"type": "text", "text": "what is this"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


async def test_cache_control_passes_verbatim_and_cached_tokens_are_billed(
    gateway: RunningGateway,
) -> None:
    key = await gateway.new_key()
    ephemeral = {"type": "ephemeral", "ttl": "1h"}
    long_text = "policy " * 20
    text = directive("question", usage={"cached_tokens": 20}, cache_creation_tokens=3)
    raw = await gateway.openai(key).chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[
            {
                "role": "system",
                "content": [
                    {"type": "text", "text": "You are terse."},
                    {"type": "text", "text": long_text, "cache_control": ephemeral},
                ],
            },
            {
                "role": "user",
                "content": [{"type": "text", "text": text, "cache_control": {"type": "ephemeral"}}],
            },
        ],
    )
    body = sent(gateway).json
    assert body["system"] == [
        {"type": "text", "text": "You are terse."},
        {"type": "text", "text": long_text, "cache_control": ephemeral},
    ]
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": text, "cache_control": {"type": "ephemeral"}}
    ]
    usage = raw.parse().usage
    # prompt: 2 system blocks + 1 user message (3 each) and 3 + 20 + 1 words
    assert usage.prompt_tokens == 9 + 24
    assert usage.prompt_tokens_details.cached_tokens == 20
    data = orjson.loads(raw.http_response.content)
    validate(data, "CreateChatCompletionResponse")
    assert data["usage"]["prompt_tokens_details"]["cache_write_tokens"] == 3
    event = await gateway.usage_event(raw.headers["x-request-id"])
    assert (event["input_tokens"], event["cached_input_tokens"]) == (33, 20)
    info = CATALOG.by_ref(MODEL)
    assert info is not None
    assert info.pricing.cache_write is not None
    output = usage.completion_tokens
    expected = info.cost(input=33, cached_input=20, output=output, reasoning=0, cache_write=3)
    assert event["cost_usd"] == expected
    uncached = info.cost(input=33, cached_input=0, output=output, reasoning=0)
    assert expected < uncached


async def test_reasoning_effort_becomes_thinking(gateway: RunningGateway) -> None:
    key = await gateway.new_key()
    raw = await gateway.openai(key).chat.completions.with_raw_response.create(
        model=MODEL,
        messages=user(directive("think", reasoning_tokens=7)),
        reasoning_effort="low",
        max_completion_tokens=3000,
    )
    body = sent(gateway).json
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert body["max_tokens"] == 3000  # the client's limit covers thinking too, as at OpenAI
    assert "reasoning_effort" not in body
    data = orjson.loads(raw.http_response.content)
    validate(data, "CreateChatCompletionResponse")
    message = data["choices"][0]["message"]
    assert message["content"] == "Echo: think"
    assert message["reasoning_content"] == "Thinking" + " more" * 6
    usage = raw.parse().usage
    assert usage.completion_tokens == 2 + 7
    assert usage.completion_tokens_details.reasoning_tokens == 7
    event = await gateway.usage_event(raw.headers["x-request-id"])
    assert (event["output_tokens"], event["reasoning_tokens"]) == (9, 7)

    # A client's own `thinking` object passes verbatim (and wins over reasoning_effort).
    c = gateway.openai(key)
    thinking = {"type": "enabled", "budget_tokens": 1500}
    stream = await c.chat.completions.create(
        model=MODEL,
        messages=user(directive("deep", reasoning_tokens=3)),
        reasoning_effort="high",
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"thinking": thinking},
    )
    chunks = [chunk async for chunk in stream]
    assert sent(gateway).json["thinking"] == thinking
    assert sent(gateway).json["max_tokens"] == 4096
    reasoning = "".join(
        (c.choices[0].delta.model_extra or {}).get("reasoning_content") or ""
        for c in chunks
        if c.choices
    )
    assert reasoning == "Thinking more more"
    assert chunks[-1].usage.completion_tokens_details.reasoning_tokens == 3


async def test_json_schema_uses_native_structured_outputs(gateway: RunningGateway) -> None:
    c = await client(gateway)
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string"}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    completion = await c.chat.completions.create(
        model=MODEL,
        messages=user(directive("answer", reply='{"answer": "42"}')),
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": schema, "strict": True},
        },
    )
    assert orjson.loads(completion.choices[0].message.content) == {"answer": "42"}
    assert sent(gateway).json["output_config"] == {
        "format": {"type": "json_schema", "schema": schema}
    }
    assert "anthropic-beta" not in sent(gateway).headers

    # No native JSON mode: json_object is not sent (the gateway instructs and validates).
    plain = await c.chat.completions.create(
        model=MODEL,
        messages=user(directive("json please", reply='{"ok": true}')),
        response_format={"type": "json_object"},
    )
    assert orjson.loads(plain.choices[0].message.content) == {"ok": True}
    assert "output_config" not in sent(gateway).json


@pytest.mark.parametrize(
    ("status", "http_status", "code"),
    [
        (529, 503, "upstream_unavailable"),
        (500, 503, "upstream_unavailable"),
        (429, 429, "upstream_rate_limited"),
        (400, 400, "upstream_rejected_request"),
    ],
)
async def test_upstream_errors_are_mapped(
    gateway: RunningGateway, status: int, http_status: int, code: str
) -> None:
    key = await gateway.new_key()
    for stream in (False, True):
        gateway.services.upstreams.reset_keys()  # a 429 rests the only key
        body = {"model": MODEL, "messages": user(directive("x", status=status)), "stream": stream}
        r = await post(gateway, key, body)
        assert r.status_code == http_status, r.text
        error = r.json()["error"]
        assert error["code"] == code
        if status == 529:
            assert "Overloaded" in error["message"]
        if status == 429:
            assert r.headers["retry-after"] == "1"
        event = await gateway.usage_event(error["request_id"])
        assert (event["status"], event["http_status"]) == ("upstream_error", http_status)


async def test_anthropic_validation_errors_reach_the_client(gateway: RunningGateway) -> None:
    """A tool result that answers no call is refused by Anthropic: the client sees its words."""
    c = await client(gateway)
    with pytest.raises(openai.BadRequestError) as caught:
        await c.chat.completions.create(
            model=MODEL,
            messages=[
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "tool", "tool_call_id": "toolu_nope", "content": "x"},
            ],
        )
    assert caught.value.body["code"] == "upstream_rejected_request"
    assert "unexpected `tool_use_id`" in caught.value.body["message"]


async def test_client_disconnect_mid_stream_aborts_the_upstream(gateway: RunningGateway) -> None:
    key = await gateway.new_key()
    body = {
        "model": MODEL,
        "messages": user(directive("a b c d e f g h", chunk_delay=0.2)),
        "stream": True,
    }
    async with gateway.http.stream(
        "POST", "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
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


async def test_error_event_mid_stream(gateway: RunningGateway) -> None:
    key = await gateway.new_key()
    text = directive("one two three", error_event_after=2)
    r = await post(gateway, key, {"model": MODEL, "messages": user(text), "stream": True})
    assert r.status_code == 200
    events = [e for e in r.content.split(b"\n\n") if e]
    assert b"data: [DONE]" not in events
    *chunks, last = [orjson.loads(e.removeprefix(b"data: ")) for e in events]
    for chunk in chunks:
        validate(chunk, "CreateChatCompletionStreamResponse")
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "Echo: one"
    assert last["error"]["code"] == "upstream_unavailable"
    event = await gateway.usage_event(last["error"]["request_id"])
    assert event["status"] == "upstream_error"


async def test_embeddings_are_unsupported(gateway: RunningGateway) -> None:
    c = await client(gateway)
    with pytest.raises(openai.BadRequestError) as caught:
        await c.embeddings.create(model=MODEL, input="hello")
    assert caught.value.body["param"] == "model"  # the catalog says: not an embeddings model
    # The adapter refuses too, should a caller reach it.
    x = gateway.services.upstreams.exchange("anthropic", UPSTREAM_MODEL)
    with pytest.raises(InvalidRequest) as refused:
        await x.adapter.embed(x, {"model": MODEL, "input": "hello"})
    assert (refused.value.code, refused.value.param) == ("embeddings_unsupported", "model")


async def test_same_content_and_usage_as_an_openai_wire_provider(gateway: RunningGateway) -> None:
    """The cross-provider contract: one conversation (system prompt, tools, tool results),
    the same answer and the same counts from Anthropic as from OpenAI."""
    c = await client(gateway)
    ask = directive(
        "weather in Paris?", tool_call={"name": "get_weather", "arguments": {"city": "Paris"}}
    )
    answers = {}
    for model in (MODEL, "fc:openai/gpt-4o-mini"):
        first = await c.chat.completions.create(
            model=model,
            messages=[{"role": "system", "content": "be brief"}, *user(ask)],
            tools=[WEATHER],
        )
        call = first.choices[0].message.tool_calls[0]
        second = await c.chat.completions.create(
            model=model,
            messages=[
                {"role": "system", "content": "be brief"},
                *user(ask),
                first.choices[0].message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": call.id, "content": "sunny, 22C"},
            ],
            tools=[WEATHER],
        )
        answers[model] = [
            (
                r.choices[0].message.content,
                r.choices[0].finish_reason,
                r.usage.prompt_tokens,
                r.usage.completion_tokens,
            )
            for r in (first, second)
        ]
    assert answers[MODEL] == answers["fc:openai/gpt-4o-mini"]


def _sse(*events: tuple[str, dict[str, Any]]) -> bytes:
    return b"".join(
        f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n".encode()
        for name, data in events
    )


def _decoded(decoder: StreamDecoder, raw: bytes) -> list[bytes]:
    # One byte a read: events split anywhere must decode the same.
    return [p for i in range(len(raw)) for p in decoder.feed(raw[i : i + 1])]


def test_decoder_maps_thinking_tools_and_cumulative_usage() -> None:
    raw = _sse(
        (
            "message_start",
            {
                "message": {
                    "model": "claude-x",
                    "usage": {"input_tokens": 10, "cache_read_input_tokens": 4, "output_tokens": 1},
                }
            },
        ),
        (
            "content_block_start",
            {"index": 0, "content_block": {"type": "thinking", "thinking": ""}},
        ),
        (
            "content_block_delta",
            {"index": 0, "delta": {"type": "thinking_delta", "thinking": "abcdefgh"}},
        ),
        (
            "content_block_delta",
            {"index": 0, "delta": {"type": "signature_delta", "signature": "s"}},
        ),
        ("content_block_stop", {"index": 0}),
        ("ping", {}),
        (
            "content_block_start",
            {
                "index": 1,
                "content_block": {"type": "tool_use", "id": "toolu_a", "name": "f", "input": {}},
            },
        ),
        (
            "content_block_delta",
            {"index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}},
        ),
        ("content_block_stop", {"index": 1}),
        (
            "message_delta",
            {
                "delta": {"stop_reason": "tool_use"},
                "usage": {"output_tokens": 30, "input_tokens": 12},
            },
        ),
        ("message_stop", {}),
    )
    payloads = _decoded(StreamDecoder("claude"), raw)
    assert payloads[-1] == b"[DONE]"
    chunks = [orjson.loads(p) for p in payloads[:-1]]
    for chunk in chunks:
        validate(chunk, "CreateChatCompletionStreamResponse")
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[1] == {"reasoning_content": "abcdefgh"}
    assert deltas[2]["tool_calls"][0]["id"] == "toolu_a"
    assert deltas[3] == {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    usage = chunks[-1]["usage"]
    assert chunks[-1]["model"] == "claude-x"
    assert (usage["prompt_tokens"], usage["prompt_tokens_details"]["cached_tokens"]) == (16, 4)
    assert usage["completion_tokens"] == 30
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 2  # 8 characters, estimated


def test_decoder_stops_at_an_error_event() -> None:
    raw = _sse(
        (
            "message_start",
            {"message": {"model": "m", "usage": {"input_tokens": 1, "output_tokens": 1}}},
        ),
        ("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
        ("error", {"error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ("message_stop", {}),
    )
    chunks = [orjson.loads(p) for p in StreamDecoder("m").feed(raw)]
    assert [c["choices"][0]["delta"].get("content") for c in chunks] == ["", "Hi"]


@pytest.mark.parametrize(
    ("limit", "effort", "budget", "max_tokens"),
    [
        (1500, "medium", 1499, 1500),  # the budget shrinks under the client's limit
        (500, "low", None, 500),  # too small for Anthropic's minimum budget: no thinking
        (None, "medium", 8192, 8192 + 4096),  # no limit: the default allowance on top
    ],
)
async def test_the_clients_limit_caps_thinking(
    gateway: RunningGateway, limit: int | None, effort: str, budget: int | None, max_tokens: int
) -> None:
    """The call was reserved for the client's limit: thinking never takes Anthropic past it."""
    client = gateway.openai(await gateway.new_key())
    extra = {} if limit is None else {"max_completion_tokens": limit}
    await client.chat.completions.create(
        model=MODEL,
        messages=user("think"),
        reasoning_effort=effort,  # type: ignore[arg-type]
        **extra,  # type: ignore[arg-type]
    )
    body = sent(gateway).json
    assert body["max_tokens"] == max_tokens
    if budget is None:
        assert "thinking" not in body
    else:
        assert body["thinking"] == {"type": "enabled", "budget_tokens": budget}
