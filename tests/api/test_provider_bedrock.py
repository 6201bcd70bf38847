"""Amazon Bedrock through the gateway and the official openai SDK: Converse, ConverseStream and
embeddings, SigV4-signed requests checked by the simulator."""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
import trio

from ringside.upstream import bedrock
from ringside.upstream.providers import provider_configs
from tests.gateway import AWS_ENV, RunningGateway, open_gateway
from tests.simulator.openapi import validate
from tests.simulator.server import RunningSimulator

CLAUDE = "fc:bedrock/anthropic.claude-sonnet-5"
NOVA = "fc:bedrock/amazon.nova-pro-v1:0"
TITAN = "fc:bedrock/amazon.titan-embed-text-v2:0"
COHERE = "fc:bedrock/cohere.embed-v4:0"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
CLOCK = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
# A 1x1 transparent PNG.
PNG = (
    "iVBORw0KGGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)


def _sent(gateway: RunningGateway) -> Any:
    return gateway.sim.received[-1]


@pytest.mark.parametrize("model", [CLAUDE, NOVA])
async def test_plain_completion_is_signed_and_metered(gateway: RunningGateway, model: str) -> None:
    client = gateway.openai(await gateway.new_key())
    raw = await client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "hello there"}], max_tokens=50
    )
    validate(orjson.loads(raw.http_response.content), "CreateChatCompletionResponse")
    reply = raw.parse()
    assert reply.choices[0].message.content == "Echo: hello there"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (5, 3)

    sent = _sent(gateway)
    model_id = model.removeprefix("fc:bedrock/")
    assert sent.path == f"/bedrock/model/{model_id}/converse"
    assert sent.headers["authorization"].startswith(
        f"AWS4-HMAC-SHA256 Credential={AWS_ENV['AWS_ACCESS_KEY_ID']}/"
    )
    assert "/us-east-1/bedrock/aws4_request" in sent.headers["authorization"]
    assert sent.json == {
        "messages": [{"role": "user", "content": [{"text": "hello there"}]}],
        "inferenceConfig": {"maxTokens": 50},
    }
    event = await gateway.usage_event(raw.headers["x-request-id"])
    assert event["provider"] == "bedrock"
    assert event["usage_source"] == "upstream"
    assert (event["input_tokens"], event["output_tokens"]) == (5, 3)


async def test_same_usage_as_an_openai_wire_provider(gateway: RunningGateway) -> None:
    client = gateway.openai(await gateway.new_key())
    messages: Any = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "one two three"},
    ]
    ours = await client.chat.completions.create(model=NOVA, messages=messages)
    theirs = await client.chat.completions.create(model="fc:openai/gpt-4o-mini", messages=messages)
    assert ours.choices[0].message.content == theirs.choices[0].message.content
    assert ours.usage is not None
    assert theirs.usage is not None
    assert ours.usage.prompt_tokens == theirs.usage.prompt_tokens
    assert ours.usage.completion_tokens == theirs.usage.completion_tokens
    assert gateway.sim.received[0].json["system"] == [{"text": "be brief"}]


