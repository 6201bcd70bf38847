"""``Idempotency-Key``: the first request executes, a retry replays it without calling the
provider or billing again; another body is a 409; keys are per developer."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
import trio

from tests.gateway import RunningGateway

MODEL = "fc:openai/gpt-4o-mini"


def chat(content: str = "hello there", **more: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **more}


async def post(gw: RunningGateway, key: str, body: dict[str, Any], idem: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": idem, "FC-Customer": "c1"}
    return await gw.http.post("/v1/chat/completions", json=body, headers=headers)


async def billed(gw: RunningGateway) -> int:
    return int(await gw.services.db.fetchval("SELECT count(*) FROM usage_event"))


async def test_a_retry_replays_without_calling_the_provider_or_billing(
    gateway: RunningGateway,
) -> None:
    key = await gateway.new_key()
    first = await post(gateway, key, chat(), "k-1")
    assert first.status_code == 200
    calls = len(gateway.sim.chats())
    again = await post(gateway, key, chat(), "k-1")
    assert again.status_code == 200
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["x-ringside-model-used"] == first.headers["x-ringside-model-used"]
    assert again.headers["content-type"] == "application/json"
    assert again.headers["x-request-id"] != first.headers["x-request-id"]
    assert len(gateway.sim.chats()) == calls
    assert await billed(gateway) == 1


async def test_through_the_sdk_including_streams(gateway: RunningGateway) -> None:
    key = await gateway.new_key()
    client = gateway.openai(key)
    headers = {"Idempotency-Key": "sdk-1"}
    one = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], extra_headers=headers
    )
    two = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], extra_headers=headers
    )
    assert one.id == two.id
    stream_headers = {"Idempotency-Key": "sdk-stream"}
    texts = []
    for _ in range(2):
        stream = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "a b c"}], stream=True,
            extra_headers=stream_headers,
        )  # fmt: skip
        texts.append("".join([c.choices[0].delta.content or "" async for c in stream]))
    assert texts == ["Echo: a b c"] * 2
    assert len(gateway.sim.chats()) == 2
    assert await billed(gateway) == 2


async def test_the_same_key_with_another_body_is_a_409(gateway: RunningGateway) -> None:
    key = await gateway.new_key()
    assert (await post(gateway, key, chat("one"), "k-2")).status_code == 200
    r = await post(gateway, key, chat("two"), "k-2")
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "idempotency_key_reused"
    # Key order and whitespace do not make another body.
    same = {"messages": [{"content": "one", "role": "user"}], "model": MODEL}
    assert (await post(gateway, key, same, "k-2")).status_code == 200


async def test_keys_are_scoped_per_developer(gateway: RunningGateway) -> None:
    one, two = await gateway.new_key(), await gateway.new_key()
    assert (await post(gateway, one, chat("x"), "shared")).status_code == 200
    assert (await post(gateway, two, chat("y"), "shared")).status_code == 200
    assert len(gateway.sim.chats()) == 2


async def test_a_concurrent_duplicate_gets_a_clear_409(gateway: RunningGateway) -> None:
    key = await gateway.new_key()
    slow = chat('wait #sim{"delay": 0.5}')
    results: list[httpx.Response] = []

    async def send() -> None:
        results.append(await post(gateway, key, slow, "k-3"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        await trio.sleep(0.2)
        nursery.start_soon(send)
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200, 409]
    conflict = next(r for r in results if r.status_code == 409)
    assert conflict.json()["error"]["code"] == "idempotency_key_in_progress"
    assert conflict.headers["retry-after"] == "1"
    assert (await post(gateway, key, slow, "k-3")).headers["idempotent-replayed"] == "true"


async def test_a_failed_call_releases_its_key(gateway: RunningGateway) -> None:
    key = await gateway.new_key()
    failing = chat('x #sim{"status": 503}')
    assert (await post(gateway, key, failing, "k-4")).status_code == 503
    assert (await post(gateway, key, failing, "k-4")).status_code == 503
    # Each client retry ran (nothing was billed), each with the gateway's own two upstream
    # retries of a 503.
    assert len(gateway.sim.chats()) == 2 * 3


async def test_a_cascade_with_a_key_is_refused(gateway: RunningGateway) -> None:
    key = await gateway.new_key()
    client = gateway.openai(key)
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(
            model=[MODEL, "fc:openai/gpt-4o"],  # type: ignore[arg-type]
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"Idempotency-Key": "k-5"},
        )
    assert info.value.code == "fallback_with_idempotency_unsupported"
    assert gateway.sim.chats() == []


async def test_a_bad_key_is_a_400(gateway: RunningGateway) -> None:
    key = await gateway.new_key()
    r = await post(gateway, key, chat(), "x" * 256)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "Idempotency-Key"
