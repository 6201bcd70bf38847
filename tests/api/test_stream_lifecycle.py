"""Client disconnects cancel the upstream at once and are still metered; cascades and slots
fall back on provider failure."""

from __future__ import annotations

import socket
from pathlib import Path

import openai
import pytest
import trio

from ringside.domain import chat
from ringside.domain.chat_request import ChatRequest
from ringside.domain.metering import CallContext
from ringside.ids import new_request_id
from tests.gateway import RunningGateway, open_gateway
from tests.simulator.server import RunningSimulator

SLOW_STREAM = {
    "model": "fc:openai/gpt-4o-mini",
    "stream": True,
    "messages": [
        {
            "role": "user",
            "content": 'one two three four five six seven eight nine ten #sim{"chunk_delay": 0.2}',
        }
    ],
}


async def test_client_disconnect_mid_stream_cancels_upstream_and_meters(
    gateway: RunningGateway,
) -> None:
    key = await gateway.new_key()
    async with gateway.http.stream(
        "POST", "/v1/chat/completions", json=SLOW_STREAM, headers={"Authorization": f"Bearer {key}"}
    ) as r:
        request_id = r.headers["x-request-id"]
        seen = b""
        async for part in r.aiter_bytes():
            seen += part
            if seen.count(b"\n\n") >= 3:
                break
    # The upstream sees its client (the gateway) go away promptly, not at the stream's end.
    with trio.fail_after(1.0):
        await gateway.sim.wait_until(lambda s: s.cancelled_streams == 1)
    event = await gateway.usage_event(request_id)
    assert event["status"] == "client_aborted"
    assert event["http_status"] == 499
    assert event["usage_source"] == "counted"
    assert 0 < event["output_tokens"] < 10
    assert event["input_tokens"] > 0


@pytest.mark.parametrize("stream", [False, True])
async def test_client_disconnect_while_waiting_cancels_upstream(
    gateway: RunningGateway, stream: bool
) -> None:
    key = await gateway.new_key()
    body = {
        "model": "fc:openai/gpt-4o-mini",
        "stream": stream,
        "messages": [{"role": "user", "content": 'x #sim{"delay": 10}'}],
    }
    with trio.move_on_after(0.5):
        await gateway.http.post(
            "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
        )
    with trio.fail_after(1.0):
        await gateway.sim.wait_until(lambda s: s.cancelled_requests == 1)
    with trio.fail_after(2.0):
        while True:
            row = await gateway.services.db.fetchrow(
                "SELECT status, http_status FROM usage_event ORDER BY id DESC LIMIT 1"
            )
            if row is not None:
                break
            await trio.sleep(0.02)
    assert dict(row) == {"status": "client_aborted", "http_status": 499}


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"  # nothing listens there any more


async def test_cascade_falls_back_to_the_next_model(
    database_url: str, redis_url: str, simulator: RunningSimulator, data_dir: Path
) -> None:
    async with open_gateway(
        database_url, redis_url, simulator, data_dir, {"OPENAI_BASE_URL": _dead_url()}
    ) as gw:
        client = gw.openai(await gw.new_key())
        raw = await client.chat.completions.with_raw_response.create(
            model=["fc:openai/gpt-4o-mini", "fc:groq/llama-3.3-70b-versatile"],  # type: ignore[arg-type]
            messages=[{"role": "user", "content": "hi"}],
        )
        assert raw.parse().choices[0].message.content == "Echo: hi"
        assert raw.headers["x-ringside-model-used"] == "fc:groq/llama-3.3-70b-versatile"
        assert raw.headers["x-ringside-models-tried"] == (
            "fc:openai/gpt-4o-mini,fc:groq/llama-3.3-70b-versatile"
        )
        assert raw.headers["x-ringside-fallback-triggered"] == "true"
        event = await gw.usage_event(raw.headers["x-request-id"])
        assert event["provider"] == "groq"
        assert event["status"] == "ok"


async def test_slot_from_config_falls_back_while_streaming_has_not_started(
    database_url: str,
    redis_url: str,
    simulator: RunningSimulator,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    config = tmp_path / "ringside.toml"
    config.write_text('[slots]\nfast = ["fc:openai/gpt-4o-mini", "fc:groq/llama-3.1-8b-instant"]\n')
    async with open_gateway(
        database_url,
        redis_url,
        simulator,
        data_dir,
        {"OPENAI_BASE_URL": _dead_url(), "RINGSIDE_CONFIG": str(config)},
    ) as gw:
        client = gw.openai(await gw.new_key())
        raw = await client.chat.completions.with_raw_response.create(
            model="slot:fast", messages=[{"role": "user", "content": "a b"}], stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in raw.parse() if c.choices])
        assert text == "Echo: a b"
        assert raw.headers["x-ringside-model-used"] == "fc:groq/llama-3.1-8b-instant"
        assert raw.headers["x-ringside-fallback-triggered"] == "true"


