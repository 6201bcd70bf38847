"""Cohere (v2 chat and embed) through the gateway, with the official openai SDK."""

from __future__ import annotations

import base64
import json
import struct
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import openai
import orjson
import pytest
import trio

from ringside.catalog import load_catalog
from ringside.errors import InvalidRequest
from ringside.upstream import cohere
from tests.gateway import RunningGateway, open_gateway
from tests.simulator.app import Received
from tests.simulator.openapi import validate
from tests.simulator.server import RunningSimulator

CATALOG = load_catalog()
MODEL = "fc:cohere/command-a-03-2025"
REASONING = "fc:cohere/command-a-reasoning-08-2025"
EMBED = "fc:cohere/embed-v4.0"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
TIME = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
}


def sent(gateway: RunningGateway, path: str = "/cohere/v2/chat") -> list[Received]:
    return [r for r in gateway.sim.received if r.provider == "cohere" and r.path == path]


def cost(ref: str, prompt: int, completion: int) -> Decimal:
    info = CATALOG.by_ref(ref)
    assert info is not None
    return info.cost(input=prompt, cached_input=0, output=completion, reasoning=0)


async def test_plain_completion(gateway: RunningGateway) -> None:
    client = gateway.openai(await gateway.new_key())
    raw = await client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello there"},
        ],
    )
    completion = raw.parse()
    validate(orjson.loads(raw.http_response.content), "CreateChatCompletionResponse")
    assert completion.choices[0].message.content == "Echo: hello there"
    assert completion.choices[0].finish_reason == "stop"
    assert raw.headers["x-ringside-model-used"] == MODEL

    request = sent(gateway)[-1]
    assert request.headers["authorization"] == "Bearer sk-cohere-test"
    assert request.json == {
        "model": "command-a-03-2025",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello there"},
        ],
        "stream": False,
    }
    # The billed units, not Cohere's token count (which adds its prompt template).
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 2 + 2 + 3 * 2
    assert completion.usage.completion_tokens == 3
    event = await gateway.usage_event(raw.headers["x-request-id"])
    assert (event["provider"], event["status"], event["usage_source"]) == (
        "cohere",
        "ok",
        "upstream",
    )
    assert (event["input_tokens"], event["output_tokens"]) == (10, 3)
    assert event["cost_usd"] == cost(MODEL, 10, 3)


async def test_request_parameters_map_to_cohere_names(gateway: RunningGateway) -> None:
    client = gateway.openai(await gateway.new_key())
    completion = await client.chat.completions.create(
        model=REASONING,
        messages=[
            {"role": "developer", "content": [{"type": "text", "text": "rules"}]},
            {"role": "user", "content": [{"type": "text", "text": "look at this"}]},
        ],
        temperature=0.5,
        top_p=1.0,
        max_completion_tokens=50,
        stop=["END"],
        seed=7,
        frequency_penalty=-1.0,
        presence_penalty=1.5,
        reasoning_effort="low",
        user="u-1",
        extra_body={"k": 40},
    )
    assert completion.choices[0].message.content == "Echo: look at this"
    message = completion.choices[0].message.model_dump()
    assert message["reasoning_content"] == "Let me think about the answer."
    body = sent(gateway)[-1].json
    assert body == {
        "model": "command-a-reasoning-08-2025",
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "rules"}]},
            {"role": "user", "content": [{"type": "text", "text": "look at this"}]},
        ],
        "stream": False,
        "temperature": 0.5,
        "p": 0.99,
        "frequency_penalty": 0.0,
        "presence_penalty": 1.0,
        "max_tokens": 50,
        "stop_sequences": ["END"],
        "seed": 7,
        "thinking": {"type": "enabled", "token_budget": 2048},
        "k": 40,
    }
    await client.chat.completions.create(
        model=REASONING, messages=[{"role": "user", "content": "hi"}], reasoning_effort="none"
    )
    assert sent(gateway)[-1].json["thinking"] == {"type": "disabled"}


