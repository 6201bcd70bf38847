"""The simulated Anthropic Messages API over real HTTP: its checks, its shapes, its directives."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio

from .server import RunningSimulator

HEADERS = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"}


def body(text: str = "hello there", **more: Any) -> dict[str, Any]:
    return {
        "model": "claude-sonnet-5",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": text}],
        **more,
    }


async def post(
    client: httpx.AsyncClient,
    running: RunningSimulator,
    payload: Any,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    url = running.base_url("anthropic") + "/v1/messages"
    return await client.post(url, json=payload, headers=HEADERS if headers is None else headers)


def error(resp: httpx.Response, status: int, type_: str = "invalid_request_error") -> str:
    assert resp.status_code == status, resp.text
    data = resp.json()
    assert data["type"] == "error"
    assert data["request_id"].startswith("req_")
    assert data["error"]["type"] == type_
    return str(data["error"]["message"])


def events(raw: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in raw.strip().split("\n\n"):
        name_line, data_line = block.split("\n")
        name = name_line.removeprefix("event: ")
        data = json.loads(data_line.removeprefix("data: "))
        assert data["type"] == name
        out.append((name, data))
    return out


async def test_a_message(running: RunningSimulator, client: httpx.AsyncClient) -> None:
    r = await post(client, running, body(system="be kind"))
    assert r.status_code == 200, r.text
    message = r.json()
    assert message["id"].startswith("msg_")
    assert {k: v for k, v in message.items() if k != "id"} == {
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-5",
        "content": [{"type": "text", "text": "Echo: hello there"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 3 + 2 + 3 + 2,  # the system prompt counts as an OpenAI message
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 3,
            "service_tier": "standard",
        },
    }
    (seen,) = running.sim.received
    assert (seen.provider, seen.path) == ("anthropic", "/anthropic/v1/messages")


async def test_auth_version_and_route(running: RunningSimulator, client: httpx.AsyncClient) -> None:
    no_key = {"anthropic-version": "2023-06-01"}
    assert "x-api-key" in error(
        await post(client, running, body(), no_key), 401, "authentication_error"
    )
    bad = {**HEADERS, "x-api-key": "sk-bad"}
    error(await post(client, running, body(), bad), 401, "authentication_error")
    bearer = {"authorization": "Bearer sk-ant-test", "anthropic-version": "2023-06-01"}
    error(await post(client, running, body(), bearer), 401, "authentication_error")
    no_version = {"x-api-key": "k"}
    assert "anthropic-version" in error(await post(client, running, body(), no_version), 400)
    r = await client.post(running.base_url("anthropic") + "/v1/complete", json={}, headers=HEADERS)
    error(r, 404, "not_found_error")


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"n": 2}, "n: Extra inputs are not permitted"),
        ({"max_tokens": None}, "max_tokens: Field required"),
        ({"model": ""}, "model: Field required"),
        ({"messages": []}, "at least one message"),
        (
            {"messages": [{"role": "assistant", "content": "hi"}]},
            'first message must use the "user"',
        ),
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]},
            "roles must alternate",
        ),
        (
            {"messages": [{"role": "system", "content": "a"}]},
            "Input should be 'user' or 'assistant'",
        ),
        ({"messages": [{"role": "user", "content": ""}]}, "text content blocks must be non-empty"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "does not match any of the expected tags",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image",
                                "source": {
                                    "type": "base64",
                                    "media_type": "image/bmp",
                                    "data": "x",
                                },
                            }
                        ],
                    }
                ]
            },
            "media_type",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "a", "cache_control": {"type": "forever"}}
                        ],
                    }
                ]
            },
            "cache_control.type",
        ),
        ({"temperature": 1.5}, "temperature: Input should be less than or equal to 1"),
        ({"stop": ["x"]}, "stop: Extra inputs"),
        ({"stop_sequences": ["\n"]}, "each stop sequence must contain non-whitespace"),
        (
            {
                "messages": [
                    {"role": "user", "content": "a"},
                    {"role": "assistant", "content": "The answer is "},
                ]
            },
            "cannot end with trailing whitespace",
        ),
        ({"metadata": {"user": "u"}}, "metadata.user: Extra inputs"),
        (
            {"tools": [{"name": "bad name!", "input_schema": {"type": "object"}}]},
            "should match pattern",
        ),
        ({"tools": [{"name": "f", "parameters": {}}]}, "parameters: Extra inputs"),
        (
            {"tools": [{"name": "f", "input_schema": {"type": "object"}}] * 2},
            "Tool names must be unique",
        ),
        (
            {
                "tools": [{"name": "f", "input_schema": {"type": "object"}}],
                "tool_choice": {"type": "tool", "name": "g"},
            },
            "Tool 'g' not found",
        ),
        ({"tool_choice": {"type": "required"}}, "tool_choice.type"),
        ({"thinking": {"type": "enabled", "budget_tokens": 500}}, "greater than or equal to 1024"),
        ({"thinking": {"type": "enabled", "budget_tokens": 2000}}, "`max_tokens` must be greater"),
        (
            {
                "max_tokens": 3000,
                "thinking": {"type": "enabled", "budget_tokens": 2000},
                "temperature": 0.5,
            },
            "`temperature` may only be set to 1",
        ),
        (
            {"output_config": {"format": {"type": "json_schema", "json_schema": {"schema": {}}}}},
            "output_config.format.json_schema: Extra inputs",
        ),
        ({"response_format": {"type": "json_object"}}, "response_format: Extra inputs"),
    ],
)
async def test_requests_are_checked_as_anthropic_does(
    running: RunningSimulator, client: httpx.AsyncClient, change: dict[str, Any], words: str
) -> None:
    payload = {**body(), **change}
    payload = {k: v for k, v in payload.items() if v is not None}
    assert words in error(await post(client, running, payload), 400)


def _tool_turns(answer: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "w", "input": {}},
                {"type": "tool_use", "id": "toolu_2", "name": "w", "input": {"c": 1}},
            ],
        },
        {"role": "user", "content": answer},
    ]


async def test_tool_results_must_answer_the_calls(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    tools = [{"name": "w", "input_schema": {"type": "object"}}]

    def result(i: str) -> dict[str, Any]:
        return {"type": "tool_result", "tool_use_id": i, "content": "ok"}

    async def send(answer: list[dict[str, Any]]) -> httpx.Response:
        return await post(client, running, body(messages=_tool_turns(answer), tools=tools))

    message = error(await send([result("toolu_1"), result("toolu_9")]), 400)
    assert "unexpected `tool_use_id` found in `tool_result` blocks: toolu_9" in message
    message = error(await send([result("toolu_1")]), 400)
    assert "`tool_use` ids were found without `tool_result` blocks immediately after: toolu_2" in (
        message
    )
    text = {"type": "text", "text": "and?"}
    assert "must come first" in error(await send([text, result("toolu_1"), result("toolu_2")]), 400)
    r = await send([result("toolu_1"), result("toolu_2"), text])
    assert r.status_code == 200, r.text
    assert r.json()["content"] == [{"type": "text", "text": "Echo: and?"}]


async def test_tool_use_reply_and_its_stream(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    directive = '#sim{"tool_call": [{"name": "w", "arguments": {"city": "Paris"}}, {"name": "t"}]}'
    tools = [
        {"name": "w", "input_schema": {"type": "object"}},
        {"name": "t", "input_schema": {"type": "object"}},
    ]
    r = await post(client, running, body(f"go {directive}", tools=tools))
    message = r.json()
    assert message["stop_reason"] == "tool_use"
    uses = message["content"]
    assert [(u["type"], u["name"], u["input"]) for u in uses] == [
        ("tool_use", "w", {"city": "Paris"}),
        ("tool_use", "t", {}),
    ]
    assert all(u["id"].startswith("toolu_") for u in uses)

    r = await post(client, running, body(f"go {directive}", tools=tools, stream=True))
    seen = events(r.text)
    starts = [d["content_block"] for n, d in seen if n == "content_block_start"]
    assert [(s["type"], s["name"], s["input"]) for s in starts] == [
        ("tool_use", "w", {}),
        ("tool_use", "t", {}),
    ]
    partial = "".join(
        d["delta"]["partial_json"]
        for n, d in seen
        if n == "content_block_delta" and d["index"] == 0
    )
    assert json.loads(partial) == {"city": "Paris"}
    assert seen[-2][1]["delta"]["stop_reason"] == "tool_use"


async def test_the_stream_event_sequence(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    r = await post(client, running, body("a b", stream=True))
    assert r.headers["content-type"] == "text/event-stream"
    seen = events(r.text)
    assert [n for n, _ in seen] == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = seen[0][1]["message"]
    assert start["content"] == []
    assert start["stop_reason"] is None
    assert start["usage"]["input_tokens"] == 5
    assert start["usage"]["output_tokens"] == 1
    assert "".join(d["delta"]["text"] for n, d in seen if n == "content_block_delta") == "Echo: a b"
    assert seen[-2][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": 3},
    }


async def test_cache_and_thinking_directives(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    text = (
        'hi #sim{"usage": {"cached_tokens": 2}, "cache_creation_tokens": 1, "reasoning_tokens": 4}'
    )
    thinking = {"type": "enabled", "budget_tokens": 1024}
    message = (await post(client, running, body(text, max_tokens=2000, thinking=thinking))).json()
    assert message["content"][0]["type"] == "thinking"
    assert message["content"][0]["thinking"] == "Thinking more more more"
    assert message["content"][0]["signature"]
    assert message["usage"] == {
        "input_tokens": 4 - 2 - 1,
        "cache_creation_input_tokens": 1,
        "cache_read_input_tokens": 2,
        "output_tokens": 2 + 4,
        "service_tier": "standard",
        "output_tokens_details": {"thinking_tokens": 4},
    }
    # Without thinking there is none, and no reasoning in the counts.
    plain = (await post(client, running, body(text))).json()
    assert [b["type"] for b in plain["content"]] == ["text"]
    assert plain["usage"]["output_tokens"] == 2


async def test_stop_sequence_and_max_tokens(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    r = (await post(client, running, body("one two three", stop_sequences=["two"]))).json()
    assert (r["stop_reason"], r["stop_sequence"]) == ("stop_sequence", "two")
    assert r["content"][0]["text"] == "Echo: one"
    r = (await post(client, running, body("one two three", max_tokens=2))).json()
    assert r["stop_reason"] == "max_tokens"


@pytest.mark.parametrize(
    ("status", "type_"),
    [
        (529, "overloaded_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (400, "invalid_request_error"),
    ],
)
async def test_status_directives_answer_anthropic_errors(
    running: RunningSimulator, client: httpx.AsyncClient, status: int, type_: str
) -> None:
    r = await post(client, running, body(f'x #sim{{"status": {status}}}'))
    error(r, status, type_)
    if status == 429:
        assert r.headers["retry-after"] == "1"


async def test_error_event_and_dropped_stream(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    r = await post(client, running, body('a b c #sim{"error_event_after": 2}', stream=True))
    seen = events(r.text)
    assert seen[-1] == (
        "error",
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    )
    assert "message_stop" not in [n for n, _ in seen]
    with pytest.raises(httpx.RemoteProtocolError):
        await post(client, running, body('a b c #sim{"stream_error_after": 1}', stream=True))
    assert running.sim.cancelled_streams == 0


async def test_a_client_leaving_is_counted(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    url = running.base_url("anthropic") + "/v1/messages"
    payload = body('a b c d e #sim{"chunk_delay": 0.2}', stream=True)
    async with client.stream("POST", url, json=payload, headers=HEADERS) as r:
        async for _ in r.aiter_bytes():
            break
    await running.sim.wait_until(lambda s: s.cancelled_streams == 1)
    assert running.sim.open_streams == 0
    with trio.fail_after(5):
        await running.sim.wait_until(lambda s: s.open_streams == 0)
