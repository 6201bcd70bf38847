"""The simulated Gemini API against real HTTP: Google's auth answers, its request checks
and error bodies, its response and streaming formats, and the embeddings it returns."""

from __future__ import annotations

import math
from typing import Any

import httpx
import orjson
import pytest

from .gemini_wire import SKIP_SIGNATURES, signature_for
from .server import RunningSimulator

KEY = {"x-goog-api-key": "sk-gemini-test"}
USER = {"role": "user", "parts": [{"text": "hello there"}]}


def url(running: RunningSimulator, model: str, method: str) -> str:
    return f"{running.base_url('gemini')}/v1beta/models/{model}:{method}"


async def generate(
    client: httpx.AsyncClient,
    running: RunningSimulator,
    body: dict[str, Any],
    model: str = "gemini-3.8-flash",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return await client.post(
        url(running, model, "generateContent"),
        json=body,
        headers=KEY if headers is None else headers,
    )


def error(resp: httpx.Response, code: int) -> dict[str, Any]:
    assert resp.status_code == code, resp.text
    err: dict[str, Any] = resp.json()["error"]
    assert err["code"] == code
    return err


async def test_generate_content(running: RunningSimulator, client: httpx.AsyncClient) -> None:
    resp = await generate(client, running, {"contents": [USER]})
    assert resp.status_code == 200, resp.text
    data = resp.json()
    candidate = data["candidates"][0]
    assert candidate["content"] == {"parts": [{"text": "Echo: hello there"}], "role": "model"}
    assert (candidate["finishReason"], candidate["index"]) == ("STOP", 0)
    usage = data["usageMetadata"]
    assert (usage["promptTokenCount"], usage["candidatesTokenCount"], usage["totalTokenCount"]) == (
        5,
        3,
        8,
    )
    assert data["modelVersion"] == "gemini-3.8-flash"


@pytest.mark.parametrize(
    ("headers", "query", "code", "status"),
    [
        ({}, "", 403, "PERMISSION_DENIED"),
        ({"authorization": "Bearer sk-gemini-test"}, "", 401, "UNAUTHENTICATED"),
        ({"x-goog-api-key": "sk-bad"}, "", 400, "INVALID_ARGUMENT"),
        ({}, "?key=sk-gemini-test", 200, None),
    ],
)
async def test_auth(
    running: RunningSimulator,
    client: httpx.AsyncClient,
    headers: dict[str, str],
    query: str,
    code: int,
    status: str | None,
) -> None:
    resp = await client.post(
        url(running, "gemini-3.8-flash", "generateContent") + query,
        json={"contents": [USER]},
        headers=headers,
    )
    if status is None:
        assert resp.status_code == 200
        return
    err = error(resp, code)
    assert err["status"] == status
    if code == 400:
        assert err["details"][0]["reason"] == "API_KEY_INVALID"


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({}, "contents is not specified"),
        ({"contents": []}, "contents is not specified"),
        (
            {"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]},
            "valid role: user, model",
        ),
        ({"contents": [{"role": "user", "parts": []}]}, "parts must not be empty"),
        ({"contents": [{"role": "user", "parts": [{"text": ""}]}]}, "empty text parameter"),
        ({"contents": [USER], "generation_config": {"max_tokens": 3}}, 'Unknown name "max_tokens"'),
        ({"contents": [USER], "messages": []}, 'Unknown name "messages"'),
        (
            {"contents": [{"role": "user", "parts": [{"text": "a", "inlineData": {}}]}]},
            "Oneof field 'data' is already set",
        ),
        (
            {"contents": [USER], "generationConfig": {"candidateCount": 9}},
            "candidate_count: must be in the range [1, 8]",
        ),
        (
            {"contents": [USER], "generationConfig": {"responseJsonSchema": {"type": "object"}}},
            "must be application/json",
        ),
        (
            {
                "contents": [USER],
                "generationConfig": {
                    "thinkingConfig": {"thinkingBudget": 10, "thinkingLevel": "LOW"}
                },
            },
            "only one of thinking budget and thinking level",
        ),
        (
            {
                "contents": [
                    USER,
                    {
                        "role": "user",
                        "parts": [{"functionResponse": {"name": "f", "response": {}}}],
                    },
                ]
            },
            "function response turn comes immediately after a function call turn",
        ),
        (
            {
                "contents": [
                    {"role": "model", "parts": [{"functionCall": {"name": "f"}}]},
                ]
            },
            "function call turn comes immediately after a user turn",
        ),
        (
            {
                "contents": [
                    USER,
                    {
                        "role": "model",
                        "parts": [
                            {
                                "functionCall": {"name": "f"},
                                "thoughtSignature": "skip_thought_signature_validator",
                            },
                            {"functionCall": {"name": "g"}},
                        ],
                    },
                    {
                        "role": "user",
                        "parts": [{"functionResponse": {"name": "f", "response": {}}}],
                    },
                ]
            },
            "number of function response parts is equal",
        ),
        (
            {
                "contents": [USER],
                "tools": [{"functionDeclarations": [{"name": "bad name"}]}],
            },
            "Invalid function name",
        ),
        (
            {
                "contents": [USER],
                "tools": [{"functionDeclarations": [{"name": "f"}]}],
                "toolConfig": {
                    "functionCallingConfig": {"mode": "AUTO", "allowedFunctionNames": ["f"]}
                },
            },
            "only allowed when mode is ANY",
        ),
    ],
)
async def test_requests_are_checked_as_google_checks_them(
    running: RunningSimulator, client: httpx.AsyncClient, body: dict[str, Any], words: str
) -> None:
    err = error(await generate(client, running, body), 400)
    assert err["status"] == "INVALID_ARGUMENT"
    assert words in err["message"]