async def test_stop_and_max_tokens_finish_reasons(gateway: RunningGateway) -> None:
    client = gateway.openai(await gateway.new_key())
    cut = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "one two three four"}], max_tokens=2
    )
    assert (cut.choices[0].message.content, cut.choices[0].finish_reason) == ("Echo: one", "length")
    stopped = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "one two three"}], stop="three"
    )
    assert stopped.choices[0].message.content == "Echo: one two"
    assert stopped.choices[0].finish_reason == "stop"


async def test_json_schema_is_native(gateway: RunningGateway) -> None:
    client = gateway.openai(await gateway.new_key())
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    ask = 'json please #sim{"reply": "{\\"a\\": \\"x\\"}"}'
    reply = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": ask}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "thing", "schema": schema, "strict": True},
        },
    )
    assert json.loads(reply.choices[0].message.content or "") == {"a": "x"}
    assert sent(gateway)[-1].json["response_format"] == {
        "type": "json_object",
        "json_schema": schema,
    }
    await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": ask}],
        response_format={"type": "json_object"},
    )
    assert sent(gateway)[-1].json["response_format"] == {"type": "json_object"}
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "json please"}],
            tools=[WEATHER],
            response_format={"type": "json_object"},
        )
    assert info.value.code == "unsupported_combination"


async def test_streamed_completion(gateway: RunningGateway) -> None:
    client = gateway.openai(await gateway.new_key())
    raw = await client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "user", "content": "stream me please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage, finish = "", None, None
    async for chunk in raw.parse():
        validate(chunk.model_dump(exclude_unset=True), "CreateChatCompletionStreamResponse")
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage is not None:
            usage = chunk.usage
    assert (text, finish) == ("Echo: stream me please", "stop")
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (3 + 3, 4)
    request = sent(gateway)[-1]
    assert request.json["stream"] is True
    assert request.headers["accept"] == "text/event-stream"
    event = await gateway.usage_event(raw.headers["x-request-id"])
    assert (event["status"], event["usage_source"]) == ("ok", "upstream")
    assert (event["input_tokens"], event["output_tokens"]) == (6, 4)


async def test_stream_wire_has_openai_framing_without_usage_unless_asked(
    gateway: RunningGateway,
) -> None:
    key = await gateway.new_key()
    body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "a b"}]}
    r = await gateway.http.post(
        "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
    )
    assert r.status_code == 200
    events = [e for e in r.text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    assert all(c["choices"] for c in chunks)  # no usage-only chunk: it was not asked for
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    event = await gateway.usage_event(r.headers["x-request-id"])
    assert event["usage_source"] == "upstream"


async def test_tools_auto_with_tool_plan_and_ids(gateway: RunningGateway) -> None:
    client = gateway.openai(await gateway.new_key())
    completion = await client.chat.completions.create(
        model=MODEL,
        messages=[
            {
                "role": "user",
                "content": 'weather? #sim{"tool_call": {"name": "get_weather", '
                '"arguments": {"city": "Paris"}}}',
            }
        ],
        tools=[{**WEATHER, "function": {**WEATHER["function"], "strict": True}}, TIME],
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls or []
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"})
    ]
    assert calls[0].id.startswith("call_")
    assert choice.message.model_dump()["reasoning_content"] == "I will call get_weather."
    body = sent(gateway)[-1].json
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": WEATHER["function"]["parameters"],
                "description": "Weather of a city",
            },
        },
        {
            "type": "function",
            "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
        },
    ]
    assert body["strict_tools"] is True
    assert "tool_choice" not in body


async def test_tool_choice_required_none_and_forced(gateway: RunningGateway) -> None:
    client = gateway.openai(await gateway.new_key())
    messages: list[Any] = [{"role": "user", "content": "what now"}]
    required = await client.chat.completions.create(
        model=MODEL, messages=messages, tools=[WEATHER, TIME], tool_choice="required"
    )
    assert sent(gateway)[-1].json["tool_choice"] == "REQUIRED"
    assert [c.function.name for c in required.choices[0].message.tool_calls or []] == [
        "get_weather"
    ]
    forced = await client.chat.completions.create(
        model=MODEL,
        messages=messages,
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    body = sent(gateway)[-1].json
    assert body["tool_choice"] == "REQUIRED"
    assert [t["function"]["name"] for t in body["tools"]] == ["get_time"]
    assert [c.function.name for c in forced.choices[0].message.tool_calls or []] == ["get_time"]
    none = await client.chat.completions.create(
        model=MODEL, messages=messages, tools=[WEATHER], tool_choice="none"
    )
    assert sent(gateway)[-1].json["tool_choice"] == "NONE"
    assert none.choices[0].message.content == "Echo: what now"
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(
            model=MODEL,
            messages=messages,
            tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "missing"}},
        )


