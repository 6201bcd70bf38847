"""The simulator against real HTTP: routing, auth, the OpenAI wire shapes and the directives."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from openai import AsyncOpenAI

from .helpers import AUTH, chat, error_body, ok_body, user
from .openapi import validate
from .providers import NATIVE_PROVIDERS, PROVIDER_BASES
from .server import RunningSimulator
from .sse import sse_chunks, streamed_text

REPO_ROOT = Path(__file__).resolve().parents[2]
OPENAI_STYLE = sorted(set(PROVIDER_BASES) - {"azure_openai"} - NATIVE_PROVIDERS)


@pytest.mark.parametrize("provider", OPENAI_STYLE)
async def test_every_provider_answers_a_plain_completion(
    running: RunningSimulator, client: httpx.AsyncClient, provider: str
) -> None:
    body = ok_body(await chat(client, running, provider, model="x-model", messages=user("a b c")))
    assert body["object"] == "chat.completion"
    assert body["model"] == "x-model"
    assert body["id"].startswith("chatcmpl-")
    assert len(body["id"]) == 9 + 24
    assert body["system_fingerprint"] == "fp_sim"
    assert body["service_tier"] == "default"
    (choice,) = body["choices"]
    assert choice["message"] == {
        "role": "assistant",
        "content": "Echo: a b c",
        "refusal": None,
        "annotations": [],
    }
    assert choice["finish_reason"] == "stop"
    assert choice["logprobs"] is None
    assert body["usage"] == {
        "prompt_tokens": 3 + 3,
        "completion_tokens": 4,
        "total_tokens": 10,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    (seen,) = running.sim.received
    assert (seen.provider, seen.method, seen.path) == (
        provider,
        "POST",
        PROVIDER_BASES[provider] + "/chat/completions",
    )
    assert seen.headers["content-type"] == "application/json"
    assert seen.json == {"model": "x-model", "messages": user("a b c")}
    assert json.loads(seen.body) == seen.json


async def test_prompt_tokens_count_all_messages_parts_and_images(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                {"type": "text", "text": "this thing"},
            ],
        },
    ]
    body = ok_body(await chat(client, running, messages=messages))
    assert body["choices"][0]["message"]["content"] == "Echo: what is this thing"
    assert body["usage"]["prompt_tokens"] == 2 + 4 + 2 * 3 + 85
    assert body["usage"]["completion_tokens"] == 5


async def test_azure_layout_query_and_api_key(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    url = running.base_url("azure_openai") + "/openai/deployments/my-gpt/chat/completions"
    payload = {"messages": user("hi")}
    key = {"api-key": "k"}
    resp = await client.post(url, params={"api-version": "2024-10-21"}, json=payload, headers=key)
    body = ok_body(resp)
    assert body["model"] == "my-gpt"
    assert running.sim.received[-1].query == "api-version=2024-10-21"
    assert running.sim.received[-1].provider == "azure_openai"
    error_body(await client.post(url, json=payload, headers=key), 404)
    resp = await client.post(url, params={"api-version": "2024-10-21"}, json=payload, headers=AUTH)
    assert error_body(resp, 401)["code"] == "invalid_api_key"
    models = await client.get(
        running.base_url("azure_openai") + "/openai/models",
        params={"api-version": "2024-10-21"},
        headers=key,
    )
    validate(models.json(), "ListModelsResponse")


@pytest.mark.parametrize(
    "headers",
    [{}, {"authorization": "Bearer"}, {"authorization": "k"}, {"authorization": "Bearer sk-bad"}],
)
async def test_bad_auth_is_401(
    running: RunningSimulator, client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    err = error_body(await chat(client, running, "groq", headers, messages=user("x")), 401)
    assert err["type"] == "invalid_request_error"
    assert err["code"] == "invalid_api_key"


async def test_ollama_needs_no_key(running: RunningSimulator, client: httpx.AsyncClient) -> None:
    ok_body(await chat(client, running, "ollama", {}, messages=user("x")))


async def test_routing_errors(running: RunningSimulator, client: httpx.AsyncClient) -> None:
    # wrong layout for groq (the real one has /openai/v1), unknown provider, wrong method
    for path in ("/groq/v1/chat/completions", "/nope/v1/chat/completions", "/openai/v1/x"):
        resp = await client.post(running.url + path, json={}, headers=AUTH)
        assert "Invalid URL" in error_body(resp, 404)["message"]
    resp = await client.get(running.base_url("openai") + "/chat/completions", headers=AUTH)
    error_body(resp, 405)
    models = await client.get(running.base_url("groq") + "/models", headers=AUTH)
    assert models.status_code == 200
    validate(models.json(), "ListModelsResponse")
    assert [r.provider for r in running.sim.received] == [
        "groq",
        "nope",
        "openai",
        "openai",
        "groq",
    ]
    running.sim.clear()
    assert running.sim.received == []
    assert running.sim.requests == 0


async def test_malformed_requests_are_400(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    url = running.base_url("openai") + "/chat/completions"
    resp = await client.post(url, content=b"{not json", headers=AUTH)
    assert "could not parse the JSON body" in error_body(resp, 400)["message"]
    assert running.sim.received[-1].json is None
    assert error_body(await chat(client, running, messages=[]), 400)["param"] == "messages"
    error_body(await chat(client, running, model="", messages=user("x")), 400)
    error_body(await chat(client, running, messages=user("x"), n=9), 400)
    error_body(await chat(client, running, messages=user("x"), tool_choice="auto"), 400)
    error_body(await chat(client, running, messages=user("#sim{oops")), 400)


async def test_stream_framing_and_usage_chunk(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    resp = await chat(
        client,
        running,
        messages=user("one two three"),
        stream=True,
        stream_options={"include_usage": True},
    )
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "text/event-stream"
    chunks = sse_chunks(resp.content)
    assert [c["choices"][0]["delta"] for c in chunks[:-1]] == [
        {"role": "assistant", "content": "", "refusal": None},
        {"content": "Echo:"},
        {"content": " one"},
        {"content": " two"},
        {"content": " three"},
        {},
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None] * 5 + ["stop"]
    assert all(c["usage"] is None for c in chunks[:-1])
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["prompt_tokens"] == 6
    assert chunks[-1]["usage"]["completion_tokens"] == 4
    plain = await chat(client, running, messages=user("one two three"), stream=True)
    plain_chunks = sse_chunks(plain.content)
    assert all("usage" not in c for c in plain_chunks)
    assert len(plain_chunks) == 6
    assert streamed_text(plain_chunks) == "Echo: one two three"


async def test_stream_and_body_carry_the_same_text(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    text = 'tabs\tand  spaces #sim{"reply": "  x  y\\nz "}'
    body = ok_body(await chat(client, running, messages=user(text)))
    streamed = sse_chunks((await chat(client, running, messages=user(text), stream=True)).content)
    assert body["choices"][0]["message"]["content"] == streamed_text(streamed) == "  x  y\nz"


async def test_n_logprobs_max_tokens_and_stop(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    body = ok_body(
        await chat(
            client,
            running,
            messages=user("a b c d"),
            n=2,
            logprobs=True,
            top_logprobs=2,
            max_tokens=3,
        )
    )
    assert [c["index"] for c in body["choices"]] == [0, 1]
    for choice in body["choices"]:
        assert choice["message"]["content"] == "Echo: a b"
        assert choice["finish_reason"] == "length"
        tokens = choice["logprobs"]["content"]
        assert [t["token"] for t in tokens] == ["Echo:", " a", " b"]
        assert tokens[1]["bytes"] == list(b" a")
        assert len(tokens[1]["top_logprobs"]) == 2
    assert body["usage"]["completion_tokens"] == 6
    resp = await chat(client, running, messages=user("a b c d"), n=2, stream=True, logprobs=True)
    chunks = sse_chunks(resp.content)
    assert streamed_text(chunks, 0) == streamed_text(chunks, 1) == "Echo: a b c d"
    stopped = ok_body(await chat(client, running, messages=user("a b STOP d"), stop=["d", "STOP"]))
    assert stopped["choices"][0]["message"]["content"] == "Echo: a b"
    assert stopped["choices"][0]["finish_reason"] == "stop"


async def test_forced_tool_calls(running: RunningSimulator, client: httpx.AsyncClient) -> None:
    tools = [
        {"type": "function", "function": {"name": f, "parameters": {"type": "object"}}}
        for f in ("first", "second")
    ]
    for choice, name in [
        ("required", "first"),
        ({"type": "function", "function": {"name": "second"}}, "second"),
    ]:
        body = ok_body(
            await chat(client, running, messages=user("x"), tools=tools, tool_choice=choice)
        )
        (result,) = body["choices"]
        assert result["finish_reason"] == "tool_calls"
        assert result["message"]["content"] is None
        (call,) = result["message"]["tool_calls"]
        assert call["id"].startswith("call_")
        assert call["type"] == "function"
        assert call["function"] == {"name": name, "arguments": "{}"}
    auto = ok_body(await chat(client, running, messages=user("x"), tools=tools, tool_choice="auto"))
    assert auto["choices"][0]["message"]["content"] == "Echo: x"


async def test_directive_tool_call_streams_openai_style(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    args = {"city": "Paris", "days": [1, 2, 3]}
    directive = json.dumps(
        {"tool_call": [{"name": "weather", "arguments": args}, {"name": "time", "arguments": "{}"}]}
    )
    resp = await chat(client, running, messages=user(f"go #sim{directive}"), stream=True)
    chunks = sse_chunks(resp.content)
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for tc in chunk["choices"][0]["delta"].get("tool_calls", []):
            if "id" in tc:
                assert tc["function"]["arguments"] == ""
                calls[tc["index"]] = {"name": tc["function"]["name"], "arguments": ""}
            else:
                calls[tc["index"]]["arguments"] += tc["function"]["arguments"]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert calls[0]["name"] == "weather"
    assert json.loads(calls[0]["arguments"]) == args
    assert calls[1] == {"name": "time", "arguments": "{}"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_error_directives(running: RunningSimulator, client: httpx.AsyncClient) -> None:
    resp = await chat(client, running, messages=user('#sim{"status": 429}'))
    err = error_body(resp, 429)
    assert resp.headers["retry-after"] == "1"
    assert err["type"] == "rate_limit_error"
    resp = await chat(client, running, messages=user('#sim{"status": 503}'), stream=True)
    assert error_body(resp, 503)["type"] == "server_error"
    directive = '#sim{"status": 400, "error": {"code": "context_length_exceeded"}}'
    err = error_body(await chat(client, running, messages=user(directive)), 400)
    assert err["type"] == "invalid_request_error"
    assert err["code"] == "context_length_exceeded"


async def test_usage_directives(running: RunningSimulator, client: httpx.AsyncClient) -> None:
    body = ok_body(await chat(client, running, messages=user('#sim{"no_usage": true}')))
    assert "usage" not in body
    resp = await chat(
        client,
        running,
        messages=user('#sim{"no_usage": true}'),
        stream=True,
        stream_options={"include_usage": True},
    )
    assert all("usage" not in c for c in sse_chunks(resp.content))
    body = ok_body(await chat(client, running, messages=user('a #sim{"reasoning_tokens": 7}')))
    details = body["usage"]["completion_tokens_details"]
    assert details["reasoning_tokens"] == 7
    assert body["usage"]["completion_tokens"] == 2 + 7
    over = {"usage": {"prompt_tokens": 100, "completion_tokens": 20, "cached_tokens": 40}}
    body = ok_body(await chat(client, running, messages=user(f"#sim{json.dumps(over)}")))
    assert (body["usage"]["prompt_tokens"], body["usage"]["total_tokens"]) == (100, 120)
    assert body["usage"]["prompt_tokens_details"]["cached_tokens"] == 40


# The SDK breaks out of its nested async generators at [DONE]; trio then warns when they are
# garbage collected. That is the SDK's business, not the wire's.
@pytest.mark.filterwarnings("ignore:Async generator .* was garbage collected:ResourceWarning")
async def test_official_openai_sdk_plain_stream_and_tools(running: RunningSimulator) -> None:
    messages: list[Any] = [{"role": "user", "content": "hi there"}]
    async with AsyncOpenAI(base_url=running.base_url("groq"), api_key="k", max_retries=0) as sdk:
        plain = await sdk.chat.completions.create(model="llama", messages=messages)
        assert plain.choices[0].message.content == "Echo: hi there"
        assert plain.usage is not None
        assert plain.usage.total_tokens == 5 + 3
        stream = await sdk.chat.completions.create(
            model="llama", messages=messages, stream=True, stream_options={"include_usage": True}
        )
        parts, usage = [], None
        async for chunk in stream:
            parts += [c.delta.content or "" for c in chunk.choices]
            usage = chunk.usage or usage
        assert "".join(parts) == "Echo: hi there"
        assert usage is not None
        assert usage.completion_tokens == 3
        tool = await sdk.chat.completions.create(
            model="llama",
            messages=messages,
            tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {}}}],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
        )
        (call,) = tool.choices[0].message.tool_calls or []
        assert call.type == "function"
        assert (call.function.name, call.function.arguments) == ("get_weather", "{}")
    assert {r.path for r in running.sim.received} == {"/groq/openai/v1/chat/completions"}
    assert all(r.headers["authorization"] == "Bearer k" for r in running.sim.received)


async def test_standalone_module_serves_and_stops_on_signals() -> None:
    argv = [sys.executable, "-m", "tests.simulator", "--port", "0"]
    proc = await trio.lowlevel.open_process(argv, cwd=REPO_ROOT, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = b""
        with trio.fail_after(20):
            while not line.endswith(b"\n"):
                line += await proc.stdout.receive_some(1)
        url = line.decode().split()[-1]
        async with httpx.AsyncClient() as client:
            resp = await client.post(
                url + PROVIDER_BASES["cerebras"] + "/chat/completions",
                json={"model": "m", "messages": user("ping")},
                headers=AUTH,
            )
        assert resp.json()["choices"][0]["message"]["content"] == "Echo: ping"
        proc.send_signal(signal.SIGINT)
        with trio.fail_after(10):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if proc.stdout is not None:
            await proc.stdout.aclose()


def test_a_tool_call_directive_is_answered_once_its_results_are_back() -> None:
    from .completion import make_plan

    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    asked = 'go #sim{"tool_call": {"name": "f", "arguments": {"x": 1}}}'
    first = make_plan({"model": "m", "tools": tools, "messages": user(asked)}, None)
    assert first.finish_reason == "tool_calls"
    answered = [
        *user(asked),
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                              "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]  # fmt: skip
    second = make_plan({"model": "m", "tools": tools, "messages": answered}, None)
    assert (second.finish_reason, second.tool_calls) == ("stop", None)
    again = [*answered[:2], {"role": "tool", "tool_call_id": "c1", "content": asked}]
    third = make_plan({"model": "m", "tools": tools, "messages": again}, None)
    assert third.finish_reason == "tool_calls"  # a tool result may ask for more calls