async def test_streamed_completion(gateway: RunningGateway) -> None:
    client = gateway.openai(await gateway.new_key())
    raw = await client.chat.completions.with_raw_response.create(
        model=CLAUDE,
        messages=[{"role": "user", "content": "stream me this"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finishes, usage = [], [], None
    async for chunk in raw.parse():
        validate(chunk.model_dump(exclude_unset=True), "CreateChatCompletionStreamResponse")
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
        if chunk.usage is not None:
            usage = chunk.usage
    assert "".join(text) == "Echo: stream me this"
    assert finishes == ["stop"]
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (6, 4)
    sent = _sent(gateway)
    assert sent.path == "/bedrock/model/anthropic.claude-sonnet-5/converse-stream"
    assert sent.headers["accept"] == "application/vnd.amazon.eventstream"
    event = await gateway.usage_event(raw.headers["x-request-id"])
    assert event["status"] == "ok"
    assert (event["input_tokens"], event["output_tokens"]) == (6, 4)


async def test_stream_without_include_usage_hides_the_usage_chunk(gateway: RunningGateway) -> None:
    client = gateway.openai(await gateway.new_key())
    stream = await client.chat.completions.create(
        model=NOVA, messages=[{"role": "user", "content": "hi"}], stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert all(chunk.choices for chunk in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Echo: hi"


@pytest.mark.parametrize(
    ("tool_choice", "wire"),
    [
        ("auto", {"auto": {}}),
        ("required", {"any": {}}),
        ({"type": "function", "function": {"name": "get_time"}}, {"tool": {"name": "get_time"}}),
    ],
)
async def test_tool_choice(gateway: RunningGateway, tool_choice: Any, wire: Any) -> None:
    client = gateway.openai(await gateway.new_key())
    reply = await client.chat.completions.create(
        model=CLAUDE,
        messages=[{"role": "user", "content": "what now?"}],
        tools=[WEATHER, CLOCK],  # type: ignore[list-item]
        tool_choice=tool_choice,
    )
    sent = _sent(gateway).json["toolConfig"]
    assert sent["toolChoice"] == wire
    assert sent["tools"][0] == {
        "toolSpec": {
            "name": "get_weather",
            "description": "The weather in a city.",
            "inputSchema": {"json": WEATHER["function"]["parameters"]},  # type: ignore[index]
        }
    }
    choice = reply.choices[0]
    if tool_choice == "auto":
        assert choice.message.content == "Echo: what now?"
        return
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    expected = "get_weather" if tool_choice == "required" else "get_time"
    assert [c.function.name for c in choice.message.tool_calls] == [expected]


async def test_tool_choice_none_leaves_the_tools_out(gateway: RunningGateway) -> None:
    client = gateway.openai(await gateway.new_key())
    await client.chat.completions.create(
        model=NOVA,
        messages=[{"role": "user", "content": "x"}],
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="none",
    )
    assert "toolConfig" not in _sent(gateway).json


async def test_parallel_tool_calls_and_the_second_turn(gateway: RunningGateway) -> None:
    client = gateway.openai(await gateway.new_key())
    ask = (
        "weather and time? #sim{"
        '"tool_call": [{"name": "get_weather", "arguments": {"city": "Paris"}},'
        ' {"name": "get_time", "arguments": {}}]}'
    )
    messages: list[Any] = [{"role": "user", "content": ask}]
    first = await client.chat.completions.create(
        model=CLAUDE,
        messages=messages,
        tools=[WEATHER, CLOCK],  # type: ignore[list-item]
    )
    calls = first.choices[0].message.tool_calls
    assert calls is not None
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {}),
    ]
    assert all(c.id.startswith("tooluse_") for c in calls)
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": calls[0].id, "content": "21 C"},
        {"role": "tool", "tool_call_id": calls[1].id, "content": "noon"},
    ]
    second = await client.chat.completions.create(
        model=CLAUDE,
        messages=messages,
        tools=[WEATHER, CLOCK],  # type: ignore[list-item]
    )
    assert second.choices[0].message.content == "Echo: weather and time?"
    turns = _sent(gateway).json["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert [b["toolUse"]["toolUseId"] for b in turns[1]["content"]] == [c.id for c in calls]
    assert turns[1]["content"][0]["toolUse"]["input"] == {"city": "Paris"}
    assert turns[2]["content"] == [
        {"toolResult": {"toolUseId": calls[0].id, "content": [{"text": "21 C"}]}},
        {"toolResult": {"toolUseId": calls[1].id, "content": [{"text": "noon"}]}},
    ]


async def test_streamed_tool_call(gateway: RunningGateway) -> None:
    client = gateway.openai(await gateway.new_key())
    stream = await client.chat.completions.create(
        model=NOVA,
        messages=[
            {"role": "user", "content": 'w #sim{"tool_call": {"arguments": {"city": "Oslo"}}}'}
        ],
        tools=[WEATHER],  # type: ignore[list-item]
        stream=True,
    )
    arguments, names, finishes = [], [], []
    async for chunk in stream:
        validate(chunk.model_dump(exclude_unset=True), "CreateChatCompletionStreamResponse")
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or ():
                if call.function and call.function.name:
                    names.append(call.function.name)
                arguments.append((call.function.arguments or "") if call.function else "")
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
    assert names == ["get_weather"]
    assert json.loads("".join(arguments)) == {"city": "Oslo"}
    assert finishes == ["tool_calls"]


async def test_image_parts_go_inline(gateway: RunningGateway) -> None:
    client = gateway.openai(await gateway.new_key())
    reply = await client.chat.completions.create(
        model=CLAUDE,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                ],
            }
        ],
    )
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == 3 + 3 + 85  # the OpenAI simulator's image cost
    content = _sent(gateway).json["messages"][0]["content"]
    assert content == [
        {"text": "what is this"},
        {"image": {"format": "png", "source": {"bytes": PNG}}},
    ]


