"""Replicate (official language models, chat only) through the gateway, with the openai SDK."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import httpx
import openai
import orjson
import pytest
import trio

from ringside.catalog import load_catalog
from tests.gateway import RunningGateway
from tests.simulator.app import Received
from tests.simulator.openapi import validate
from tests.simulator.replicate_wire import PREDICTIONS
from tests.simulator.server import RunningSimulator

CATALOG = load_catalog()
MODEL = "fc:replicate/meta/meta-llama-3-8b-instruct"
CREATE = "/replicate/v1/models/meta/meta-llama-3-8b-instruct/predictions"


def sent(gateway: RunningGateway, path: str | None = None) -> list[Received]:
    return [
        r
        for r in gateway.sim.received
        if r.provider == "replicate" and (path is None or r.path == path)
    ]


def cost(prompt: int, completion: int) -> Decimal:
    info = CATALOG.by_ref(MODEL)
    assert info is not None
    return info.cost(input=prompt, cached_input=0, output=completion, reasoning=0)


async def test_plain_completion_waits_synchronously(gateway: RunningGateway) -> None:
    client = gateway.openai(await gateway.new_key())
    raw = await client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "hello there"}]
    )
    completion = raw.parse()
    validate(orjson.loads(raw.http_response.content), "CreateChatCompletionResponse")
    assert completion.choices[0].message.content == "Echo: hello there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (5, 3)
    [create] = sent(gateway)
    assert create.path == CREATE
    assert create.headers["authorization"] == "Bearer sk-replicate-test"
    assert create.headers["prefer"] == "wait"
    assert create.json == {"input": {"prompt": "hello there"}}
    event = await gateway.usage_event(raw.headers["x-request-id"])
    assert (event["provider"], event["status"], event["usage_source"]) == (
        "replicate",
        "ok",
        "upstream",
    )
    assert (event["input_tokens"], event["output_tokens"]) == (5, 3)
    assert event["cost_usd"] == cost(5, 3)


async def test_a_conversation_is_rendered_as_a_transcript(gateway: RunningGateway) -> None:
    client = gateway.openai(await gateway.new_key())
    messages: list[Any] = [
        {"role": "system", "content": "be kind"},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": [{"type": "text", "text": "second question"}]},
    ]
    completion = await client.chat.completions.create(
        model=MODEL,
        messages=messages,
        max_tokens=2,
        temperature=0.3,
        top_p=0.9,
        seed=3,
        stop=["END", "STOP"],
        response_format={"type": "text"},
    )
    assert completion.choices[0].message.content == "Echo: second"
    assert completion.choices[0].finish_reason == "length"
    assert sent(gateway)[-1].json == {
        "input": {
            "prompt": "User: first question\n\nAssistant: first answer\n\nUser: second question",
            "system_prompt": "be kind",
            "max_tokens": 2,
            "temperature": 0.3,
            "top_p": 0.9,
            "seed": 3,
            "stop_sequences": "END,STOP",
        }
    }
    # The same counts as an OpenAI-wire provider for the same conversation.
    reference = await client.chat.completions.create(
        model="fc:openai/gpt-4o-mini", messages=messages, max_tokens=2
    )
    assert completion.usage is not None
    assert reference.usage is not None
    assert completion.usage.prompt_tokens == reference.usage.prompt_tokens
    assert completion.usage.completion_tokens == reference.usage.completion_tokens


async def test_an_unfinished_prediction_is_polled(gateway: RunningGateway) -> None:
    client = gateway.openai(await gateway.new_key())
    completion = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": 'slow one #sim{"replicate_status": "processing"}'}],
    )
    assert completion.choices[0].message.content == "Echo: slow one"
    _, poll = sent(gateway)
    assert poll.method == "GET"
    prediction_id = poll.path.rsplit("/", 1)[-1]
    assert poll.path == f"/replicate/v1/predictions/{prediction_id}"
    assert poll.headers["authorization"] == "Bearer sk-replicate-test"
    assert PREDICTIONS[prediction_id].status == "succeeded"


async def test_a_failed_prediction_is_a_provider_failure(gateway: RunningGateway) -> None:
    client = gateway.openai(await gateway.new_key())
    with pytest.raises(openai.InternalServerError) as info:
        await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": 'x #sim{"replicate_status": "failed"}'}],
        )
    assert info.value.status_code == 503
    assert "simulated prediction failure" in info.value.message
    raw = await client.chat.completions.with_raw_response.create(
        model=[MODEL, "fc:openai/gpt-4o-mini"],  # type: ignore[arg-type]
        messages=[{"role": "user", "content": 'y #sim{"replicate_status": "failed"}'}],
    )
    assert raw.headers["x-ringside-model-used"] == "fc:openai/gpt-4o-mini"


async def test_streamed_completion_with_usage_from_metrics(gateway: RunningGateway) -> None:
    client = gateway.openai(await gateway.new_key())
    raw = await client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "user", "content": "stream me\nplease"}],
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
    assert (text, finish) == ("Echo: stream me\nplease", "stop")
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (3 + 3, 4)
    create, stream, read = sent(gateway)
    assert create.json == {"input": {"prompt": "stream me\nplease"}, "stream": True}
    assert "prefer" not in create.headers
    assert stream.path.startswith("/replicate/v1/stream/")
    assert stream.headers["accept"] == "text/event-stream"
    assert read.path.startswith("/replicate/v1/predictions/")
    event = await gateway.usage_event(raw.headers["x-request-id"])
    assert (event["status"], event["usage_source"]) == ("ok", "upstream")
    assert (event["input_tokens"], event["output_tokens"]) == (6, 4)


async def test_stream_without_metrics_is_counted(gateway: RunningGateway) -> None:
    key = await gateway.new_key()
    body = {
        "model": MODEL,
        "stream": True,
        "messages": [{"role": "user", "content": 'count me #sim{"no_usage": true}'}],
    }
    r = await gateway.http.post(
        "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
    )
    events = [e for e in r.text.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == (
        "Echo: count me"
    )
    event = await gateway.usage_event(r.headers["x-request-id"])
    assert (event["status"], event["usage_source"]) == ("ok", "counted")


async def test_stream_failures(gateway: RunningGateway) -> None:
    key = await gateway.new_key()
    for directive in ('{"stream_error_after": 1}', '{"replicate_status": "failed"}'):
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


async def test_client_disconnect_mid_stream_cancels_the_prediction(
    gateway: RunningGateway,
) -> None:
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
    with trio.fail_after(2.0):
        await gateway.sim.wait_until(lambda s: s.cancelled_streams == 1)
        await gateway.sim.wait_until(
            lambda s: any(r.path.endswith("/cancel") for r in sent(gateway))
        )
    prediction_id = sent(gateway)[-1].path.split("/")[-2]
    assert PREDICTIONS[prediction_id].status == "canceled"
    event = await gateway.usage_event(request_id)
    assert (event["status"], event["provider"]) == ("client_aborted", "replicate")


async def test_unsupported_features_are_refused_before_any_call(gateway: RunningGateway) -> None:
    client = gateway.openai(await gateway.new_key())
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    with pytest.raises(openai.BadRequestError) as tools:
        await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], tools=[tool]
        )
    assert tools.value.code == "tools_unsupported"
    with pytest.raises(openai.BadRequestError) as choices:
        await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], n=2
        )
    assert choices.value.code == "unsupported_parameter"
    with pytest.raises(openai.BadRequestError) as comma:
        await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], stop=["a,b"]
        )
    assert comma.value.code == "unsupported_parameter"
    assert sent(gateway) == []
    with pytest.raises(openai.BadRequestError) as embed:
        await client.embeddings.create(model=MODEL, input="hi")
    assert embed.value.status_code == 400


async def test_upstream_errors(gateway: RunningGateway) -> None:
    client = gateway.openai(await gateway.new_key())
    with pytest.raises(openai.BadRequestError) as bad:
        await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": 'x #sim{"status": 422}'}]
        )
    assert bad.value.code == "upstream_rejected_request"
    assert "Simulated upstream error (HTTP 422)." in bad.value.message
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": 'x #sim{"status": 502}'}]
        )
    assert len(sent(gateway)) == 1 + 3  # a 502 is retried twice


async def test_response_format_is_left_to_the_domain(gateway: RunningGateway) -> None:
    client = gateway.openai(await gateway.new_key())
    completion = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": 'json #sim{"reply": "{\\"ok\\": true}"}'}],
        response_format={"type": "json_object"},
    )
    assert json.loads(completion.choices[0].message.content or "") == {"ok": True}
    assert "response_format" not in sent(gateway)[-1].json["input"]


async def test_the_simulator_refuses_what_replicate_refuses(simulator: RunningSimulator) -> None:
    url = simulator.url + CREATE
    auth = {"Authorization": "Bearer r8_x"}
    async with httpx.AsyncClient() as http:
        r = await http.post(url, json={"input": {"prompt": "hi"}})
        assert (r.status_code, r.json()["title"]) == (401, "Unauthenticated")
        for bad in (
            {"input": {}},
            {"input": {"prompt": "hi", "max_tokens": "9"}},
            {"input": {"prompt": "hi", "stop": ["x"]}},
        ):
            r = await http.post(url, json=bad, headers=auth)
            assert r.status_code == 422
            assert r.json()["title"] == "Input validation failed"
        r = await http.get(simulator.url + "/replicate/v1/predictions/nope", headers=auth)
        assert r.status_code == 404