async def test_snake_case_names_are_accepted(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    body = {
        "contents": [USER],
        "system_instruction": {"parts": [{"text": "be brief"}]},
        "generation_config": {"max_output_tokens": 1},
    }
    resp = await generate(client, running, body)
    assert resp.status_code == 200, resp.text
    assert resp.json()["candidates"][0]["finishReason"] == "MAX_TOKENS"


def _call_history(signature: str | None, model_text: str = "weather?") -> dict[str, Any]:
    call: dict[str, Any] = {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}
    if signature is not None:
        call["thoughtSignature"] = signature
    return {
        "contents": [
            {"role": "user", "parts": [{"text": model_text}]},
            {"role": "model", "parts": [call]},
            {
                "role": "user",
                "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"output": "sun"}}}
                ],
            },
        ]
    }


async def test_gemini_3_thought_signatures(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    missing = error(await generate(client, running, _call_history(None)), 400)
    assert "missing a thought_signature" in missing["message"]
    corrupted = error(await generate(client, running, _call_history("c2lnbmF0dXJl")), 400)
    assert corrupted["message"] == "Corrupted thought signature."
    good = signature_for("get_weather", {"city": "Oslo"})
    for signature in (good, *SKIP_SIGNATURES):
        resp = await generate(client, running, _call_history(signature))
        assert resp.status_code == 200, resp.text
        assert resp.json()["candidates"][0]["content"]["parts"] == [{"text": "Echo: weather?"}]
    # Gemini 2.5 does not require them; and only the current turn is checked.
    resp = await generate(client, running, _call_history(None), model="gemini-2.5-flash-lite")
    assert resp.status_code == 200, resp.text
    history = _call_history(None)
    history["contents"].append({"role": "model", "parts": [{"text": "Sunny."}]})
    history["contents"].append({"role": "user", "parts": [{"text": "thanks"}]})
    assert (await generate(client, running, history)).status_code == 200


async def test_function_calls_are_signed(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    ask = '#sim{"tool_call": [{"name": "f", "arguments": {"a": 1}}, {"name": "g"}]}'
    body = {
        "contents": [{"role": "user", "parts": [{"text": f"go {ask}"}]}],
        "tools": [{"functionDeclarations": [{"name": "f"}, {"name": "g"}]}],
    }
    resp = await generate(client, running, body)
    parts = resp.json()["candidates"][0]["content"]["parts"]
    ids = [p["functionCall"].pop("id") for p in parts]
    assert len(set(ids)) == 2
    assert parts == [
        {
            "functionCall": {"name": "f", "args": {"a": 1}},
            "thoughtSignature": signature_for("f", {"a": 1}),
        },
        {"functionCall": {"name": "g", "args": {}}},
    ]
    resp = await generate(client, running, body, model="gemini-2.5-flash-lite")
    parts = resp.json()["candidates"][0]["content"]["parts"]
    assert parts == [
        {"functionCall": {"name": "f", "args": {"a": 1}}},
        {"functionCall": {"name": "g", "args": {}}},
    ]


async def test_models_and_methods(running: RunningSimulator, client: httpx.AsyncClient) -> None:
    err = error(
        await generate(client, running, {"contents": [USER]}, model="gemini-embedding-001"), 404
    )
    assert "not supported for generateContent" in err["message"]
    resp = await client.post(url(running, "gemini-3.8-flash", "embedContent"), json={}, headers=KEY)
    error(resp, 404)
    resp = await client.post(
        f"{running.base_url('gemini')}/v1beta/chat/completions", json={}, headers=KEY
    )
    error(resp, 404)


async def test_sse_stream(running: RunningSimulator, client: httpx.AsyncClient) -> None:
    resp = await client.post(
        url(running, "gemini-3.8-flash", "streamGenerateContent") + "?alt=sse",
        json={"contents": [USER]},
        headers=KEY,
    )
    assert resp.headers["content-type"] == "text/event-stream"
    events = resp.content.split(b"\r\n\r\n")
    assert events[-1] == b""
    chunks = [orjson.loads(e.removeprefix(b"data: ")) for e in events[:-1]]
    text = "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks)
    assert text == "Echo: hello there"
    assert [c["candidates"][0].get("finishReason") for c in chunks] == [None, None, "STOP"]
    assert chunks[0]["usageMetadata"] == {
        "promptTokenCount": 5,
        "totalTokenCount": 5,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 5}],
    }
    assert chunks[-1]["usageMetadata"]["candidatesTokenCount"] == 3


