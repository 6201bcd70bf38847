"""Every bad input gets the SPEC §6 envelope with a request id, and changes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.gateway import RunningGateway, open_gateway
from tests.simulator.server import RunningSimulator

CHAT = "/v1/chat/completions"
GOOD = {"model": "fc:openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def assert_envelope(r: httpx.Response, status: int, code: str, type_: str | None = None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    error = r.json()["error"]
    assert set(error) == {"type", "code", "message", "request_id", "retry_after_seconds", "param"}
    assert error["code"] == code
    if type_:
        assert error["type"] == type_
    assert error["message"]
    assert error["request_id"] == r.headers["x-request-id"]
    return error


async def post(gw: RunningGateway, key: str, body: Any, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", **kw.pop("headers", {})}
    if isinstance(body, (bytes, str)):
        return await gw.http.post(CHAT, content=body, headers=headers, **kw)
    return await gw.http.post(CHAT, json=body, headers=headers, **kw)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"", None),
        (b"[1, 2]", None),
        ({"messages": [{"role": "user", "content": "x"}]}, None),
        ({"model": "fc:openai/gpt-4o-mini"}, None),
        ({**GOOD, "messages": []}, "messages"),
        ({**GOOD, "messages": "hello"}, "messages"),
        ({**GOOD, "messages": [{"content": "no role"}]}, "messages.0"),
        ({**GOOD, "messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
        ({**GOOD, "temperature": "hot"}, "temperature"),
        ({**GOOD, "temperature": 3}, "temperature"),
        ({**GOOD, "max_tokens": 0}, "max_tokens"),
        ({**GOOD, "n": "two"}, "n"),
        ({**GOOD, "stream": "yes"}, "stream"),
        ({**GOOD, "tools": [{"function": {"name": "f"}}]}, "tools.0"),
        ({**GOOD, "tool_choice": "sometimes"}, "tool_choice"),
        ({**GOOD, "response_format": {"type": "yaml"}}, "response_format.type"),
        ({**GOOD, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({**GOOD, "model": 42}, "model"),
    ],
)
async def test_bad_bodies_are_400_invalid_request(
    gateway: RunningGateway, body: Any, param: str | None
) -> None:
    key = await gateway.new_key()
    error = assert_envelope(
        await post(gateway, key, body), 400, "invalid_request", "invalid_request_error"
    )
    if param is not None:
        assert error["param"] == param
    assert gateway.sim.chats() == []


@pytest.mark.parametrize(
    "model",
    [
        "gpt-4o",
        "openai/gpt-4o",
        "fc:nosuch/model",
        "fc:openai",
        "slot:missing",
        "match:openai",
        "match:anthropic/sonnet>=99",
        "bogus:openai/gpt-4o",
        ["fc:openai/gpt-4o-mini", "gpt-4o"],
    ],
)
async def test_bad_model_refs(gateway: RunningGateway, model: Any) -> None:
    key = await gateway.new_key()
    error = assert_envelope(
        await post(gateway, key, {**GOOD, "model": model}),
        400,
        "invalid_model_ref",
        "invalid_request_error",
    )
    assert error["param"] == "model"
    assert gateway.sim.chats() == []


async def test_a_model_the_catalog_cannot_price_never_reaches_a_provider(
    gateway: RunningGateway,
) -> None:
    key = await gateway.new_key()
    for model in ("fc:openai/not-a-real-model", ["fc:openai/gpt-4o-mini", "fc:groq/nope"]):
        error = assert_envelope(
            await post(gateway, key, {**GOOD, "model": model}), 400, "unknown_model_pricing"
        )
        assert error["param"] == "model"
        assert "RINGSIDE_CATALOG" in error["message"]
    assert gateway.sim.chats() == []
    assert await gateway.services.db.fetchval("SELECT count(*) FROM billing_hold") == 0


async def test_bare_model_name_through_the_sdk(gateway: RunningGateway) -> None:
    client = gateway.openai(await gateway.new_key())
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.code == "invalid_model_ref"


async def test_cascade_with_stream_is_rejected(gateway: RunningGateway) -> None:
    key = await gateway.new_key()
    body = {
        **GOOD,
        "model": ["fc:openai/gpt-4o-mini", "fc:groq/llama-3.3-70b-versatile"],
        "stream": True,
    }
    assert_envelope(await post(gateway, key, body), 400, "fallback_with_stream_unsupported")


@pytest.mark.parametrize(
    "auth", [None, "Bearer", "Bearer sk_live_nope", "Basic abc", "Bearer " + "x" * 300]
)
async def test_bad_api_keys_are_401(gateway: RunningGateway, auth: str | None) -> None:
    headers = {"Authorization": auth} if auth else {}
    r = await gateway.http.post(CHAT, json=GOOD, headers=headers)
    assert_envelope(r, 401, "invalid_api_key", "authentication_error")


async def test_unknown_route_and_wrong_method(gateway: RunningGateway) -> None:
    assert_envelope(await gateway.http.get("/v1/nothing-here"), 404, "not_found", "not_found_error")
    assert_envelope(await gateway.http.get(CHAT), 405, "method_not_allowed")
    assert_envelope(await gateway.http.delete("/v1/models"), 405, "method_not_allowed")


async def test_oversize_body_is_413(gateway: RunningGateway) -> None:
    key = await gateway.new_key()
    limit = gateway.services.settings.max_body_bytes
    r = await post(gateway, key, b"x" * (limit + 1), headers={"content-type": "application/json"})
    assert_envelope(r, 413, "request_too_large")


@pytest.mark.parametrize(
    ("directive", "status", "code"),
    [
        ('{"status": 500}', 503, "upstream_unavailable"),
        ('{"status": 503}', 503, "upstream_unavailable"),
        ('{"status": 401}', 502, "upstream_error"),
        ('{"status": 400}', 400, "upstream_rejected_request"),
        ('{"status": 429}', 429, "upstream_rate_limited"),
    ],
)
async def test_upstream_errors_are_mapped(
    gateway: RunningGateway, directive: str, status: int, code: str
) -> None:
    key = await gateway.new_key()
    body = {**GOOD, "messages": [{"role": "user", "content": f"x #sim{directive}"}]}
    for stream in (False, True):
        # A 401 sets the gateway's only key aside and a 429 rests it (tests/api/
        # test_key_pools.py): bring it back, as an operator would, to see the second mapping.
        gateway.services.upstreams.reset_keys()
        r = await post(gateway, key, {**body, "stream": stream})
        error = assert_envelope(r, status, code)
        if status == 429:
            assert r.headers["retry-after"] == "1"
            assert error["retry_after_seconds"] == 1
        event = await gateway.usage_event(error["request_id"])
        assert event["status"] == "upstream_error"
        assert event["http_status"] == status
        assert event["cost_usd"] == 0


async def test_missing_provider_key_is_503(
    database_url: str, redis_url: str, simulator: RunningSimulator, data_dir: Path
) -> None:
    async with open_gateway(
        database_url, redis_url, simulator, data_dir, {"OPENAI_API_KEY": ""}
    ) as gw:
        key = await gw.new_key()
        assert_envelope(await post(gw, key, GOOD), 503, "no_active_provider_keys")
        assert gw.sim.chats() == []


async def test_upstream_timeouts_are_504(
    database_url: str, redis_url: str, simulator: RunningSimulator, data_dir: Path
) -> None:
    env = {
        "RINGSIDE_UPSTREAM_TIMEOUT_SECONDS": "0.3",
        "RINGSIDE_STREAM_IDLE_TIMEOUT_SECONDS": "0.3",
    }
    async with open_gateway(database_url, redis_url, simulator, data_dir, env) as gw:
        key = await gw.new_key()
        slow = {**GOOD, "messages": [{"role": "user", "content": 'x #sim{"delay": 5}'}]}
        for stream in (False, True):
            error = assert_envelope(
                await post(gw, key, {**slow, "stream": stream}),
                504,
                "upstream_timeout",
                "api_error",
            )
            assert (await gw.usage_event(error["request_id"]))["status"] == "timeout"
        # A stream that stalls after it started ends with an error event, and is metered.
        stalls = {
            **GOOD,
            "stream": True,
            "messages": [{"role": "user", "content": 'a b c #sim{"chunk_delay": 5}'}],
        }
        r = await post(gw, key, stalls)
        assert r.status_code == 200
        assert r.text.rstrip().endswith('"retry_after_seconds":null}}')
        assert '"code":"upstream_timeout"' in r.text
        assert "[DONE]" not in r.text
        event = await gw.usage_event(r.headers["x-request-id"])
        assert event["status"] == "timeout"


async def test_every_response_has_a_request_id(gateway: RunningGateway) -> None:
    for r in (
        await gateway.http.get("/healthz"),
        await gateway.http.get("/nope"),
        await gateway.http.post(CHAT, json=GOOD),
    ):
        assert r.headers["x-request-id"].startswith("req_")


async def test_overlong_customer_id_is_400(gateway: RunningGateway) -> None:
    key = await gateway.new_key()
    r = await post(gateway, key, GOOD, headers={"FC-Customer": "c" * 257})
    assert assert_envelope(r, 400, "invalid_request")["param"] == "FC-Customer"
    r = await post(gateway, key, {**GOOD, "user": "u" * 257})
    assert assert_envelope(r, 400, "invalid_request")["param"] == "user"
    assert gateway.sim.chats() == []


async def test_control_characters_are_refused(gateway: RunningGateway) -> None:
    key = await gateway.new_key()
    r = await post(gateway, key, {**GOOD, "user": "a\x00b"})
    assert assert_envelope(r, 400, "invalid_request")["param"] == "user"
    r = await post(gateway, key, {**GOOD, "model": "fc:ollama/llama\x00"})
    assert_envelope(r, 400, "invalid_model_ref")
    r = await gateway.admin("POST", "/developers", json={"name": "nul\x00"})
    assert_envelope(r, 400, "invalid_request")
    assert gateway.sim.chats() == []


async def test_answers_before_reading_the_body_keep_the_connection_usable(
    gateway: RunningGateway,
) -> None:
    # Refused before any handler reads the body (bad key, wrong method, GET with a body): the
    # keep-alive connection must still answer the next requests (it used to wedge).
    for _ in range(15):
        for method, path in (("POST", "/v1/chat/completions"), ("POST", "/v1/models"),
                             ("GET", "/healthz")):  # fmt: skip
            r = await gateway.http.request(
                method, path, content=b"x" * 100, headers={"Authorization": "Bearer nope"}
            )
            assert r.status_code in (200, 401, 405)