async def test_remote_image_urls_are_refused(gateway: RunningGateway) -> None:
    client = gateway.openai(await gateway.new_key())
    part = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(
            model=CLAUDE, messages=[{"role": "user", "content": [part]}]
        )
    assert "base64 data URLs" in info.value.message
    assert not gateway.sim.received


async def test_json_schema_uses_native_structured_output(gateway: RunningGateway) -> None:
    client = gateway.openai(await gateway.new_key())
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    }
    reply = await client.chat.completions.create(
        model=CLAUDE,
        messages=[{"role": "user", "content": 'Where? #sim{"reply": "{\\"city\\": \\"Paris\\"}"}'}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "city", "strict": True, "schema": schema},
        },
    )
    assert json.loads(reply.choices[0].message.content or "") == {"city": "Paris"}
    text_format = _sent(gateway).json["outputConfig"]["textFormat"]
    assert text_format["type"] == "json_schema"
    assert text_format["structure"]["jsonSchema"]["name"] == "city"
    assert json.loads(text_format["structure"]["jsonSchema"]["schema"]) == schema


@pytest.mark.parametrize("stream", [False, True])
async def test_reasoning_effort_enables_claude_thinking(
    gateway: RunningGateway, stream: bool
) -> None:
    key = await gateway.new_key()
    body = {
        "model": CLAUDE,
        "messages": [{"role": "user", "content": "think"}],
        "reasoning_effort": "medium",
        "max_completion_tokens": 8000,
        "stream": stream,
    }
    r = await gateway.http.post(
        "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
    )
    assert r.status_code == 200, r.text
    if stream:
        chunks = [orjson.loads(line[6:]) for line in r.content.split(b"\n\n")[:-2]]
        deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
        reasoning = "".join(d.get("reasoning_content", "") for d in deltas)
        content = "".join(d.get("content") or "" for d in deltas)
    else:
        message = r.json()["choices"][0]["message"]
        reasoning, content = message["reasoning_content"], message["content"]
    assert reasoning == "Considering the request."
    assert content == "Echo: think"
    sent = _sent(gateway).json
    assert sent["additionalModelRequestFields"] == {
        "thinking": {"type": "enabled", "budget_tokens": 4096}
    }
    assert sent["inferenceConfig"] == {"maxTokens": 8000}


async def test_throttling_is_retried(gateway: RunningGateway) -> None:
    client = gateway.openai(await gateway.new_key())
    text = 'hi #sim{"flaky": {"id": "bedrock-throttle", "times": 1, "status": 429}}'
    reply = await client.chat.completions.create(
        model=NOVA, messages=[{"role": "user", "content": text}]
    )
    assert reply.choices[0].message.content == "Echo: hi"
    assert len(gateway.sim.received) == 2
    # Each attempt is signed when it is built; the simulator checked both signatures.
    assert all("Signature=" in r.headers["authorization"] for r in gateway.sim.received)


