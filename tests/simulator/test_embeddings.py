"""The simulator's Embeddings endpoint against real HTTP: every provider's layout, OpenAI's wire
shape (validated against the OpenAPI extract), deterministic vectors, ``dimensions``,
``base64``, token inputs, OpenAI's refusals and the ``#sim`` directives."""

from __future__ import annotations

import base64
import math
import struct
from typing import Any

import httpx
import pytest
import trio
from openai import AsyncOpenAI

from .embedding import MAX_INPUTS
from .helpers import AUTH, error_body
from .openapi import validate
from .providers import NATIVE_PROVIDERS, PROVIDER_BASES
from .server import RunningSimulator

OPENAI_STYLE = sorted(set(PROVIDER_BASES) - {"azure_openai"} - NATIVE_PROVIDERS)
AZURE_VERSION = {"api-version": "2024-10-21"}


async def embed(
    client: httpx.AsyncClient,
    running: RunningSimulator,
    provider: str = "openai",
    headers: dict[str, str] | None = None,
    **body: Any,
) -> httpx.Response:
    body.setdefault("model", "text-embedding-3-small")
    url = running.base_url(provider) + "/embeddings"
    return await client.post(url, json=body, headers=AUTH if headers is None else headers)


def ok(resp: httpx.Response) -> dict[str, Any]:
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/json"
    body: dict[str, Any] = resp.json()
    validate(body, "CreateEmbeddingResponse")
    return body


def decoded(body: dict[str, Any]) -> dict[str, Any]:
    """The body with base64 embeddings decoded (the spec types ``embedding`` as floats only)."""
    for item in body["data"]:
        raw = base64.b64decode(item["embedding"])
        item["embedding"] = list(struct.unpack(f"<{len(raw) // 4}f", raw))
    return body


def norm(values: list[float]) -> float:
    return math.sqrt(sum(v * v for v in values))


@pytest.mark.parametrize("provider", OPENAI_STYLE)
async def test_every_provider_embeds(
    running: RunningSimulator, client: httpx.AsyncClient, provider: str
) -> None:
    body = ok(await embed(client, running, provider, input="the quick brown fox"))
    assert body["object"] == "list"
    assert body["model"] == "text-embedding-3-small"
    (item,) = body["data"]
    assert item["object"] == "embedding"
    assert item["index"] == 0
    assert len(item["embedding"]) == 1536
    assert norm(item["embedding"]) == pytest.approx(1.0, abs=1e-5)
    assert body["usage"] == {"prompt_tokens": 4, "total_tokens": 4}
    (seen,) = running.sim.embeddings(provider)
    assert (seen.method, seen.path) == ("POST", PROVIDER_BASES[provider] + "/embeddings")
    assert running.sim.chats() == []


