"""Rate limits through the gateway: each layer's requests and tokens per minute, the lowest
wins, the X-RateLimit-* headers, the 429 as the openai SDK sees it (reaching no provider and
holding no money), token settlement, X-Forwarded-For through trusted proxies, Redis down."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.api.devapi import DevApi, new_dev
from tests.gateway import RunningGateway, open_gateway
from tests.simulator.server import RunningSimulator

MODEL = "fc:openai/gpt-4o-mini"
EMBEDDINGS = "fc:openai/text-embedding-3-small"


def content(text: str, prompt_tokens: int = 10, completion_tokens: int = 10) -> str:
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
    return f"{text} #sim{json.dumps({'usage': usage})}"


def chat(text: str = "hi", **more: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": content(text)}], **more}


def config(tmp_path: Path, toml: str) -> dict[str, str]:
    path = tmp_path / "ringside.toml"
    path.write_text(toml)
    return {"RINGSIDE_CONFIG": str(path)}


@pytest.fixture
def limits_env(tmp_path: Path) -> dict[str, str]:
    return config(tmp_path, "[limits.tiers.developer]\nrpm = 3\ntpm = 100000\n")


@pytest.fixture
async def limited(
    database_url: str,
    redis_url: str,
    simulator: RunningSimulator,
    data_dir: Path,
    limits_env: dict[str, str],
) -> AsyncIterator[RunningGateway]:
    async with open_gateway(database_url, redis_url, simulator, data_dir, limits_env) as gw:
        yield gw


async def post(
    gw: RunningGateway, dev: DevApi, body: dict[str, Any], path: str = "/v1/chat/completions",
    **headers: str,
) -> httpx.Response:  # fmt: skip
    return await dev(
        "POST", path, json=body, headers={"Authorization": f"Bearer {dev.key}", **headers}
    )


async def test_developer_rpm_headers_and_the_429_through_the_sdk(limited: RunningGateway) -> None:
    dev = await new_dev(limited)
    client = limited.openai(dev.key)
    remaining = []
    for i in range(3):
        raw = await client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": content(f"n{i}")}]
        )
        assert raw.headers["x-ratelimit-limit"] == "3"
        assert int(raw.headers["x-ratelimit-reset"]) >= 1
        assert raw.headers["x-ratelimit-limit-tokens"] == "100000"
        remaining.append(raw.headers["x-ratelimit-remaining"])
    assert remaining == ["2", "1", "0"]
    calls = len(limited.sim.chats())
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "one too many"}]
        )
    response = caught.value.response
    error = response.json()["error"]
    assert error["type"] == "rate_limit_error"
    assert error["code"] == "rate_limited"
    assert error["request_id"] == response.headers["x-request-id"]
    assert error["retry_after_seconds"] == 20  # one request's share of the minute at 3 RPM
    assert response.headers["retry-after"] == "20"
    assert response.headers["x-ratelimit-remaining"] == "0"
    # Refused before anything else: no provider call, no hold, no usage event.
    assert len(limited.sim.chats()) == calls
    db = limited.services.db
    assert await db.fetchval("SELECT count(*) FROM billing_hold") == 0
    rid = response.headers["x-request-id"]
    assert await db.fetchval("SELECT count(*) FROM usage_event WHERE request_id = $1", rid) == 0
    # Embeddings count against the same limit; another developer is not limited.
    r = await post(limited, dev, {"model": EMBEDDINGS, "input": "x"}, "/v1/embeddings")
    assert r.status_code == 429, r.text
    other = await new_dev(limited, "other")
    r = await post(limited, other, {"model": EMBEDDINGS, "input": "x"}, "/v1/embeddings")
    assert r.status_code == 200, r.text
    assert r.headers["x-ratelimit-remaining"] == "2"


@pytest.mark.parametrize(
    "limits_env", [{"RINGSIDE_IP_RPM_LIMIT": "2", "RINGSIDE_IP_TPM_LIMIT": "0"}]
)
async def test_the_ip_layer_spans_developers(limited: RunningGateway) -> None:
    first, second = await new_dev(limited, "a"), await new_dev(limited, "b")
    assert (await post(limited, first, chat())).status_code == 200
    r = await post(limited, second, chat())
    assert r.status_code == 200
    assert (r.headers["x-ratelimit-limit"], r.headers["x-ratelimit-remaining"]) == ("2", "0")
    r = await post(limited, second, chat())
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "rate_limited"
    assert "IP address" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    "limits_env",
    [{"RINGSIDE_IP_RPM_LIMIT": "1", "RINGSIDE_TRUSTED_PROXIES": "127.0.0.0/8, 10.0.0.0/8"}],
)
async def test_forwarded_for_counts_the_client_behind_a_trusted_proxy(
    limited: RunningGateway,
) -> None:
    dev = await new_dev(limited)

    async def status(xff: str) -> int:
        return (await post(limited, dev, chat(), **{"X-Forwarded-For": xff})).status_code

    assert await status("203.0.113.5") == 200
    assert await status("203.0.113.5") == 429
    assert await status("203.0.113.6, 10.0.0.2") == 200  # through a second trusted proxy
    # What the client writes to the left of the address its proxy saw is ignored.
    assert await status("198.51.100.77, 203.0.113.5") == 429


@pytest.mark.parametrize("limits_env", [{"RINGSIDE_IP_RPM_LIMIT": "1"}])
async def test_forwarded_for_is_ignored_without_trusted_proxies(limited: RunningGateway) -> None:
    dev = await new_dev(limited)
    assert (await post(limited, dev, chat(), **{"X-Forwarded-For": "203.0.113.1"})).is_success
    r = await post(limited, dev, chat(), **{"X-Forwarded-For": "203.0.113.2"})
    assert r.status_code == 429


async def test_customer_limits_come_from_the_customer_row(limited: RunningGateway) -> None:
    dev = await new_dev(limited)
    capped = await dev.customer(external_id="capped", rpm_limit=1)
    await dev.customer(external_id="free")
    client = limited.openai(dev.key)
    raw = await client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], user="capped"
    )
    assert (raw.headers["x-ratelimit-limit"], raw.headers["x-ratelimit-remaining"]) == ("1", "0")
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(  # by id this time: the same customer
            model=MODEL,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"FC-Customer": capped["id"]},
        )
    error = caught.value.response.json()["error"]
    assert error["code"] == "customer_rate_limit_exceeded"
    assert capped["id"] in error["message"]
    r = await post(limited, dev, chat(), **{"FC-Customer": "free"})
    assert r.status_code == 200  # the developer's 3 RPM still has room
    assert r.headers["x-ratelimit-remaining"] == "1"


async def test_customer_tpm_and_a_stub_customer_has_none(limited: RunningGateway) -> None:
    dev = await new_dev(limited)
    await dev.customer(external_id="small", tpm_limit=150)
    body = chat(max_tokens=60)  # reserves ~100: the prompt's bytes / 4, and max_tokens
    r = await post(limited, dev, body, **{"FC-Customer": "small"})
    assert r.status_code == 200, r.text
    assert r.headers["x-ratelimit-limit-tokens"] == "150"
    await limited.services.limits.wait_settled()  # used 20 of its ~100 reserved
    r = await post(limited, dev, body, **{"FC-Customer": "small"})
    assert r.status_code == 200, r.text
    await limited.services.limits.wait_settled()
    r = await post(limited, dev, chat(max_tokens=140), **{"FC-Customer": "small"})
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "customer_rate_limit_exceeded"
    assert "tokens" in r.json()["error"]["message"]
    r = await post(limited, dev, body, **{"FC-Customer": "brand-new-stub"})
    assert r.status_code == 200
    assert r.headers["x-ratelimit-limit-tokens"] == "100000"


@pytest.mark.parametrize("limits_env", [{"RINGSIDE_IP_TPM_LIMIT": "400"}])
async def test_unused_tokens_come_back_after_the_call(limited: RunningGateway) -> None:
    dev = await new_dev(limited)
    # Each reserves ~340 (prompt + max_tokens) of the 400 and uses 20: without settling,
    # the second would not fit.
    body = chat(max_tokens=300)
    for _ in range(2):  # plain and streamed (settled when the stream ends)
        r = await post(limited, dev, body)
        assert r.status_code == 200, r.text
        await limited.services.limits.wait_settled()
    async with limited.http.stream(
        "POST", "/v1/chat/completions", json={**body, "stream": True},
        headers={"Authorization": f"Bearer {dev.key}"},
    ) as stream:  # fmt: skip
        assert stream.status_code == 200
        assert stream.headers["x-ratelimit-limit-tokens"] == "400"
        assert int(stream.headers["x-ratelimit-remaining-tokens"]) < 100
        await stream.aread()
    await limited.services.limits.wait_settled()
    # Only the 60 tokens really used stay counted: a call reserving the whole 400 must wait.
    r = await post(limited, dev, chat(max_tokens=1000))
    assert r.status_code == 429
    assert "counts 400 tokens" in r.json()["error"]["message"]
    assert r.json()["error"]["retry_after_seconds"] >= 1


@pytest.mark.parametrize("limits_env", [{"RINGSIDE_RATE_LIMITS": "off"}])
async def test_limits_can_be_switched_off(limited: RunningGateway) -> None:
    dev = await new_dev(limited)
    for _ in range(5):
        r = await post(limited, dev, chat())
        assert r.status_code == 200
        assert "x-ratelimit-limit" not in r.headers


@pytest.mark.parametrize("on_error", ["open", "closed"])
async def test_redis_down(
    database_url: str,
    simulator: RunningSimulator,
    data_dir: Path,
    on_error: str,
) -> None:
    env = {"RINGSIDE_RATE_LIMITS_ON_REDIS_ERROR": on_error}
    dead = "redis://127.0.0.1:1/0"
    async with open_gateway(database_url, dead, simulator, data_dir, env) as gw:
        dev = await new_dev(gw)
        for _ in range(2):
            r = await post(gw, dev, chat())
            if on_error == "open":  # served, without limits (budgets still hold)
                assert r.status_code == 200, r.text
                assert "x-ratelimit-limit" not in r.headers
            else:
                assert r.status_code == 503, r.text
                assert r.json()["error"]["code"] == "service_unavailable"
                assert r.headers["retry-after"] == "1"
        ready = await gw.http.get("/readyz")
        assert ready.status_code != 200


@pytest.mark.parametrize("limits_env", [{"RINGSIDE_CLIENT_TOKEN_RPM_LIMIT": "2"}])
async def test_each_client_token_has_its_own_limit(limited: RunningGateway) -> None:
    dev = await new_dev(limited)
    await dev.customer(external_id="browser-user")
    origin = "https://app.example"

    async def token() -> str:
        r = await dev("POST", "/v1/customers/browser-user/client_tokens", json={"origin": origin})
        assert r.status_code == 200, r.text
        return str(r.json()["token"])

    def browser(jwt: str) -> openai.AsyncOpenAI:
        headers = {"Authorization": f"Client {jwt}", "Origin": origin}
        return limited.openai("unused", default_headers=headers)

    first = browser(await token())
    messages: list[Any] = [{"role": "user", "content": "hi"}]
    for left in ("1", "0"):
        raw = await first.chat.completions.with_raw_response.create(model=MODEL, messages=messages)
        assert (raw.headers["x-ratelimit-limit"], raw.headers["x-ratelimit-remaining"]) == (
            "2",
            left,
        )
    with pytest.raises(openai.RateLimitError) as caught:
        await first.chat.completions.create(model=MODEL, messages=messages)
    error = caught.value.response.json()["error"]
    assert error["code"] == "rate_limited"
    assert "client token" in error["message"]
    # Another token of the same customer, and the developer's own key, are not held back.
    await browser(await token()).chat.completions.create(model=MODEL, messages=messages)
    assert (await post(limited, dev, chat(), **{"FC-Customer": "browser-user"})).is_success
