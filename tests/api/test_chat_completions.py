"""Chat completions through the official openai SDK, on every OpenAI-wire provider."""

from __future__ import annotations

from decimal import Decimal

import openai
import orjson
import pytest

from ringside.catalog import load_catalog
from tests.gateway import SIMULATED, RunningGateway
from tests.simulator.openapi import validate

CATALOG = load_catalog()


def chat_model(provider: str, capability: str = "chat") -> str:
    """A catalog chat model of the provider with ``capability`` (ollama takes any local
    model); "" when the provider has none."""
    if provider == "ollama":
        return "fc:ollama/llama3.2"
    models = [
        m
        for m in CATALOG.all()
        if m.provider == provider and {"chat", capability} <= m.capabilities
    ]
    assert models or capability != "chat", f"catalog has no chat model for {provider}"
    return models[0].ref if models else ""


def expected_cost(ref: str, prompt: int, completion: int) -> Decimal:
    info = CATALOG.by_ref(ref)
    if info is None:  # ollama: local and free
        return Decimal(0)
    return info.cost(input=prompt, cached_input=0, output=completion, reasoning=0)


@pytest.mark.parametrize("provider", SIMULATED)
async def test_plain_completion_every_provider(gateway: RunningGateway, provider: str) -> None:
    key = await gateway.new_key()
    client = gateway.openai(key)
    model = chat_model(provider)

    raw = await client.chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "user", "content": "hello there"}],
        extra_headers={"FC-Customer": "cus_42"},
    )
    completion = raw.parse()

    assert completion.choices[0].message.content == "Echo: hello there"
    assert raw.headers["x-ringside-model-resolved"] == model
    assert raw.headers["x-ringside-model-used"] == model
    assert raw.headers["x-ringside-fallback-triggered"] == "false"
    request_id = raw.headers["x-request-id"]
    validate(orjson.loads(raw.http_response.content), "CreateChatCompletionResponse")

    sent = gateway.sim.chats(provider)[-1]
    header = "api-key" if provider == "azure_openai" else "authorization"
    if provider == "ollama":
        assert header not in sent.headers  # no key configured, none sent
    else:
        expected = f"sk-{provider}-test"
        assert sent.headers[header] in (expected, f"Bearer {expected}")

    event = await gateway.usage_event(request_id)
    assert event["provider"] == provider
    assert event["model_resolved"] == model
    assert event["customer_ref"] == "cus_42"
    assert event["status"] == "ok"
    assert event["usage_source"] == "upstream"
    assert event["input_tokens"] == completion.usage.prompt_tokens
    assert event["output_tokens"] == completion.usage.completion_tokens
    assert event["cost_usd"] == expected_cost(
        model, completion.usage.prompt_tokens, completion.usage.completion_tokens
    )


@pytest.mark.parametrize("provider", SIMULATED)
async def test_streamed_completion_every_provider(gateway: RunningGateway, provider: str) -> None:
    key = await gateway.new_key()
    client = gateway.openai(key)
    model = chat_model(provider)

    raw = await client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "one two three"}], stream=True
    )
    request_id = raw.headers["x-request-id"]
    chunks = [chunk async for chunk in raw.parse()]

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: one two three"
    assert chunks[-1].choices[0].finish_reason == "stop"
    # The client did not ask for usage, so the usage-only chunk is not relayed ...
    assert all(c.choices for c in chunks)
    # ... but the gateway asked the provider for it and metered exact figures.
    event = await gateway.usage_event(request_id)
    assert event["status"] == "ok"
    assert event["stream"] is True
    assert event["usage_source"] == "upstream"
    assert event["output_tokens"] == 4
    assert event["provider"] == provider


@pytest.mark.parametrize("provider", SIMULATED)
async def test_tool_calling_every_provider(gateway: RunningGateway, provider: str) -> None:
    client = gateway.openai(await gateway.new_key())
    model = chat_model(provider, "tools")
    if not model:  # no model of the provider calls tools (perplexity): refused, never dropped
        with pytest.raises(openai.BadRequestError) as info:
            await client.chat.completions.create(
                model=chat_model(provider),
                messages=[{"role": "user", "content": "weather?"}],
                tools=[{"type": "function", "function": {"name": "get_weather"}}],
            )
        assert info.value.code == "tools_unsupported"
        assert gateway.sim.chats() == []
        return
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    completion = await client.chat.completions.create(
        model=model,
        messages=[
            {
                "role": "user",
                "content": 'weather? #sim{"tool_call": {"name": '
                '"get_weather", "arguments": {"city": "Paris"}}}',
            }
        ],
        tools=tools,
        tool_choice="required",
    )
    call = completion.choices[0].message.tool_calls[0]
    assert completion.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    assert orjson.loads(call.function.arguments) == {"city": "Paris"}

    stream = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "weather?"}],
        tools=tools,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        stream=True,
    )
    names, finish = [], None
    async for chunk in stream:
        for choice in chunk.choices:
            for tc in choice.delta.tool_calls or ():
                if tc.function and tc.function.name:
                    names.append(tc.function.name)
            finish = choice.finish_reason or finish
    assert names == ["get_weather"]
    assert finish == "tool_calls"