async def test_parallel_tool_calls_and_the_second_turn(gateway: RunningGateway) -> None:
    client = gateway.openai(await gateway.new_key())
    ask = (
        'both #sim{"tool_call": [{"name": "get_weather", "arguments": {"city": "Oslo"}}, '
        '{"name": "get_time", "arguments": {}}]}'
    )
    messages: list[Any] = [{"role": "user", "content": ask}]
    first = await client.chat.completions.create(
        model=MODEL, messages=messages, tools=[WEATHER, TIME]
    )
    calls = first.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]
    assert len({c.id for c in calls}) == 2
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    messages += [
        {"role": "tool", "tool_call_id": calls[0].id, "content": "sunny"},
        {"role": "tool", "tool_call_id": calls[1].id, "content": "noon"},
    ]
    second = await client.chat.completions.create(
        model=MODEL, messages=messages, tools=[WEATHER, TIME]
    )
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == "Echo: both"
    native = sent(gateway)[-1].json["messages"]
    assert native[1] == {
        "role": "assistant",
        "tool_calls": [
            {
                "id": calls[0].id,
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
            },
            {
                "id": calls[1].id,
                "type": "function",
                "function": {"name": "get_time", "arguments": "{}"},
            },
        ],
        "tool_plan": "I will call get_weather, get_time.",
    }
    assert native[2] == {"role": "tool", "tool_call_id": calls[0].id, "content": "sunny"}
    # An unanswered id is refused by Cohere (the simulator checks the pairing as Cohere does).
    messages[-1] = {"role": "tool", "tool_call_id": "call_unknown", "content": "noon"}
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER, TIME])
    assert "does not match a tool call" in info.value.message


async def test_streamed_tool_calls(gateway: RunningGateway) -> None:
    client = gateway.openai(await gateway.new_key())
    ask = (
        'go #sim{"tool_call": [{"name": "get_weather", "arguments": {"city": "Rio de Janeiro"}}, '
        '{"name": "get_time", "arguments": {"zone": "UTC"}}]}'
    )
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": ask}],
        tools=[WEATHER, TIME],
        stream=True,
        stream_options={"include_usage": True},
    )
    calls: dict[int, dict[str, str]] = {}
    reasoning, finish = "", None
    async for chunk in stream:
        validate(chunk.model_dump(exclude_unset=True), "CreateChatCompletionStreamResponse")
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        reasoning += delta.model_dump().get("reasoning_content") or ""
        finish = chunk.choices[0].finish_reason or finish
        for call in delta.tool_calls or []:
            entry = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
            entry["id"] += call.id or ""
            if call.function is not None:
                entry["name"] += call.function.name or ""
                entry["arguments"] += call.function.arguments or ""
    assert finish == "tool_calls"
    assert reasoning.strip() == "I will call get_weather, get_time."
    assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == [
        ("get_weather", {"city": "Rio de Janeiro"}),
        ("get_time", {"zone": "UTC"}),
    ]
    assert all(c["id"].startswith("call_") for c in calls.values())


async def test_upstream_errors_map_to_the_envelope(gateway: RunningGateway) -> None:
    client = gateway.openai(await gateway.new_key())
    with pytest.raises(openai.BadRequestError) as bad:
        await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": 'x #sim{"status": 400}'}]
        )
    assert bad.value.code == "upstream_rejected_request"
    assert "Simulated upstream error (HTTP 400)." in bad.value.message
    with pytest.raises(openai.InternalServerError) as down:
        await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": 'x #sim{"status": 500}'}]
        )
    assert down.value.status_code == 503
    with pytest.raises(openai.BadRequestError) as roles:
        await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}],  # type: ignore[list-item]
        )
    assert roles.value.code == "unsupported_content"
    with pytest.raises(openai.InternalServerError) as failed:
        await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": 'x #sim{"cohere_finish": "ERROR"}'}]
        )
    assert "simulated generation failure" in failed.value.message


