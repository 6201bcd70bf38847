"""Provider key pools and upstream resilience: keys used in turn, a refused key set aside until
an operator resets it, a throttled key rested for its Retry-After, retries of what is safe to
resend with back-off that honours Retry-After within the call's deadline."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest
import trio

from tests.gateway import RunningGateway, open_gateway
from tests.simulator import RunningSimulator

MODEL = "fc:groq/llama-3.1-8b-instant"


@pytest.fixture
async def pooled(
    database_url: str, redis_url: str, simulator: RunningSimulator, tmp_path: Path
) -> AsyncIterator[RunningGateway]:
    env = {"GROQ_API_KEY": "sk-bad,sk-groq-a,sk-groq-b", "RINGSIDE_UPSTREAM_TIMEOUT_SECONDS": "5"}
    async with open_gateway(database_url, redis_url, simulator, tmp_path, env) as gw:
        yield gw


def keys_sent(gw: RunningGateway) -> list[str]:
    return [r.headers["authorization"].removeprefix("Bearer ") for r in gw.sim.chats("groq")]


async def ask(gw: RunningGateway, key: str, text: str = "hi") -> str | None:
    client = gw.openai(key)
    reply = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": text}]
    )
    return reply.choices[0].message.content


async def key_states(gw: RunningGateway) -> list[str]:
    r = await gw.admin("GET", "/providers/groq")
    assert r.status_code == 200, r.text
    return [k["state"] for k in r.json()["keys"]]


async def test_keys_are_used_in_turn_and_a_refused_key_is_set_aside(pooled: RunningGateway) -> None:
    key = await pooled.new_key()
    for _ in range(4):
        assert await ask(pooled, key) == "Echo: hi"
    # The refused key was tried once (401), set aside, and the call went on with the next key.
    assert keys_sent(pooled) == ["sk-bad", "sk-groq-a", "sk-groq-b", "sk-groq-a", "sk-groq-b"]
    assert await key_states(pooled) == ["refused", "active", "active"]

    listing = await pooled.admin("GET", "/providers")
    groq = next(p for p in listing.json()["data"] if p["id"] == "groq")
    assert all("sk-groq" not in k["key"] for k in groq["keys"])  # never shown whole

    reset = await pooled.admin("POST", "/providers/groq/keys/reset")
    assert reset.status_code == 200
    assert await key_states(pooled) == ["active", "active", "active"]


async def test_every_key_refused_is_no_active_provider_keys_without_calling(
    database_url: str, redis_url: str, simulator: RunningSimulator, tmp_path: Path
) -> None:
    env = {"GROQ_API_KEY": "sk-bad"}
    async with open_gateway(database_url, redis_url, simulator, tmp_path, env) as gw:
        client = gw.openai(await gw.new_key())
        with pytest.raises(openai.APIStatusError) as first:
            await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}]
            )
        assert first.value.status_code == 502  # the provider refused the gateway's key
        with pytest.raises(openai.APIStatusError) as second:
            await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}]
            )
        assert second.value.status_code == 503
        assert second.value.code == "no_active_provider_keys"
        assert len(gw.sim.chats("groq")) == 1  # the second call reached no provider


async def test_a_throttled_key_rests_for_its_retry_after_and_the_next_key_serves(
    pooled: RunningGateway,
) -> None:
    key = await pooled.new_key()
    await ask(pooled, key)  # sk-bad is set aside; sk-groq-a served
    pooled.sim.clear()
    pooled.sim.throttled_keys["sk-groq-b"] = 0.5
    assert await ask(pooled, key) == "Echo: hi"  # sk-groq-b: 429, at once sk-groq-a
    assert keys_sent(pooled) == ["sk-groq-b", "sk-groq-a"]
    assert await key_states(pooled) == ["refused", "active", "resting"]
    assert await ask(pooled, key) == "Echo: hi"
    assert keys_sent(pooled)[-1] == "sk-groq-a"  # sk-groq-b still resting
    del pooled.sim.throttled_keys["sk-groq-b"]
    await trio.sleep(0.6)
    assert await key_states(pooled) == ["refused", "active", "active"]


async def test_a_503_is_retried_with_back_off_and_the_call_succeeds(
    gateway: RunningGateway,
) -> None:
    client = gateway.openai(await gateway.new_key())
    text = 'flaky #sim{"flaky": {"id": "a", "times": 2, "status": 503}}'
    reply = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": text}]
    )
    assert reply.choices[0].message.content == "Echo: flaky"
    assert len(gateway.sim.chats("groq")) == 3  # two failures, then the answer


async def test_retries_honour_retry_after(gateway: RunningGateway) -> None:
    client = gateway.openai(await gateway.new_key())
    text = 'x #sim{"flaky": {"id": "b", "times": 1, "status": 429, "retry_after": 0.4}}'
    started = trio.current_time()
    reply = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": text}]
    )
    assert reply.choices[0].message.content == "Echo: x"
    assert trio.current_time() - started >= 0.4
    assert len(gateway.sim.chats("groq")) == 2


async def test_a_retry_after_beyond_the_deadline_is_not_waited_for(
    database_url: str, redis_url: str, simulator: RunningSimulator, tmp_path: Path
) -> None:
    env = {"RINGSIDE_UPSTREAM_TIMEOUT_SECONDS": "2"}
    async with open_gateway(database_url, redis_url, simulator, tmp_path, env) as gw:
        client = gw.openai(await gw.new_key())
        text = 'x #sim{"flaky": {"id": "c", "times": 1, "status": 503, "retry_after": 30}}'
        started = trio.current_time()
        with pytest.raises(openai.APIStatusError) as info:
            await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": text}]
            )
        assert info.value.status_code == 503
        assert trio.current_time() - started < 1.5
        assert len(gw.sim.chats("groq")) == 1


async def test_a_cascade_moves_on_when_retries_are_spent(gateway: RunningGateway) -> None:
    client = gateway.openai(await gateway.new_key())
    text = 'x #sim{"flaky": {"id": "d", "times": 3, "status": 502}}'
    raw = await client.chat.completions.with_raw_response.create(
        model=[MODEL, "fc:openai/gpt-4o-mini"],  # type: ignore[arg-type]
        messages=[{"role": "user", "content": text}],
    )
    assert raw.headers["x-ringside-model-used"] == "fc:openai/gpt-4o-mini"
    assert len(gateway.sim.chats("groq")) == 3  # the first try and two retries


async def test_no_retries_when_configured_off(
    database_url: str, redis_url: str, simulator: RunningSimulator, tmp_path: Path
) -> None:
    env = {"RINGSIDE_UPSTREAM_RETRIES": "0"}
    async with open_gateway(database_url, redis_url, simulator, tmp_path, env) as gw:
        client = gw.openai(await gw.new_key())
        text = 'x #sim{"flaky": {"id": "e", "times": 1, "status": 503}}'
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": text}]
            )
        assert len(gw.sim.chats("groq")) == 1


async def test_a_reset_reaches_every_process(pooled: RunningGateway) -> None:
    """The reset is announced with NOTIFY: a process's own listener applies it too."""
    svc = pooled.services
    svc.upstreams.rings["groq"].refused("sk-groq-a")
    await svc.db.execute("SELECT pg_notify('ringside_provider_keys', 'groq')")
    with trio.fail_after(5):
        while svc.upstreams.rings["groq"].usable() != 3:  # noqa: ASYNC110
            await trio.sleep(0.01)


async def test_a_provider_can_have_its_own_deadline(
    database_url: str, redis_url: str, simulator: RunningSimulator, tmp_path: Path
) -> None:
    env = {"GROQ_TIMEOUT_SECONDS": "0.3"}
    async with open_gateway(database_url, redis_url, simulator, tmp_path, env) as gw:
        client = gw.openai(await gw.new_key())
        slow = 'x #sim{"delay": 1}'
        started = trio.current_time()
        with pytest.raises(openai.APIStatusError) as info:
            await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": slow}]
            )
        assert info.value.status_code == 504
        assert info.value.code == "upstream_timeout"
        assert "0.3s" in info.value.message
        assert trio.current_time() - started < 0.9
        # Other providers keep the gateway-wide deadline (600 s): a 1 s answer is fine.
        reply = await client.chat.completions.create(
            model="fc:openai/gpt-4o-mini", messages=[{"role": "user", "content": slow}]
        )
        assert reply.choices[0].message.content == "Echo: x"