async def test_throttling_that_persists_is_a_429(gateway: RunningGateway) -> None:
    client = gateway.openai(await gateway.new_key())
    with pytest.raises(openai.RateLimitError) as info:
        await client.chat.completions.create(
            model=NOVA, messages=[{"role": "user", "content": 'x #sim{"status": 429}'}]
        )
    assert info.value.code == "upstream_rate_limited"
    assert "ThrottlingException" in info.value.message
    assert len(gateway.sim.received) == 3  # the first try and two retries


async def test_validation_errors_are_the_callers(gateway: RunningGateway) -> None:
    client = gateway.openai(await gateway.new_key())
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(
            model=NOVA,
            messages=[
                {"role": "assistant", "content": "I speak first"},
                {"role": "user", "content": "hi"},
            ],
        )
    assert info.value.code == "upstream_rejected_request"
    assert "ValidationException" in info.value.message
    assert "must start with a user message" in info.value.message


async def test_exception_mid_stream_is_an_incomplete_stream(gateway: RunningGateway) -> None:
    key = await gateway.new_key()
    body = {
        "model": NOVA,
        "stream": True,
        "messages": [
            {"role": "user", "content": 'a b c #sim{"stream_exception": "throttlingException"}'}
        ],
    }
    async with gateway.http.stream(
        "POST", "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
    ) as r:
        request_id = r.headers["x-request-id"]
        raw = b"".join([part async for part in r.aiter_bytes()])
    payloads = [line[6:] for line in raw.split(b"\n\n") if line.startswith(b"data: ")]
    assert b"[DONE]" not in payloads
    assert orjson.loads(payloads[-1])["error"]["code"] == "upstream_unavailable"
    assert orjson.loads(payloads[1])["choices"][0]["delta"]["content"] == "Echo:"
    event = await gateway.usage_event(request_id)
    assert event["status"] == "upstream_error"