async def test_rate_limit_is_retried_then_falls_back(gateway: RunningGateway) -> None:
    client = gateway.openai(await gateway.new_key())
    raw = await client.chat.completions.with_raw_response.create(
        model=[MODEL, "fc:openai/gpt-4o-mini"],  # type: ignore[arg-type]
        messages=[{"role": "user", "content": 'hi #sim{"cohere_status": 429}'}],
    )
    assert raw.headers["x-ringside-fallback-triggered"] == "true"
    assert raw.headers["x-ringside-model-used"] == "fc:openai/gpt-4o-mini"
    assert raw.parse().choices[0].message.content == "Echo: hi"
    assert len(sent(gateway)) == 3  # the first try and two retries after Retry-After


async def test_a_refused_key(
    database_url: str, redis_url: str, simulator: RunningSimulator, tmp_path: Path
) -> None:
    env = {"COHERE_API_KEY": "sk-bad"}
    async with open_gateway(database_url, redis_url, simulator, tmp_path, env) as gw:
        client = gw.openai(await gw.new_key())
        with pytest.raises(openai.APIStatusError) as info:
            await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}]
            )
        assert info.value.status_code == 502
        assert "invalid api token" in info.value.message


async def test_stream_failures(gateway: RunningGateway) -> None:
    key = await gateway.new_key()
    for directive in ('{"stream_error_after": 1}', '{"cohere_finish": "ERROR"}'):
        body = {
            "model": MODEL,
            "stream": True,
            "messages": [{"role": "user", "content": f"one two three #sim{directive}"}],
        }
        r = await gateway.http.post(
            "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
        )
        assert "data: [DONE]" not in r.text
        last = json.loads(r.text.strip().split("\n\n")[-1][6:])
        assert last["error"]["code"] == "upstream_unavailable"
        event = await gateway.usage_event(r.headers["x-request-id"])
        assert event["status"] == "upstream_error"


async def test_client_disconnect_mid_stream_aborts_upstream(gateway: RunningGateway) -> None:
    key = await gateway.new_key()
    words = " ".join(f"w{i}" for i in range(20))
    body = {
        "model": MODEL,
        "stream": True,
        "messages": [{"role": "user", "content": words + ' #sim{"chunk_delay": 0.2}'}],
    }
    async with gateway.http.stream(
        "POST", "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
    ) as r:
        request_id = r.headers["x-request-id"]
        seen = b""
        async for part in r.aiter_bytes():
            seen += part
            if seen.count(b"\n\n") >= 3:
                break
    with trio.fail_after(1.0):
        await gateway.sim.wait_until(lambda s: s.cancelled_streams == 1)
    event = await gateway.usage_event(request_id)
    assert event["status"] == "client_aborted"
    assert event["provider"] == "cohere"


def floats(embedding: Any) -> list[float]:
    raw = base64.b64decode(embedding)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