async def test_json_array_stream(running: RunningSimulator, client: httpx.AsyncClient) -> None:
    resp = await client.post(
        url(running, "gemini-3.8-flash", "streamGenerateContent"),
        json={"contents": [USER]},
        headers=KEY,
    )
    chunks = resp.json()
    assert isinstance(chunks, list)
    assert len(chunks) == 3


async def test_directive_errors(running: RunningSimulator, client: httpx.AsyncClient) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": 'x #sim{"status": 429}'}]}]}
    resp = await generate(client, running, body)
    err = error(resp, 429)
    assert err["status"] == "RESOURCE_EXHAUSTED"
    assert err["details"][-1] == {
        "@type": "type.googleapis.com/google.rpc.RetryInfo",
        "retryDelay": "1s",
    }
    assert resp.headers["retry-after"] == "1"
    body = {"contents": [{"role": "user", "parts": [{"text": 'x #sim{"status": 503}'}]}]}
    assert error(await generate(client, running, body), 503)["status"] == "UNAVAILABLE"


async def test_block_and_thoughts(running: RunningSimulator, client: httpx.AsyncClient) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": 'x #sim{"block": true}'}]}]}
    data = (await generate(client, running, body)).json()
    assert "candidates" not in data
    assert data["promptFeedback"]["blockReason"] == "SAFETY"
    body = {
        "contents": [{"role": "user", "parts": [{"text": 'x #sim{"reasoning_tokens": 9}'}]}],
        "generationConfig": {"thinkingConfig": {"includeThoughts": True, "thinkingBudget": 1024}},
    }
    data = (await generate(client, running, body)).json()
    parts = data["candidates"][0]["content"]["parts"]
    assert parts[0]["thought"] is True
    assert parts[1] == {"text": "Echo: x"}
    assert (
        data["usageMetadata"]["thoughtsTokenCount"],
        data["usageMetadata"]["candidatesTokenCount"],
    ) == (9, 2)


async def test_batch_embed_contents(running: RunningSimulator, client: httpx.AsyncClient) -> None:
    target = url(running, "gemini-embedding-001", "batchEmbedContents")
    model = "models/gemini-embedding-001"

    def request(text: str, **extra: Any) -> dict[str, Any]:
        return {"model": model, "content": {"parts": [{"text": text}]}, **extra}

    resp = await client.post(
        target,
        json={
            "requests": [request("hello world"), request("hello world", outputDimensionality=64)]
        },
        headers=KEY,
    )
    assert resp.status_code == 200, resp.text
    data = resp.json()
    full, short = (e["values"] for e in data["embeddings"])
    assert (len(full), len(short)) == (3072, 64)
    assert math.isclose(math.hypot(*full), 1.0, rel_tol=1e-5)
    assert short == full[:64]  # truncated, not renormalised
    assert data["usageMetadata"] == {"promptTokenCount": 4}

    too_many = {"requests": [request("x")] * 101}
    assert (
        "at most 100"
        in error(await client.post(target, json=too_many, headers=KEY), 400)["message"]
    )
    other = {"requests": [{**request("x"), "model": "models/other"}]}
    assert (
        "batch's model" in error(await client.post(target, json=other, headers=KEY), 400)["message"]
    )
    big = {"requests": [request("x", outputDimensionality=4096)]}
    error(await client.post(target, json=big, headers=KEY), 400)