async def test_all_models_failing_is_503_and_metered_once(
    database_url: str, redis_url: str, simulator: RunningSimulator, data_dir: Path
) -> None:
    dead = _dead_url()
    async with open_gateway(
        database_url,
        redis_url,
        simulator,
        data_dir,
        {"OPENAI_BASE_URL": dead, "GROQ_BASE_URL": dead},
    ) as gw:
        key = await gw.new_key()
        r = await gw.http.post(
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={
                "model": ["fc:openai/gpt-4o-mini", "fc:groq/llama-3.1-8b-instant"],
                "messages": [{"role": "user", "content": "x"}],
            },
        )
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "upstream_unavailable"
        event = await gw.usage_event(r.headers["x-request-id"])
        assert event["status"] == "upstream_error"
        count = await gw.services.db.fetchval("SELECT count(*) FROM usage_event")
        assert count == 1


async def test_provider_dropping_a_stream_surfaces_as_an_sdk_error(
    gateway: RunningGateway,
) -> None:
    client = gateway.openai(await gateway.new_key())
    raw = await client.chat.completions.with_raw_response.create(
        model="fc:openai/gpt-4o-mini",
        messages=[{"role": "user", "content": 'a b c d e f #sim{"stream_error_after": 2}'}],
        stream=True,
    )
    seen: list[str] = []

    async def read_all() -> None:
        async for chunk in raw.parse():
            seen.extend(c.delta.content or "" for c in chunk.choices)

    with pytest.raises(openai.APIError, match="ended the stream before it was complete"):
        await read_all()
    assert "".join(seen).startswith("Echo:")
    event = await gateway.usage_event(raw.headers["x-request-id"])
    assert event["status"] == "upstream_error"
    assert event["usage_source"] == "counted"
    assert event["output_tokens"] > 0


async def test_a_stream_body_that_never_starts_is_closed_and_settled(
    database_url: str, redis_url: str, simulator: RunningSimulator, data_dir: Path
) -> None:
    """Quart sends a response's headers before it enters its body: a client leaving in between
    leaves the relay unread and unclosed. The unstarted-stream guard closes it after its grace:
    the hold is settled (client_aborted) and the upstream stream is closed."""
    env = {"RINGSIDE_STREAM_START_GRACE_SECONDS": "0.4"}
    async with open_gateway(database_url, redis_url, simulator, data_dir, env) as gw:
        svc = gw.services
        key = await gw.new_key()
        caller = await svc.auth.caller_from({"Authorization": f"Bearer {key}"})
        body = {
            "model": "fc:openai/gpt-4o-mini",
            "messages": [{"role": "user", "content": "one two three"}],
            "stream": True,
        }
        req = ChatRequest.parse(body, None)
        ctx = CallContext(
            request_id=new_request_id(),
            developer_id=caller.developer_id,
            api_key_id=caller.key_id,
            customer_ref=None,
            model_requested="fc:openai/gpt-4o-mini",
            stream=True,
            started=trio.current_time(),
        )
        ended: list[str] = []
        streaming = await chat.open_stream(
            svc, caller, ctx, req, chat.plan(svc, req), lambda o, s, u: ended.append(o)
        )
        assert len(svc.unstarted_streams) == 1
        db = svc.db
        assert await db.fetchval("SELECT count(*) FROM billing_hold") == 1
        with trio.fail_after(3):
            while await db.fetchval("SELECT count(*) FROM billing_hold"):  # noqa: ASYNC110
                await trio.sleep(0.05)
        assert ended == ["client_aborted"]
        assert len(svc.unstarted_streams) == 0
        status = await db.fetchval(
            "SELECT status FROM usage_event WHERE request_id = $1", ctx.request_id
        )
        assert status == "client_aborted"
        with trio.fail_after(3):  # the upstream stream was closed too
            while gw.sim.open_streams:  # noqa: ASYNC110
                await trio.sleep(0.05)
        assert streaming.relay is not None