async def test_embeddings_float_base64_and_dimensions(gateway: RunningGateway) -> None:
    client = gateway.openai(await gateway.new_key())
    raw = await client.embeddings.with_raw_response.create(
        model=EMBED, input=["alpha beta", "gamma"], encoding_format="float"
    )
    validate(orjson.loads(raw.http_response.content), "CreateEmbeddingResponse")
    result = raw.parse()
    assert [len(d.embedding) for d in result.data] == [1536, 1536]
    assert result.usage.prompt_tokens == 3
    assert sent(gateway, "/cohere/v2/embed")[-1].json == {
        "model": "embed-v4.0",
        "texts": ["alpha beta", "gamma"],
        "input_type": "search_document",
        "embedding_types": ["float"],
    }
    event = await gateway.usage_event(raw.headers["x-request-id"])
    assert (event["provider"], event["usage_source"], event["input_tokens"]) == (
        "cohere",
        "upstream",
        3,
    )
    assert event["cost_usd"] == cost(EMBED, 3, 0)

    # The SDK's default asks for base64 and decodes it: the same floats.
    default = await client.embeddings.create(model=EMBED, input=["alpha beta", "gamma"])
    assert [d.embedding for d in default.data] == [d.embedding for d in result.data]
    r = await gateway.http.post(
        "/v1/embeddings",
        json={"model": EMBED, "input": "gamma", "encoding_format": "base64"},
        headers={"Authorization": f"Bearer {client.api_key}"},
    )
    assert floats(r.json()["data"][0]["embedding"]) == result.data[1].embedding

    short = await client.embeddings.create(
        model=EMBED, input="alpha beta", dimensions=256, extra_body={"input_type": "search_query"}
    )
    assert len(short.data[0].embedding) == 256
    request = sent(gateway, "/cohere/v2/embed")[-1].json
    assert (request["output_dimension"], request["input_type"]) == (256, "search_query")
    with pytest.raises(openai.BadRequestError) as bad:
        await client.embeddings.create(model=EMBED, input="x", dimensions=300)
    assert "output_dimension" in bad.value.message


async def test_embeddings_batches_of_96_and_token_inputs(gateway: RunningGateway) -> None:
    client = gateway.openai(await gateway.new_key())
    texts = [f"text {i}" for i in range(200)]
    result = await client.embeddings.create(model=EMBED, input=texts, encoding_format="float")
    assert [d.index for d in result.data] == list(range(200))
    assert result.usage.prompt_tokens == 400
    assert [len(r.json["texts"]) for r in sent(gateway, "/cohere/v2/embed")] == [96, 96, 8]
    one = await client.embeddings.create(model=EMBED, input="text 150", encoding_format="float")
    assert one.data[0].embedding == result.data[150].embedding
    with pytest.raises(openai.BadRequestError) as info:
        await client.embeddings.create(model=EMBED, input=[[1, 2, 3]])
    assert info.value.code == "token_input_unsupported"


def test_image_parts_and_roles_map_to_cohere_parts() -> None:
    # No catalog Cohere model takes images, so this is the adapter's mapping alone.
    x: Any = SimpleNamespace(model="command-a-vision-07-2025")
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,AA", "detail": "low"},
                    },
                ],
            },
            {"role": "assistant", "content": None, "tool_calls": []},
        ]
    }
    native = cohere.chat_body(x, body, True)
    assert native["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {
                    "type": "image_url",
                    "image_url": {"url": "data:image/png;base64,AA", "detail": "low"},
                },
            ],
        },
        {"role": "assistant", "content": ""},
    ]
    with pytest.raises(InvalidRequest):
        cohere.chat_body(x, {"messages": [{"role": "function", "content": "x"}]}, False)
    with pytest.raises(InvalidRequest):
        cohere.chat_body(x, {"messages": [{"role": "user", "content": "x"}], "n": 2}, False)


async def test_the_simulator_refuses_what_cohere_refuses(simulator: RunningSimulator) -> None:
    url = simulator.base_url("cohere") + "/v2/chat"
    ok = {"model": "command-a-03-2025", "messages": [{"role": "user", "content": "hi"}]}
    auth = {"Authorization": "Bearer sk-x"}
    async with httpx.AsyncClient() as http:
        assert (await http.post(url, json=ok, headers=auth)).status_code == 200
        r = await http.post(url, json=ok)
        assert (r.status_code, r.json()["message"]) == (401, "no api key supplied")
        for bad, words in [
            ({**ok, "top_p": 0.5}, "unknown field: top_p"),
            ({**ok, "p": 1.0}, "p must be between"),
            ({**ok, "tool_choice": "REQUIRED"}, "tool_choice requires tools"),
            ({**ok, "messages": [{"role": "tool", "content": "x"}]}, "tool_call_id is required"),
            ({**ok, "messages": []}, "messages is required"),
        ]:
            r = await http.post(url, json=bad, headers=auth)
            assert r.status_code == 400
            assert words in r.json()["message"]