async def test_stream_usage_chunk_when_asked(gateway: RunningGateway) -> None:
    client = gateway.openai(await gateway.new_key())
    stream = await client.chat.completions.create(
        model="fc:openai/gpt-4o-mini",
        messages=[{"role": "user", "content": "a b"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 3


async def test_raw_stream_is_openai_sse_framing(gateway: RunningGateway) -> None:
    key = await gateway.new_key()
    async with gateway.http.stream(
        "POST",
        "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={
            "model": "fc:groq/" + chat_model("groq").split("/", 1)[1],
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
        },
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        body = b"".join([part async for part in response.aiter_bytes()])
    events = body.split(b"\n\n")
    assert events[-1] == b""
    assert events[-2] == b"data: [DONE]"
    for event in events[:-2]:
        assert event.startswith(b"data: {")
        validate(orjson.loads(event[6:]), "CreateChatCompletionStreamResponse")


async def test_request_forwarding(gateway: RunningGateway) -> None:
    """Only the model is rewritten; unknown fields pass; keys go only where they belong."""
    key = await gateway.new_key()
    client = gateway.openai(key)
    await client.chat.completions.create(
        model="fc:openai/gpt-4o-mini",
        messages=[
            {"role": "system", "content": "be brief"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            },
        ],
        temperature=0.3,
        top_p=0.9,
        max_tokens=50,
        stop=["\n\n"],
        seed=7,
        n=1,
        user="u-1",
        response_format={"type": "json_object"},
        extra_body={"provider_specific_knob": {"x": 1}},
    )
    sent = gateway.sim.chats("openai")[-1]
    assert sent.json["model"] == "gpt-4o-mini"
    assert sent.json["provider_specific_knob"] == {"x": 1}
    assert sent.json["temperature"] == 0.3
    assert sent.json["seed"] == 7
    assert sent.json["messages"][1]["content"][1]["type"] == "image_url"
    assert sent.headers["authorization"] == "Bearer sk-openai-test"
    assert key not in str(sent.headers)
    assert key not in sent.body.decode()


async def test_n_logprobs_and_user_attribution(gateway: RunningGateway) -> None:
    client = gateway.openai(await gateway.new_key())
    raw = await client.chat.completions.with_raw_response.create(
        model="fc:openai/gpt-4o-mini",
        messages=[{"role": "user", "content": "two words"}],
        n=2,
        logprobs=True,
        top_logprobs=2,
        user="end-user-7",
    )
    completion = raw.parse()
    assert [c.index for c in completion.choices] == [0, 1]
    tokens = completion.choices[1].logprobs.content
    assert [t.token for t in tokens] == ["Echo:", " two", " words"]
    assert len(tokens[0].top_logprobs) == 2
    validate(orjson.loads(raw.http_response.content), "CreateChatCompletionResponse")
    event = await gateway.usage_event(raw.headers["x-request-id"])
    assert event["customer_ref"] == "end-user-7"


async def test_azure_deployment_url_and_api_key_header(gateway: RunningGateway) -> None:
    client = gateway.openai(await gateway.new_key())
    model = chat_model("azure_openai")
    await client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
    sent = gateway.sim.chats("azure_openai")[-1]
    deployment = model.split("/", 1)[1]
    assert sent.path == f"/azure_openai/openai/deployments/{deployment}/chat/completions"
    assert "api-version=" in sent.query
    assert sent.headers["api-key"] == "sk-azure_openai-test"
    assert "authorization" not in sent.headers


async def test_stream_without_upstream_usage_is_counted(gateway: RunningGateway) -> None:
    client = gateway.openai(await gateway.new_key())
    raw = await client.chat.completions.with_raw_response.create(
        model="fc:openai/gpt-4o-mini",
        messages=[{"role": "user", "content": 'count me please #sim{"no_usage": true}'}],
        stream=True,
    )
    text = "".join([c.choices[0].delta.content or "" async for c in raw.parse() if c.choices])
    event = await gateway.usage_event(raw.headers["x-request-id"])
    assert event["usage_source"] == "counted"
    assert event["output_tokens"] == (len(text) + 3) // 4
    assert event["input_tokens"] > 0
    assert event["cost_usd"] > 0


def _sse_chunks(body: bytes) -> list[dict]:
    payloads = [line[6:] for line in body.split(b"\n\n") if line.startswith(b"data: ")]
    assert payloads[-1] == b"[DONE]"
    return [orjson.loads(p) for p in payloads[:-1]]


async def test_stream_chunks_are_as_without_usage_when_not_asked(gateway: RunningGateway) -> None:
    key = await gateway.new_key()
    body = {
        "model": "fc:openai/gpt-4o-mini",
        "messages": [{"role": "user", "content": "a b c"}],
        "stream": True,
    }
    headers = {"Authorization": f"Bearer {key}"}
    plain = await gateway.http.post("/v1/chat/completions", json=body, headers=headers)
    # The gateway asked the provider for usage; the client did not, so no chunk carries it.
    assert gateway.sim.chats("openai")[-1].json["stream_options"] == {"include_usage": True}
    chunks = _sse_chunks(plain.content)
    assert chunks
    assert all("usage" not in c for c in chunks)
    for c in chunks:
        validate(c, "CreateChatCompletionStreamResponse")

    asked = {**body, "stream_options": {"include_usage": True}}
    with_usage = await gateway.http.post("/v1/chat/completions", json=asked, headers=headers)
    chunks = _sse_chunks(with_usage.content)
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["usage"]["completion_tokens"] == 4