async def test_client_disconnect_aborts_the_upstream_stream(gateway: RunningGateway) -> None:
    key = await gateway.new_key()
    body = {
        "model": CLAUDE,
        "stream": True,
        "messages": [{"role": "user", "content": 'a b c d e f g h #sim{"chunk_delay": 0.2}'}],
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


async def test_a_wrong_secret_is_refused_by_the_signature_check(
    database_url: str, redis_url: str, simulator: RunningSimulator, data_dir: Path
) -> None:
    env = {"AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    async with open_gateway(database_url, redis_url, simulator, data_dir, env) as gw:
        client = gw.openai(await gw.new_key())
        with pytest.raises(openai.APIStatusError) as info:
            await client.chat.completions.create(
                model=NOVA, messages=[{"role": "user", "content": "hi"}]
            )
        assert info.value.status_code == 502
        assert info.value.code == "upstream_error"
        assert "InvalidSignatureException" in info.value.message
        assert "signature we calculated does not match" in info.value.message
        assert len(gw.sim.received) == 1  # not retried: a 403 is not transient


async def test_missing_credentials_are_no_active_provider_keys(
    database_url: str, redis_url: str, simulator: RunningSimulator, data_dir: Path
) -> None:
    env = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}
    async with open_gateway(database_url, redis_url, simulator, data_dir, env) as gw:
        client = gw.openai(await gw.new_key())
        with pytest.raises(openai.APIStatusError) as info:
            await client.chat.completions.create(
                model=NOVA, messages=[{"role": "user", "content": "hi"}]
            )
        assert info.value.status_code == 503
        assert info.value.code == "no_active_provider_keys"
        assert "AWS_ACCESS_KEY_ID" in info.value.message
        assert not gw.sim.received


def _floats(item: Any) -> list[float]:
    if isinstance(item.embedding, str):
        raw = base64.b64decode(item.embedding)
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    return list(item.embedding)


@pytest.mark.parametrize("model", [TITAN, COHERE])
async def test_embeddings_float_and_base64(gateway: RunningGateway, model: str) -> None:
    client = gateway.openai(await gateway.new_key())
    inputs = ["the first text", "a second", "third one here now"]
    floats = await client.embeddings.create(
        model=model, input=inputs, encoding_format="float", dimensions=256
    )
    validate(floats.model_dump(), "CreateEmbeddingResponse")
    assert [len(d.embedding) for d in floats.data] == [256, 256, 256]
    assert floats.usage.prompt_tokens == 3 + 2 + 4
    raw = await client.embeddings.with_raw_response.create(
        model=model, input=inputs, dimensions=256
    )
    body = orjson.loads(raw.http_response.content)
    assert all(isinstance(d["embedding"], str) for d in body["data"])
    # OpenAI's schema types ``embedding`` as floats only: check the decoded body.
    decoded = [
        {**d, "embedding": _floats(item)}
        for d, item in zip(body["data"], raw.parse().data, strict=True)
    ]
    validate({**body, "data": decoded}, "CreateEmbeddingResponse")
    packed = raw.parse()  # the SDK asks for base64 and decodes it
    assert [_floats(d) for d in packed.data] == [_floats(d) for d in floats.data]
    assert len({tuple(_floats(d)) for d in floats.data}) == 3
    event = await gateway.usage_event(raw.headers["x-request-id"])
    assert (event["provider"], event["input_tokens"]) == ("bedrock", 9)
    invokes = [r for r in gateway.sim.received if r.path.endswith("/invoke")]
    if model == TITAN:
        assert len(invokes) == 6  # one request per input
        assert {r.json["inputText"] for r in invokes} == set(inputs)
        assert all(r.json["dimensions"] == 256 for r in invokes)
    else:
        assert len(invokes) == 2
        assert invokes[0].json == {
            "texts": inputs,
            "input_type": "search_document",
            "embedding_types": ["float"],
            "output_dimension": 256,
        }
    assert invokes[0].path == f"/bedrock/model/{model.removeprefix('fc:bedrock/')}/invoke"


async def test_embeddings_of_token_ids_are_refused(gateway: RunningGateway) -> None:
    client = gateway.openai(await gateway.new_key())
    with pytest.raises(openai.BadRequestError) as info:
        await client.embeddings.create(model=TITAN, input=[[1, 2, 3]])
    assert "token ids" in info.value.message
    assert not gateway.sim.received


async def test_an_embedding_error_fails_the_whole_call(gateway: RunningGateway) -> None:
    client = gateway.openai(await gateway.new_key())
    with pytest.raises(openai.BadRequestError) as info:
        await client.embeddings.create(
            model=TITAN, input=["fine", 'broken #sim{"status": 400}', "fine too"]
        )
    assert "ValidationException" in info.value.message


def test_the_default_base_url_follows_the_region() -> None:
    cfg = provider_configs({"AWS_REGION": "eu-west-3"})["bedrock"]
    assert bedrock.base_url(cfg) == "https://bedrock-runtime.eu-west-3.amazonaws.com"
    cfg = provider_configs({"AWS_REGION": "eu-west-3", "BEDROCK_REGION": "ap-south-1"})["bedrock"]
    assert bedrock.region(cfg) == "ap-south-1"
    cfg = provider_configs({"BEDROCK_BASE_URL": "http://proxy:1/", "AWS_REGION": "eu-west-3"})
    assert bedrock.base_url(cfg["bedrock"]) == "http://proxy:1"
    assert bedrock.base_url(provider_configs({})["bedrock"]) == (
        "https://bedrock-runtime.us-east-1.amazonaws.com"
    )
    assert bedrock.model_url(
        provider_configs({})["bedrock"], "amazon.nova-pro-v1:0", "converse"
    ) == ("https://bedrock-runtime.us-east-1.amazonaws.com/model/amazon.nova-pro-v1%3A0/converse")
