"""``response_format`` on every provider: passed through where the catalog says the model
enforces it, enforced by Ringside elsewhere (instruction, validation, re-prompts, 422), in
cascades and streams, every attempt billed. Through the openai SDK against the simulator; a
catalog override gives OpenAI-wire models without the ``json_schema`` capability."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from ringside.catalog import load_catalog
from ringside.domain import structured_output
from ringside.domain.billing import CallBounds
from ringside.domain.modelrefs import ResolvedModel
from tests.gateway import RunningGateway, open_gateway
from tests.simulator.app import Received
from tests.simulator.completion import make_plan
from tests.simulator.openapi import validate
from tests.simulator.server import RunningSimulator

NATIVE = "fc:openai/gpt-4o-mini"  # json_schema in the catalog
PLAIN = "fc:openai/sim-plain"  # no json_schema: enforced
PLAIN_2 = "fc:openai/sim-plain-2"
PRICES = {"input": "1.00", "output": "2.00"}
PRICES_2 = {"input": "3.00", "output": "5.00"}  # sim-plain-2: each model billed at its own
CITY_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}
CITY = {
    "type": "json_schema",
    "json_schema": {"name": "city", "strict": True, "schema": CITY_SCHEMA},
}
PARIS = '{"city": "Paris"}'


def _model(name: str, prices: dict[str, str] = PRICES) -> dict[str, Any]:
    return {
        "provider": "openai",
        "model": name,
        "family": name,
        "version": "1",
        "released": "2026-01-01",
        "context_window": 32000,
        "max_output_tokens": 1000,
        "pricing": prices,
        "capabilities": ["chat", "streaming"],
    }


@pytest.fixture
async def gw(
    database_url: str, redis_url: str, simulator: RunningSimulator, tmp_path: Path
) -> AsyncIterator[RunningGateway]:
    catalog = tmp_path / "catalog.json"
    catalog.write_text(
        json.dumps({"models": [_model("sim-plain"), _model("sim-plain-2", PRICES_2)]})
    )
    env = {"RINGSIDE_CATALOG": str(catalog)}
    async with open_gateway(database_url, redis_url, simulator, tmp_path, env) as running:
        yield running


def ask(text: str, **directive: Any) -> list[dict[str, Any]]:
    return [{"role": "user", "content": f"{text} #sim{json.dumps(directive)}"}]


def billed(calls: list[Received]) -> tuple[int, int]:
    """(prompt, completion) tokens the simulator reported for these calls, summed."""
    plans = [make_plan(c.json, None).usage for c in calls]
    return sum(p["prompt_tokens"] for p in plans), sum(p["completion_tokens"] for p in plans)  # type: ignore[index]


def cost(prompt: int, completion: int) -> Decimal:
    return (prompt * Decimal("1.00") + completion * Decimal("2.00")) / 1_000_000


async def test_a_native_target_gets_the_body_unchanged(gw: RunningGateway) -> None:
    client = gw.openai(await gw.new_key())
    messages = ask("Where?", reply=PARIS)
    reply = await client.chat.completions.create(
        model=NATIVE,
        messages=messages,  # type: ignore[arg-type]
        response_format=CITY,  # type: ignore[arg-type]
        extra_body={"schema_retries": 1},
    )
    assert reply.choices[0].message.content == PARIS
    [sent] = gw.sim.chats("openai")
    assert sent.json["response_format"] == CITY
    assert sent.json["messages"] == messages
    assert "schema_retries" not in sent.json  # the extension never goes upstream


async def test_an_enforced_target_is_instructed_and_its_answer_validated(
    gw: RunningGateway,
) -> None:
    client = gw.openai(await gw.new_key())
    raw = await client.chat.completions.with_raw_response.create(
        model=PLAIN,
        messages=[
            {"role": "system", "content": "You are terse."},
            *ask("Where?", reply=PARIS),
        ],  # type: ignore[list-item]
        response_format=CITY,  # type: ignore[arg-type]
    )
    assert raw.parse().choices[0].message.content == PARIS
    validate(orjson.loads(raw.http_response.content), "CreateChatCompletionResponse")
    [sent] = gw.sim.chats("openai")
    assert "response_format" not in sent.json
    roles = [m["role"] for m in sent.json["messages"]]
    assert roles == ["system", "system", "user"]  # after the client's own system message
    instruction = sent.json["messages"][1]["content"]
    assert "Reply with only a JSON document that validates against" in instruction
    assert json.dumps(CITY_SCHEMA, sort_keys=True, separators=(",", ":")) in instruction
    event = await gw.usage_event(raw.headers["x-request-id"])
    assert (event["input_tokens"], event["output_tokens"]) == billed([sent])


async def test_an_invalid_answer_is_re_prompted_with_the_error_and_both_are_billed(
    gw: RunningGateway,
) -> None:
    client = gw.openai(await gw.new_key())
    raw = await client.chat.completions.with_raw_response.create(
        model=PLAIN,
        messages=ask("Where?", replies=['{"city": 75}', PARIS]),  # type: ignore[arg-type]
        response_format=CITY,  # type: ignore[arg-type]
    )
    reply = raw.parse()
    assert reply.choices[0].message.content == PARIS
    first, second = gw.sim.chats("openai")
    assert second.json["messages"][:-2] == first.json["messages"]
    answer, reprompt = second.json["messages"][-2:]
    assert answer == {"role": "assistant", "content": '{"city": 75}'}
    assert reprompt["role"] == "user"
    assert "at $.city: 75 is not of type 'string'" in reprompt["content"]

    prompt, completion = billed([first, second])
    assert reply.usage is not None  # the reply's usage sums the attempts
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (prompt, completion)
    event = await gw.usage_event(raw.headers["x-request-id"])
    assert (event["input_tokens"], event["output_tokens"]) == (prompt, completion)
    assert event["status"] == "ok"
    assert event["usage_source"] == "upstream"
    assert event["cost_usd"] == cost(prompt, completion)


async def test_a_persistent_failure_is_a_422_with_the_content_and_every_attempt_billed(
    gw: RunningGateway,
) -> None:
    client = gw.openai(await gw.new_key())
    with pytest.raises(openai.UnprocessableEntityError) as info:
        await client.chat.completions.create(
            model=PLAIN,
            messages=ask("Where?", reply="Paris, of course."),  # type: ignore[arg-type]
            response_format=CITY,  # type: ignore[arg-type]
        )
    error = info.value.body
    assert isinstance(error, dict)
    assert error["code"] == "response_schema_validation_failed"
    assert error["type"] == "api_error"
    assert error["param"] == "response_format"
    assert error["content"] == "Paris, of course."
    assert "after 2 re-prompt(s)" in error["message"]
    assert "Paris, of course." in error["message"]
    calls = gw.sim.chats("openai")
    assert len(calls) == 3  # 1 + the default 2 re-prompts
    event = await gw.usage_event(error["request_id"])
    assert event["status"] == "upstream_error"
    assert event["http_status"] == 422
    assert (event["input_tokens"], event["output_tokens"]) == billed(calls)
    assert event["cost_usd"] == cost(*billed(calls))


@pytest.mark.parametrize(("retries", "calls"), [(0, 1), (1, 2), (4, 5)])
async def test_schema_retries_sets_the_re_prompts(
    gw: RunningGateway, retries: int, calls: int
) -> None:
    client = gw.openai(await gw.new_key())
    with pytest.raises(openai.UnprocessableEntityError):
        await client.chat.completions.create(
            model=PLAIN,
            messages=ask("Where?", reply="nope"),  # type: ignore[arg-type]
            response_format=CITY,  # type: ignore[arg-type]
            extra_body={"schema_retries": retries},
        )
    sent = gw.sim.chats("openai")
    assert len(sent) == calls
    assert all("schema_retries" not in s.json for s in sent)


@pytest.mark.parametrize("value", [-1, 6, "2", True, None])
async def test_a_bad_schema_retries_is_a_400(gw: RunningGateway, value: Any) -> None:
    client = gw.openai(await gw.new_key())
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(
            model=PLAIN,
            messages=ask("Where?"),  # type: ignore[arg-type]
            response_format=CITY,  # type: ignore[arg-type]
            extra_body={"schema_retries": value},
        )
    assert info.value.code == "invalid_request"
    body = info.value.body
    assert isinstance(body, dict)
    assert body["param"] == "schema_retries"
    assert gw.sim.chats() == []


@pytest.mark.parametrize(
    "response_format",
    [
        {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "objec"}}},
        {"type": "json_schema", "json_schema": {"name": "x", "schema": {"minLength": -1}}},
        {"type": "json_schema", "json_schema": {"schema": CITY_SCHEMA}},
        {"type": "json_schema", "json_schema": {"name": "has space", "schema": CITY_SCHEMA}},
        {"type": "json_schema"},
        {"type": "json_schema", "json_schema": {"name": "x", "schema": []}},
    ],
)
@pytest.mark.parametrize("model", [PLAIN, NATIVE])
async def test_an_invalid_schema_is_a_400_before_any_call(
    gw: RunningGateway, response_format: dict[str, Any], model: str
) -> None:
    client = gw.openai(await gw.new_key())
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(
            model=model,
            messages=ask("Where?"),  # type: ignore[arg-type]
            response_format=response_format,  # type: ignore[arg-type]
        )
    assert info.value.code == "invalid_request"
    body = info.value.body
    assert isinstance(body, dict)
    assert body["param"] == "response_format"
    assert gw.sim.chats() == []
    count = await gw.services.db.fetchval("SELECT count(*) FROM usage_event")
    assert count == 0


async def test_json_object_is_enforced_where_not_native(gw: RunningGateway) -> None:
    client = gw.openai(await gw.new_key())
    reply = await client.chat.completions.create(
        model=PLAIN,
        messages=ask("Numbers?", replies=["[1, 2]", '{"n": [1, 2]}']),  # type: ignore[arg-type]
        response_format={"type": "json_object"},
    )
    assert reply.choices[0].message.content == '{"n": [1, 2]}'
    first, second = gw.sim.chats("openai")
    assert "response_format" not in first.json
    assert "Reply with only a JSON object" in first.json["messages"][0]["content"]
    assert "it is JSON but not a JSON object" in second.json["messages"][-1]["content"]

    # On the OpenAI wire with the capability, json_object is the provider's own.
    await client.chat.completions.create(
        model=NATIVE,
        messages=ask("Numbers?", reply='{"n": 1}'),  # type: ignore[arg-type]
        response_format={"type": "json_object"},
    )
    native = gw.sim.chats("openai")[-1].json
    assert native["response_format"] == {"type": "json_object"}
    assert [m["role"] for m in native["messages"]] == ["user"]


async def test_a_fenced_answer_is_unwrapped(gw: RunningGateway) -> None:
    client = gw.openai(await gw.new_key())
    reply = await client.chat.completions.create(
        model=PLAIN,
        messages=ask("Where?", reply=f"```json\n{PARIS}\n```"),  # type: ignore[arg-type]
        response_format=CITY,  # type: ignore[arg-type]
    )
    assert reply.choices[0].message.content == PARIS
    assert len(gw.sim.chats("openai")) == 1


async def test_a_cascade_moves_on_after_a_schema_failure_and_bills_both(
    gw: RunningGateway,
) -> None:
    client = gw.openai(await gw.new_key())
    raw = await client.chat.completions.with_raw_response.create(
        model=[PLAIN, PLAIN_2],  # type: ignore[arg-type]
        messages=ask(  # type: ignore[arg-type]
            "Where?", replies={"sim-plain": ["Paris"], "sim-plain-2": [PARIS]}
        ),
        response_format=CITY,  # type: ignore[arg-type]
        extra_body={"schema_retries": 1},
    )
    assert raw.parse().choices[0].message.content == PARIS
    assert raw.headers["x-ringside-models-tried"] == f"{PLAIN},{PLAIN_2}"
    assert raw.headers["x-ringside-model-used"] == PLAIN_2
    assert raw.headers["x-ringside-fallback-triggered"] == "true"
    calls = gw.sim.chats("openai")
    assert [c.json["model"] for c in calls] == ["sim-plain", "sim-plain", "sim-plain-2"]
    event = await gw.usage_event(raw.headers["x-request-id"])
    assert event["model_resolved"] == PLAIN_2
    assert (event["input_tokens"], event["output_tokens"]) == billed(calls)
    # Each model's tokens at its own prices.
    (p1, c1), (p2, c2) = billed(calls[:2]), billed(calls[2:])
    expected = cost(p1, c1) + (p2 * Decimal("3.00") + c2 * Decimal("5.00")) / 1_000_000
    assert event["cost_usd"] == expected


async def test_a_cascade_whose_every_model_fails_the_schema_is_a_422(gw: RunningGateway) -> None:
    client = gw.openai(await gw.new_key())
    with pytest.raises(openai.UnprocessableEntityError) as info:
        await client.chat.completions.create(
            model=[PLAIN, PLAIN_2],  # type: ignore[arg-type]
            messages=ask("Where?", reply="Paris"),  # type: ignore[arg-type]
            response_format=CITY,  # type: ignore[arg-type]
            extra_body={"schema_retries": 0},
        )
    calls = gw.sim.chats("openai")
    assert [c.json["model"] for c in calls] == ["sim-plain", "sim-plain-2"]
    error = info.value.body
    assert isinstance(error, dict)
    event = await gw.usage_event(error["request_id"])
    assert event["model_resolved"] == PLAIN_2  # the last tried, billed for both
    assert (event["input_tokens"], event["output_tokens"]) == billed(calls)
    (p1, c1), (p2, c2) = billed(calls[:1]), billed(calls[1:])
    expected = cost(p1, c1) + (p2 * Decimal("3.00") + c2 * Decimal("5.00")) / 1_000_000
    assert event["cost_usd"] == expected


async def test_a_billed_422_is_replayed_to_an_idempotent_retry(gw: RunningGateway) -> None:
    """Every attempt of a 422 was billed: a retry with the same Idempotency-Key gets the
    same answer without calling the provider or billing again."""
    key = await gw.new_key()
    body = {
        "model": PLAIN,
        "messages": ask("Where?", reply="Paris"),
        "response_format": CITY,
        "schema_retries": 0,
    }
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": "schema-1"}
    first = await gw.http.post("/v1/chat/completions", json=body, headers=headers)
    assert first.status_code == 422
    again = await gw.http.post("/v1/chat/completions", json=body, headers=headers)
    assert again.status_code == 422
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert len(gw.sim.chats("openai")) == 1
    events = await gw.services.db.fetchval("SELECT count(*) FROM usage_event")
    assert events == 1


async def _sse(gw: RunningGateway, key: str, body: dict[str, Any]) -> tuple[str, list[Any]]:
    """(request id, the data events of a raw stream, parsed; ``[DONE]`` as the string)."""
    async with gw.http.stream(
        "POST", "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
    ) as r:
        assert r.status_code == 200
        text = (await r.aread()).decode()
    events: list[Any] = []
    for block in text.split("\n\n"):
        if block.startswith("data: "):
            data = block[len("data: ") :]
            events.append(data if data == "[DONE]" else json.loads(data))
    return r.headers["x-request-id"], events


async def test_a_valid_stream_ends_with_done(gw: RunningGateway) -> None:
    key = await gw.new_key()
    client = gw.openai(key)
    stream = await client.chat.completions.create(
        model=PLAIN,
        messages=ask("Where?", reply=PARIS),  # type: ignore[arg-type]
        response_format=CITY,  # type: ignore[arg-type]
        stream=True,
    )
    text = [c.delta.content or "" async for chunk in stream for c in chunk.choices]
    assert "".join(text) == PARIS
    sent = gw.sim.chats("openai")[-1].json
    assert "response_format" not in sent
    assert "JSON Schema" in sent["messages"][0]["content"]

    _, events = await _sse(
        gw,
        key,
        {
            "model": PLAIN,
            "messages": ask("Where?", reply=PARIS),
            "response_format": CITY,
            "stream": True,
        },
    )
    assert events[-1] == "[DONE]"
    assert not any(isinstance(e, dict) and "error" in e for e in events)


async def test_an_invalid_stream_raises_in_the_sdk_and_is_billed(gw: RunningGateway) -> None:
    key = await gw.new_key()
    client = gw.openai(key)
    raw = await client.chat.completions.with_raw_response.create(
        model=PLAIN,
        messages=ask("Where?", reply='{"city": 75}'),  # type: ignore[arg-type]
        response_format=CITY,  # type: ignore[arg-type]
        stream=True,
    )
    seen: list[str] = []

    async def read_all() -> None:
        async for chunk in raw.parse():
            seen.extend(c.delta.content or "" for c in chunk.choices)

    with pytest.raises(openai.APIError) as info:
        await read_all()
    assert "".join(seen) == '{"city": 75}'  # every chunk went through before the verdict
    error = info.value.body
    assert isinstance(error, dict)
    assert error["code"] == "response_schema_validation_failed"
    assert error["content"] == '{"city": 75}'
    assert "75 is not of type 'string'" in error["message"]
    assert len(gw.sim.chats("openai")) == 1  # a stream is never re-prompted
    event = await gw.usage_event(raw.headers["x-request-id"])
    assert event["status"] == "upstream_error"
    assert event["http_status"] == 422
    assert event["usage_source"] == "upstream"
    assert (event["input_tokens"], event["output_tokens"]) == billed(gw.sim.chats("openai"))

    _, events = await _sse(
        gw,
        key,
        {
            "model": PLAIN,
            "messages": ask("Where?", reply='{"city": 75}'),
            "response_format": CITY,
            "stream": True,
        },
    )
    assert "[DONE]" not in events
    assert events[-1]["error"]["code"] == "response_schema_validation_failed"


async def test_a_stream_that_cannot_be_json_ends_at_once(gw: RunningGateway) -> None:
    key = await gw.new_key()
    words = " ".join(["word"] * 200)
    request_id, events = await _sse(
        gw,
        key,
        {
            "model": PLAIN,
            "messages": ask("Where?", reply=f"Sure! {words}", chunk_delay=0.01),
            "response_format": CITY,
            "stream": True,
        },
    )
    error = events[-1]["error"]
    assert error["code"] == "response_schema_validation_failed"
    assert "starts with 'Sure!" in error["message"]
    assert len(events) < 10  # not the 200 words: the upstream stream was closed
    await gw.sim.wait_until(lambda sim: sim.cancelled_streams == 1)
    event = await gw.usage_event(request_id)
    assert event["http_status"] == 422
    assert event["output_tokens"] > 0  # counted: what was generated is billed


async def test_a_stream_on_a_native_target_is_relayed_unchecked(gw: RunningGateway) -> None:
    key = await gw.new_key()
    _, events = await _sse(
        gw,
        key,
        {
            "model": NATIVE,
            "messages": ask("Where?", reply="Paris"),
            "response_format": CITY,
            "stream": True,
        },
    )
    assert events[-1] == "[DONE]"
    assert gw.sim.chats("openai")[-1].json["response_format"] == CITY


def test_the_reservation_covers_every_attempt() -> None:
    catalog = load_catalog()
    native = catalog.by_ref(NATIVE)
    assert native is not None
    plain = ResolvedModel("x", dataclasses.replace(native, capabilities=frozenset({"chat"})))
    output = structured_output.parse({"response_format": CITY, "schema_retries": 2})
    assert output is not None
    once = CallBounds(1000, 100, 1).worst_cost(plain.model)
    enforced = structured_output.bounds(output, [plain], 1000, 100, 1, stream=False)
    # Three attempts, the later prompts carrying the earlier answers and re-prompts.
    assert enforced.worst_cost(plain.model) > 3 * once
    streamed = structured_output.bounds(output, [plain], 1000, 100, 1, stream=True)
    assert once < streamed.worst_cost(plain.model) < 2 * once
    native_only = structured_output.bounds(
        output, [ResolvedModel("y", native)], 1000, 100, 1, stream=False
    )
    assert native_only.worst_cost(native) == once  # one attempt, as without a format


async def test_a_plain_request_is_not_touched(gw: RunningGateway) -> None:
    """No response_format: the body goes upstream as the client sent it (the fast path)."""
    client = gw.openai(await gw.new_key())
    messages = ask("hello")
    await client.chat.completions.create(model=PLAIN, messages=messages)  # type: ignore[arg-type]
    assert gw.sim.chats("openai")[-1].json["messages"] == messages
    r = await gw.http.post(
        "/v1/chat/completions",
        json={"model": PLAIN, "messages": messages, "response_format": {"type": "text"}},
        headers={"Authorization": f"Bearer {await gw.new_key()}"},
    )
    assert r.status_code == 200, r.text
    assert gw.sim.chats("openai")[-1].json["response_format"] == {"type": "text"}
    assert isinstance(r, httpx.Response)


@pytest.mark.parametrize(
    "model", ["fc:replicate/meta/meta-llama-3-8b-instruct", "fc:bedrock/amazon.nova-pro-v1:0"]
)
async def test_enforcement_over_a_native_adapter(gw: RunningGateway, model: str) -> None:
    client = gw.openai(await gw.new_key())
    reply = await client.chat.completions.create(
        model=model,
        messages=ask("Where?", replies=["Paris", PARIS]),  # type: ignore[arg-type]
        response_format=CITY,  # type: ignore[arg-type]
    )
    assert reply.choices[0].message.content == PARIS
    provider = model.removeprefix("fc:").split("/")[0]
    calls = [r for r in gw.sim.received if r.provider == provider]
    assert len(calls) == 2  # re-prompted once, through the provider's own wire
    assert "response_format" not in calls[0].json
    stream = await client.chat.completions.create(
        model=model,
        messages=ask("Where?", reply=PARIS),  # type: ignore[arg-type]
        response_format=CITY,  # type: ignore[arg-type]
        stream=True,
    )
    assert "".join([c.delta.content or "" async for k in stream for c in k.choices]) == PARIS


@pytest.mark.filterwarnings(
    "ignore:(deprecated|The Assistants API is deprecated):DeprecationWarning"
)
async def test_a_run_on_an_enforced_model_is_instructed_and_checked(gw: RunningGateway) -> None:
    """Runs read their model's stream: an enforced model is instructed, and an answer that
    does not fit ends the run ``failed`` (a stream cannot be re-prompted)."""
    client = gw.openai(await gw.new_key())
    assistant = await client.beta.assistants.create(
        model=PLAIN,
        response_format=CITY,  # type: ignore[arg-type]
    )
    good = await client.beta.threads.create(
        messages=[{"role": "user", "content": f"Where? #sim{json.dumps({'reply': PARIS})}"}]
    )
    run = await client.beta.threads.runs.create_and_poll(
        thread_id=good.id, assistant_id=assistant.id
    )
    assert run.status == "completed", run.last_error
    [sent] = gw.sim.chats("openai")
    assert "response_format" not in sent.json
    assert any(
        m["role"] == "system" and "Reply with only a JSON document" in m["content"]
        for m in sent.json["messages"]
    )
    page = await client.beta.threads.messages.list(thread_id=good.id, order="desc", limit=1)
    assert page.data[0].content[0].text.value == PARIS  # type: ignore[union-attr]

    bad = await client.beta.threads.create(
        messages=[{"role": "user", "content": f"Where? #sim{json.dumps({'reply': 'Paris'})}"}]
    )
    failed = await client.beta.threads.runs.create_and_poll(
        thread_id=bad.id, assistant_id=assistant.id
    )
    assert failed.status == "failed"
    assert failed.last_error is not None
    assert failed.last_error.message.startswith("response_schema_validation_failed")
    assert failed.usage is not None
    assert failed.usage.completion_tokens > 0  # billed