async def test_azure_deployment_layout(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    url = running.base_url("azure_openai") + "/openai/deployments/text-embedding-3-large/embeddings"
    key = {"api-key": "k"}
    resp = await client.post(url, params=AZURE_VERSION, json={"input": "hi"}, headers=key)
    body = ok(resp)
    assert body["model"] == "text-embedding-3-large"
    assert len(body["data"][0]["embedding"]) == 3072
    assert running.sim.embeddings("azure_openai")[-1].query == "api-version=2024-10-21"
    error_body(await client.post(url, json={"input": "hi"}, headers=key), 404)
    resp = await client.post(url, params=AZURE_VERSION, json={"input": "hi"}, headers=AUTH)
    assert error_body(resp, 401)["code"] == "invalid_api_key"


async def test_vectors_are_deterministic_per_input(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    body = ok(await embed(client, running, input=["alpha", "beta", "alpha"]))
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    one, two, three = (d["embedding"] for d in body["data"])
    assert one == three
    assert one != two
    again = ok(await embed(client, running, "groq", input="alpha"))
    assert again["data"][0]["embedding"] == one
    # Directives are not part of the text embedded or counted.
    steered = ok(await embed(client, running, input='alpha #sim{"delay": 0}'))
    assert steered["data"][0]["embedding"] == one
    assert steered["usage"]["prompt_tokens"] == 1
    assert body["usage"] == {"prompt_tokens": 3, "total_tokens": 3}


async def test_dimensions_shorten_and_renormalise(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    full = ok(await embed(client, running, input="shorten me"))["data"][0]["embedding"]
    short = ok(await embed(client, running, input="shorten me", dimensions=8))["data"][0]
    assert len(short["embedding"]) == 8
    assert norm(short["embedding"]) == pytest.approx(1.0, abs=1e-5)
    scale = norm(full[:8])
    assert short["embedding"] == pytest.approx([v / scale for v in full[:8]], rel=1e-4)
    err = error_body(await embed(client, running, input="x", dimensions=1537), 400)
    assert err["param"] == "dimensions"
    err = error_body(await embed(client, running, input="x", dimensions=0), 400)
    assert err["param"] == "dimensions"
    resp = await embed(client, running, model="text-embedding-ada-002", input="x", dimensions=8)
    assert error_body(resp, 400)["message"] == "This model does not support specifying dimensions."


async def test_base64_is_little_endian_float32_of_the_floats(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    floats = ok(await embed(client, running, input=["a b", "c"]))
    resp = await embed(client, running, input=["a b", "c"], encoding_format="base64")
    assert resp.status_code == 200, resp.text
    raw = resp.json()
    assert all(isinstance(d["embedding"], str) for d in raw["data"])
    body = decoded(raw)
    validate(body, "CreateEmbeddingResponse")
    assert [d["embedding"] for d in body["data"]] == [d["embedding"] for d in floats["data"]]
    assert body["usage"] == floats["usage"]
    err = error_body(await embed(client, running, input="a", encoding_format="binary"), 400)
    assert err["param"] == "encoding_format"


async def test_token_inputs_count_their_tokens(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    single = ok(await embed(client, running, input=[1212, 318, 257]))
    assert len(single["data"]) == 1
    assert single["usage"]["prompt_tokens"] == 3
    many = ok(await embed(client, running, input=[[1212, 318], [257], [1212, 318]]))
    assert len(many["data"]) == 3
    assert many["usage"]["prompt_tokens"] == 5
    assert many["data"][0]["embedding"] == many["data"][2]["embedding"]
    assert many["data"][0]["embedding"] != single["data"][0]["embedding"]


@pytest.mark.parametrize(
    "value",
    [
        "",
        [],
        ["a", ""],
        [[]],
        [[1], []],
        ["a", 1],
        [[1], "a"],
        [-1],
        [1.5],
        [True],
        {"text": "a"},
        None,
        ["x"] * (MAX_INPUTS + 1),
    ],
)
async def test_invalid_inputs_are_refused_as_openai_does(
    running: RunningSimulator, client: httpx.AsyncClient, value: Any
) -> None:
    err = error_body(await embed(client, running, input=value), 400)
    assert err["type"] == "invalid_request_error"
    assert err["message"].startswith("'$.input' is invalid.")
    assert err["param"] is None
    assert err["code"] is None


async def test_the_input_limit_is_inclusive(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    body = ok(await embed(client, running, input=["x"] * MAX_INPUTS, dimensions=1))
    assert len(body["data"]) == MAX_INPUTS
    assert body["data"][-1]["index"] == MAX_INPUTS - 1


async def test_missing_fields_and_bad_bodies(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    err = error_body(await embed(client, running), 400)
    assert (err["param"], err["code"]) == ("input", "missing_required_parameter")
    url = running.base_url("openai") + "/embeddings"
    resp = await client.post(url, json={"input": "x"}, headers=AUTH)
    assert "model" in error_body(resp, 400)["message"]
    resp = await client.post(url, content=b"{nope", headers=AUTH)
    assert "parse the JSON" in error_body(resp, 400)["message"]
    error_body(await embed(client, running, headers={}, input="x"), 401)
    error_body(await client.get(url, headers=AUTH), 405)


async def test_directives(running: RunningSimulator, client: httpx.AsyncClient) -> None:
    err = error_body(await embed(client, running, input='x #sim{"status": 503}'), 503)
    assert err["type"] == "server_error"
    resp = await embed(client, running, input=["a", 'b #sim{"status": 429}'])
    error_body(resp, 429)
    assert resp.headers["retry-after"] == "1"
    over = '#sim{"usage": {"prompt_tokens": 1234}, "headers": {"x-sim": "1"}} a'
    resp = await embed(client, running, input=over)
    assert ok(resp)["usage"] == {"prompt_tokens": 1234, "total_tokens": 1234}
    assert resp.headers["x-sim"] == "1"
    resp = await embed(client, running, input='a #sim{"no_usage": true}')
    assert resp.status_code == 200
    assert "usage" not in resp.json()
    with trio.move_on_after(0.2) as scope:
        await embed(client, running, input='slow #sim{"delay": 5}')
    assert scope.cancelled_caught
    await running.sim.wait_until(lambda s: s.cancelled_requests == 1)


async def test_through_the_openai_sdk(running: RunningSimulator) -> None:
    async with AsyncOpenAI(
        base_url=running.base_url("openai"), api_key="sk-test", max_retries=0
    ) as sdk:
        # The SDK asks for base64 unless told otherwise and decodes it to floats itself.
        implicit = await sdk.embeddings.create(model="text-embedding-3-small", input="one two")
        explicit = await sdk.embeddings.create(
            model="text-embedding-3-small", input="one two", encoding_format="float", dimensions=4
        )
    assert running.sim.embeddings()[0].json["encoding_format"] == "base64"
    assert len(implicit.data[0].embedding) == 1536
    assert len(explicit.data[0].embedding) == 4
    assert implicit.usage.prompt_tokens == 2
    scale = norm(implicit.data[0].embedding[:4])
    expected = [v / scale for v in implicit.data[0].embedding[:4]]
    assert explicit.data[0].embedding == pytest.approx(expected, rel=1e-4)
