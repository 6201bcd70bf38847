"""Runs through the official openai SDK: polled lifecycles, run parameters, the thread lock,
billing per model call, webhooks, idempotency, and the wire shapes against OpenAI's spec."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest
import trio

from ringside.store.bridge import open_storage
from tests.api.devapi import assert_error, new_dev
from tests.api.runapi import MODEL, raw_run, run_setup
from tests.gateway import RunningGateway, open_gateway
from tests.simulator.openapi import validate
from tests.simulator.server import RunningSimulator

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ORIGIN = "https://app.example"


async def test_create_and_poll_completes(gateway: RunningGateway) -> None:
    dev, client, asst_id, thread_id = await run_setup(gateway, instructions="Be brief.")
    run = await client.beta.threads.runs.create_and_poll(
        thread_id=thread_id, assistant_id=asst_id, metadata={"k": "v"}
    )
    assert run.status == "completed"
    assert run.usage is not None
    assert run.usage.total_tokens > 0
    assert run.metadata == {"k": "v"}
    messages = await client.beta.threads.messages.list(thread_id=thread_id)
    reply = messages.data[0]
    assert reply.role == "assistant"
    assert reply.run_id == run.id
    assert reply.assistant_id == asst_id
    assert reply.status == "completed"
    assert reply.content[0].type == "text"
    assert reply.content[0].text.value == "Echo: hello there"
    # The upstream saw the instructions as a system message, then the thread.
    sent = gateway.sim.chats()[-1].json
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["messages"][1] == {"role": "user", "content": "hello there"}
    # Wire shapes.
    body = await raw_run(dev, thread_id, run.id)
    validate(body, "RunObject")
    assert body["expires_at"] is None
    assert body["completed_at"] >= body["created_at"]
    steps = await dev.ok("GET", f"/v1/threads/{thread_id}/runs/{run.id}/steps")
    validate(steps, "ListRunStepsResponse")
    [step] = steps["data"]
    assert step["type"] == "message_creation"
    assert step["status"] == "completed"
    assert step["step_details"]["message_creation"]["message_id"] == reply.id
    assert step["usage"] == body["usage"]
    one = await client.beta.threads.runs.steps.retrieve(
        step["id"], thread_id=thread_id, run_id=run.id
    )
    assert one.id == step["id"]
    # One usage event for the one model call, linked through the step.
    row = await gateway.services.db.fetchrow(
        "SELECT s.request_id, u.input_tokens, u.output_tokens, u.status FROM run_step s"
        " JOIN usage_event u ON u.request_id = s.request_id WHERE s.id = $1",
        step["id"],
    )
    assert row is not None
    assert row["status"] == "ok"
    assert (row["input_tokens"], row["output_tokens"]) == (
        body["usage"]["prompt_tokens"],
        body["usage"]["completion_tokens"],
    )
    # The run.completed webhook, through the outbox.
    event = await gateway.services.db.fetchrow(
        "SELECT type, data FROM webhook_event WHERE type LIKE 'run.%'"
    )
    assert event is not None
    assert event["type"] == "run.completed"


async def test_create_and_run_poll(gateway: RunningGateway) -> None:
    dev = await new_dev(gateway)
    client = gateway.openai(dev.key)
    asst = await client.beta.assistants.create(model=MODEL)
    run = await client.beta.threads.create_and_run_poll(
        assistant_id=asst.id,
        thread={"messages": [{"role": "user", "content": "first one"}], "metadata": {"a": "b"}},
    )
    assert run.status == "completed"
    thread = await client.beta.threads.retrieve(run.thread_id)
    assert thread.metadata == {"a": "b"}
    messages = await client.beta.threads.messages.list(thread_id=run.thread_id, order="asc")
    assert [m.role for m in messages.data] == ["user", "assistant"]
    assert messages.data[1].content[0].text.value == "Echo: first one"


async def test_run_overrides_reach_the_model(gateway: RunningGateway) -> None:
    dev, client, asst_id, thread_id = await run_setup(gateway, instructions="base")
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    run = await client.beta.threads.runs.create_and_poll(
        thread_id=thread_id,
        assistant_id=asst_id,
        model="fc:openai/gpt-4o",
        instructions="override",
        additional_instructions="and more",
        additional_messages=[{"role": "user", "content": "added"}],
        tools=[tool],
        tool_choice="none",
        parallel_tool_calls=False,
        response_format={"type": "json_object"},
        temperature=0.5,
        top_p=0.9,
        max_completion_tokens=300,
        truncation_strategy={"type": "last_messages", "last_messages": 1},
    )
    assert run.status == "completed"
    assert run.model == "fc:openai/gpt-4o"
    assert run.instructions == "override\n\nand more"
    assert run.truncation_strategy is not None
    assert run.truncation_strategy.last_messages == 1
    sent = gateway.sim.chats()[-1].json
    assert sent["model"] == "gpt-4o"
    assert sent["messages"] == [
        {"role": "system", "content": "override\n\nand more"},
        {"role": "user", "content": "added"},  # last_messages: 1
    ]
    assert sent["tool_choice"] == "none"
    assert sent["parallel_tool_calls"] is False
    assert sent["response_format"] == {"type": "json_object"}
    assert (sent["temperature"], sent["top_p"], sent["max_completion_tokens"]) == (0.5, 0.9, 300)
    validate(await raw_run(dev, thread_id, run.id), "RunObject")


async def test_max_completion_tokens_ends_incomplete(gateway: RunningGateway) -> None:
    words = " ".join(f"w{i}" for i in range(400))
    content = f'long #sim{{"reply": "{words}"}}'
    dev, client, asst_id, thread_id = await run_setup(gateway, content)
    run = await client.beta.threads.runs.create_and_poll(
        thread_id=thread_id, assistant_id=asst_id, max_completion_tokens=256
    )
    assert run.status == "incomplete"
    assert run.incomplete_details is not None
    assert run.incomplete_details.reason == "max_completion_tokens"
    assert run.usage is not None
    assert run.usage.completion_tokens == 256
    messages = await client.beta.threads.messages.list(thread_id=thread_id)
    assert messages.data[0].status == "incomplete"
    assert messages.data[0].incomplete_details is not None
    validate(await raw_run(dev, thread_id, run.id), "RunObject")
    event = await gateway.services.db.fetchrow(
        "SELECT type FROM webhook_event WHERE type LIKE 'run.%'"
    )
    assert event is not None
    assert event["type"] == "run.completed"


async def test_max_prompt_tokens_truncates_then_ends_incomplete(gateway: RunningGateway) -> None:
    dev = await new_dev(gateway)
    client = gateway.openai(dev.key)
    asst = await client.beta.assistants.create(model=MODEL)
    old = " ".join(["old"] * 2000)  # ~2,000 tokens by the 4-characters rule
    thread = await client.beta.threads.create(
        messages=[{"role": "user", "content": old}, {"role": "user", "content": "recent"}]
    )
    run = await client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=asst.id, max_prompt_tokens=256
    )
    assert run.status == "completed"
    sent = gateway.sim.chats()[-1].json
    assert sent["messages"] == [{"role": "user", "content": "recent"}]  # auto truncation
    big = await client.beta.threads.create(messages=[{"role": "user", "content": old}])
    run = await client.beta.threads.runs.create_and_poll(
        thread_id=big.id, assistant_id=asst.id, max_prompt_tokens=256
    )
    assert run.status == "incomplete"
    assert run.incomplete_details is not None
    assert run.incomplete_details.reason == "max_prompt_tokens"


async def test_a_provider_without_a_usable_key_fails_the_run(gateway: RunningGateway) -> None:
    dev, client, asst_id, thread_id = await run_setup(gateway)
    gateway.services.upstreams.rings["anthropic"].refused("sk-anthropic-test")
    run = await client.beta.threads.runs.create_and_poll(
        thread_id=thread_id, assistant_id=asst_id, model="fc:anthropic/claude-fable-5"
    )
    assert run.status == "failed"
    assert run.last_error is not None
    assert run.last_error.code == "server_error"
    assert run.last_error.message.startswith("no_active_provider_keys")
    validate(await raw_run(dev, thread_id, run.id), "RunObject")
    event = await gateway.services.db.fetchrow(
        "SELECT type, data FROM webhook_event WHERE type LIKE 'run.%'"
    )
    assert event is not None
    assert event["type"] == "run.failed"
    assert '"reason": "error"' in event["data"]
    # The lock is released.
    again = await client.beta.threads.runs.create_and_poll(
        thread_id=thread_id, assistant_id=asst_id
    )
    assert again.status == "completed"


async def test_cancel_a_waiting_and_a_running_run(gateway: RunningGateway) -> None:
    content = 'slow #sim{"delay": 10}'
    dev, client, asst_id, thread_id = await run_setup(gateway, content)
    run = await client.beta.threads.runs.create(thread_id=thread_id, assistant_id=asst_id)
    await gateway.sim.wait_until(lambda s: s.open_streams == 1 or len(s.chats()) == 1)
    cancelling = await client.beta.threads.runs.cancel(run.id, thread_id=thread_id)
    assert cancelling.status in ("cancelling", "cancelled")
    with trio.fail_after(3):
        run = await client.beta.threads.runs.poll(run.id, thread_id=thread_id)
    assert run.status == "cancelled"
    assert run.cancelled_at is not None
    await gateway.sim.wait_until(lambda s: s.cancelled_requests == 1)
    event = await gateway.services.db.fetchrow(
        "SELECT data FROM webhook_event WHERE type = 'run.failed'"
    )
    assert event is not None
    assert '"reason": "cancelled"' in event["data"]
    usage = await gateway.services.db.fetchrow(
        "SELECT status FROM usage_event ORDER BY id DESC LIMIT 1"
    )
    assert usage is not None
    assert usage["status"] == "client_aborted"
    # A finished run cannot be cancelled.
    r = await dev("POST", f"/v1/threads/{thread_id}/runs/{run.id}/cancel")
    assert_error(r, 400, "invalid_request")


async def test_402_budget_refusal_leaves_nothing(gateway: RunningGateway) -> None:
    dev, client, asst_id, thread_id = await run_setup(gateway)
    await dev.customer(external_id="broke", monthly_budget_usd="0")
    db = gateway.services.db
    before = await db.fetchval("SELECT count(*) FROM thread_message")
    r = await dev(
        "POST",
        f"/v1/threads/{thread_id}/runs",
        json={
            "assistant_id": asst_id,
            "user": "broke",
            "additional_messages": [{"role": "user", "content": "more"}],
        },
    )
    assert_error(r, 402, "customer_budget_exceeded")
    assert await db.fetchval("SELECT count(*) FROM run") == 0
    assert await db.fetchval("SELECT count(*) FROM thread_message") == before
    assert await db.fetchval("SELECT count(*) FROM usage_event") == 0
    assert await db.fetchval("SELECT count(*) FROM billing_hold") == 0
    # The thread is not locked: a run without that customer goes through.
    run = await client.beta.threads.runs.create_and_poll(thread_id=thread_id, assistant_id=asst_id)
    assert run.status == "completed"


async def test_idempotent_run_create_replays(gateway: RunningGateway) -> None:
    dev, _, asst_id, thread_id = await run_setup(gateway)
    headers = {"Idempotency-Key": "run-once"}
    path = f"/v1/threads/{thread_id}/runs"
    first = await dev("POST", path, json={"assistant_id": asst_id}, headers=headers)
    assert first.status_code == 200, first.text
    second = await dev("POST", path, json={"assistant_id": asst_id}, headers=headers)
    assert second.status_code == 200
    assert second.headers["idempotent-replayed"] == "true"
    assert second.json()["id"] == first.json()["id"]
    assert await gateway.services.db.fetchval("SELECT count(*) FROM run") == 1
    # create_and_run too.
    body = {"assistant_id": asst_id, "thread": {"messages": [{"role": "user", "content": "x"}]}}
    a = await dev("POST", "/v1/threads/runs", json=body, headers={"Idempotency-Key": "tr"})
    b = await dev("POST", "/v1/threads/runs", json=body, headers={"Idempotency-Key": "tr"})
    assert a.status_code == b.status_code == 200
    assert a.json()["id"] == b.json()["id"]
    assert await gateway.services.db.fetchval("SELECT count(*) FROM run") == 2


async def test_poll_header_list_update_and_isolation(gateway: RunningGateway) -> None:
    dev, client, asst_id, thread_id = await run_setup(gateway, 'x #sim{"delay": 0.3}')
    r = await dev("POST", f"/v1/threads/{thread_id}/runs", json={"assistant_id": asst_id})
    assert r.status_code == 200
    validate(r.json(), "RunObject")
    assert r.json()["status"] == "queued"
    assert int(r.headers["openai-poll-after-ms"]) <= 500
    run_id = r.json()["id"]
    got = await dev("GET", f"/v1/threads/{thread_id}/runs/{run_id}")
    assert "openai-poll-after-ms" in got.headers
    await client.beta.threads.runs.poll(run_id, thread_id=thread_id)
    # The run's first model call carries the id of the request that started it.
    step_request = await gateway.services.db.fetchval(
        "SELECT request_id FROM run_step WHERE run_id = $1", run_id
    )
    assert step_request == r.headers["x-request-id"]
    updated = await client.beta.threads.runs.update(
        run_id, thread_id=thread_id, metadata={"tag": "x"}
    )
    assert updated.metadata == {"tag": "x"}
    listed = await dev("GET", f"/v1/threads/{thread_id}/runs")
    validate(listed.json(), "ListRunsResponse")
    assert [d["id"] for d in listed.json()["data"]] == [run_id]
    other = await new_dev(gateway, "other")
    r = await other("GET", f"/v1/threads/{thread_id}/runs/{run_id}")
    assert_error(r, 404, "not_found")


async def test_invalid_run_params_are_400s(gateway: RunningGateway) -> None:
    dev, _, asst_id, thread_id = await run_setup(gateway)
    path = f"/v1/threads/{thread_id}/runs"
    for body, param in [
        ({}, "assistant_id"),
        ({"assistant_id": asst_id, "temperature": 3}, "temperature"),
        ({"assistant_id": asst_id, "max_completion_tokens": 10}, "max_completion_tokens"),
        ({"assistant_id": asst_id, "tool_choice": "sometimes"}, "tool_choice"),
        ({"assistant_id": asst_id, "truncation_strategy": {"type": "x"}}, "truncation_strategy"),
        ({"assistant_id": asst_id, "expires_in_seconds": 0}, "expires_in_seconds"),
        ({"assistant_id": asst_id, "model": "gpt-4o"}, "model"),
        ({"assistant_id": asst_id, "bogus": 1}, "bogus"),
    ]:
        r = await dev("POST", path, json=body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["param"] == param, body
    r = await dev(
        "POST", path, json={"assistant_id": asst_id, "tools": [{"type": "code_interpreter"}]}
    )
    assert_error(r, 400, "unsupported_tool_type")
    r = await dev("POST", path, json={"assistant_id": "asst_nope"})
    assert_error(r, 404, "not_found")
    assert await gateway.services.db.fetchval("SELECT count(*) FROM run") == 0


async def test_expires_in_seconds(gateway: RunningGateway) -> None:
    dev, _, asst_id, thread_id = await run_setup(gateway, 'x #sim{"delay": 0.3}')
    r = await dev(
        "POST",
        f"/v1/threads/{thread_id}/runs",
        json={"assistant_id": asst_id, "expires_in_seconds": 120},
    )
    body = r.json()
    assert 119 <= body["expires_at"] - body["created_at"] <= 121


async def test_attribution_bills_the_customer_and_fills_the_webhook(
    gateway: RunningGateway,
) -> None:
    dev, client, asst_id, thread_id = await run_setup(gateway)
    run = await client.beta.threads.runs.create_and_poll(
        thread_id=thread_id, assistant_id=asst_id, extra_body={"user": "customer_42"}
    )
    assert run.status == "completed"
    db = gateway.services.db
    customer_id = await db.fetchval(
        "SELECT id FROM customer WHERE external_id = 'customer_42' AND stub"
    )
    assert customer_id is not None
    assert await db.fetchval("SELECT customer_id FROM run WHERE id = $1", run.id) == customer_id
    usage = await db.fetchrow("SELECT customer_id FROM usage_event")
    assert usage is not None
    assert usage["customer_id"] == customer_id
    raw = await db.fetchval("SELECT data FROM webhook_event WHERE type = 'run.completed'")
    data = json.loads(raw)
    assert set(data) == {
        "run_id", "thread_id", "assistant_id", "customer_id", "status", "model", "last_error",
        "incomplete_details", "usage", "created_at", "ended_at",
    }  # fmt: skip
    assert data["run_id"] == run.id
    assert data["thread_id"] == thread_id
    assert data["customer_id"] == customer_id
    assert data["usage"]["total_tokens"] == run.usage.total_tokens if run.usage else False
    assert data["ended_at"] >= data["created_at"]
    # The FC-Customer header works as well, on create_and_run.
    r = await dev(
        "POST",
        "/v1/threads/runs",
        json={"assistant_id": asst_id, "thread": {}},
        headers={"FC-Customer": "customer_7"},
    )
    assert r.status_code == 200, r.text
    thread_customer = await db.fetchval(
        "SELECT c.customer_id FROM conversation c JOIN api_thread_aliases a"
        " ON a.conversation_id = c.id WHERE a.thread_id = $1",
        r.json()["thread_id"],
    )
    assert thread_customer == await db.fetchval(
        "SELECT id FROM customer WHERE external_id = 'customer_7'"
    )


async def test_client_token_runs_only_its_customers_threads(gateway: RunningGateway) -> None:
    dev, _, asst_id, thread_id = await run_setup(gateway)
    customer = await dev.customer(external_id="acct-1")
    r = await dev("POST", f"/v1/customers/{customer['id']}/client_tokens", json={"origin": ORIGIN})
    assert r.status_code == 200, r.text
    browser = gateway.openai(
        "unused",
        default_headers={"Authorization": f"Client {r.json()['token']}", "Origin": ORIGIN},
    )
    run = await browser.beta.threads.create_and_run_poll(
        assistant_id=asst_id, thread={"messages": [{"role": "user", "content": "mine"}]}
    )
    assert run.status == "completed"
    got = await browser.beta.threads.runs.retrieve(run.id, thread_id=run.thread_id)
    assert got.id == run.id
    # The developer's own thread (no customer) is a 404 to the token.
    with pytest.raises(openai.NotFoundError):
        await browser.beta.threads.runs.create(thread_id=thread_id, assistant_id=asst_id)
    usage = await gateway.services.db.fetchrow("SELECT customer_id FROM usage_event")
    assert usage is not None
    assert usage["customer_id"] == customer["id"]


async def test_upstream_failure_fails_the_run(gateway: RunningGateway) -> None:
    dev, client, asst_id, thread_id = await run_setup(gateway, 'x #sim{"status": 500}')
    run = await client.beta.threads.runs.create_and_poll(thread_id=thread_id, assistant_id=asst_id)
    assert run.status == "failed"
    assert run.last_error is not None
    assert run.last_error.code == "server_error"
    assert run.failed_at is not None
    validate(await raw_run(dev, thread_id, run.id), "RunObject")
    usage = await gateway.services.db.fetchrow("SELECT status, http_status FROM usage_event")
    assert usage is not None
    assert usage["status"] == "upstream_error"
    # A stream cut short by the provider fails the run as well, its message incomplete.
    _, client, asst_id, thread_id = await run_setup(
        gateway, 'a b c d e #sim{"stream_error_after": 2}'
    )
    run = await client.beta.threads.runs.create_and_poll(thread_id=thread_id, assistant_id=asst_id)
    assert run.status == "failed"
    messages = await client.beta.threads.messages.list(thread_id=thread_id)
    assert messages.data[0].status == "incomplete"
    steps = await client.beta.threads.runs.steps.list(thread_id=thread_id, run_id=run.id)
    assert steps.data[0].status == "failed"


@pytest.mark.parametrize("limits_env", [{"RINGSIDE_IP_RPM_LIMIT": "2"}])
async def test_rate_limited_run_leaves_nothing(
    database_url: str,
    redis_url: str,
    simulator: RunningSimulator,
    data_dir: Path,
    limits_env: dict[str, str],
) -> None:
    async with open_gateway(database_url, redis_url, simulator, data_dir, limits_env) as gw:
        dev, client, asst_id, thread_id = await run_setup(gw)
        await client.beta.threads.runs.create_and_poll(thread_id=thread_id, assistant_id=asst_id)
        await client.beta.threads.runs.create_and_poll(thread_id=thread_id, assistant_id=asst_id)
        r = await dev("POST", f"/v1/threads/{thread_id}/runs", json={"assistant_id": asst_id})
        assert_error(r, 429, "rate_limited")
        assert await gw.services.db.fetchval("SELECT count(*) FROM run") == 2
        assert await gw.services.db.fetchval("SELECT count(*) FROM billing_hold") == 0


async def test_shutdown_fails_runs_in_flight(
    database_url: str, redis_url: str, simulator: RunningSimulator, data_dir: Path
) -> None:
    async with open_gateway(database_url, redis_url, simulator, data_dir) as gw:
        _, client, asst_id, thread_id = await run_setup(gw, 'x #sim{"delay": 30}')
        run = await client.beta.threads.runs.create(thread_id=thread_id, assistant_id=asst_id)
        await gw.sim.wait_until(lambda s: len(s.chats()) == 1)
    async with open_storage(database_url, redis_url) as (db, _):
        row = await db.fetchrow("SELECT status, last_error FROM run WHERE id = $1", run.id)
        assert row is not None
        assert row["status"] == "failed"
        assert "stopped" in row["last_error"]
        assert await db.fetchval("SELECT count(*) FROM billing_hold") == 0


@pytest.fixture
async def concurrent_starts(
    database_url: str, redis_url: str, simulator: RunningSimulator, data_dir: Path
) -> AsyncIterator[RunningGateway]:
    """A gateway that starts runs side by side (``RINGSIDE_RUN_STARTS`` raised, as a
    deployment may): the start path's locking under a concurrency that the default, one start
    at a time per process, never reaches."""
    env = {"RINGSIDE_RUN_STARTS": "64"}
    async with open_gateway(database_url, redis_url, simulator, data_dir, env) as gw:
        assert gw.services.runs.starts.total_tokens == 64
        yield gw


async def test_run_starts_are_admitted_one_at_a_time(gateway: RunningGateway) -> None:
    """By default a process starts one run at a time; a burst waits for its turn, and every
    run of it is created and completes."""
    _, client, asst_id, _ = await run_setup(gateway)
    threads = [
        (await client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])).id
        for _ in range(12)
    ]
    starts = gateway.services.runs.starts
    assert starts.total_tokens == 1
    seen = {"borrowed": 0, "waiting": 0}
    runs = []

    async def watch() -> None:
        while True:
            stats = starts.statistics()
            seen["borrowed"] = max(seen["borrowed"], stats.borrowed_tokens)
            seen["waiting"] = max(seen["waiting"], stats.tasks_waiting)
            await trio.lowlevel.checkpoint()

    async def create(thread_id: str) -> None:
        runs.append(
            await client.beta.threads.runs.create(thread_id=thread_id, assistant_id=asst_id)
        )

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            async with trio.open_nursery() as burst:
                for thread_id in threads:
                    burst.start_soon(create, thread_id)
            nursery.cancel_scope.cancel()
        for run in runs:
            done = await client.beta.threads.runs.poll(run.id, thread_id=run.thread_id)
            assert done.status == "completed"
    assert len(runs) == 12
    assert seen["borrowed"] == 1
    assert seen["waiting"] >= 1  # the burst did queue


async def test_concurrent_run_creations_exactly_one_wins(
    concurrent_starts: RunningGateway,
) -> None:
    gateway = concurrent_starts
    dev, _, asst_id, thread_id = await run_setup(gateway, 'x #sim{"delay": 0.5}')
    statuses: list[int] = []

    async def create() -> None:
        r = await dev("POST", f"/v1/threads/{thread_id}/runs", json={"assistant_id": asst_id})
        statuses.append(r.status_code)
        if r.status_code == 409:
            assert r.json()["error"]["code"] == "conversation_locked"

    async with trio.open_nursery() as nursery:
        for _ in range(12):  # more than the pool's connections
            nursery.start_soon(create)
    assert sorted(statuses) == [200] + [409] * 11
    db = gateway.services.db
    assert await db.fetchval("SELECT count(*) FROM run") == 1
    assert await db.fetchval("SELECT count(*) FROM billing_hold") <= 1


async def test_attributed_run_creations_neither_jam_nor_deadlock(
    concurrent_starts: RunningGateway,
) -> None:
    """Run creations billed to one customer: 16 on one thread (more than the pool's
    connections, each waiting on the thread lock while holding one) and 24 on threads of their
    own. The first jammed (the rate limiter looked the customer up on a second pooled
    connection), the second deadlocked (each run insert's foreign key lock against the other's
    reservation of the customer row)."""
    gateway = concurrent_starts
    dev, client, asst_id, _ = await run_setup(gateway)
    await dev.customer(external_id="acct-9", monthly_budget_usd="100")
    headers = {"FC-Customer": "acct-9"}  # the threads are the customer's, and so are the runs
    thread_id, *others = [
        (
            await client.beta.threads.create(
                messages=[{"role": "user", "content": 'x #sim{"delay": 0.3}'}],
                extra_headers=headers,
            )
        ).id
        for _ in range(25)
    ]
    statuses: dict[str, list[int]] = {"same": [], "own": []}

    async def create(thread: str, group: str) -> None:
        r = await dev(
            "POST", f"/v1/threads/{thread}/runs", json={"assistant_id": asst_id}, headers=headers
        )
        statuses[group].append(r.status_code)

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for _ in range(16):
                nursery.start_soon(create, thread_id, "same")
            for other in others:
                nursery.start_soon(create, other, "own")
    assert sorted(statuses["same"]) == [200] + [409] * 15
    assert statuses["own"] == [200] * 24
    db = gateway.services.db
    active = "SELECT count(*) FROM run WHERE status IN ('queued', 'in_progress')"
    with trio.fail_after(10):
        while await db.fetchval(active):  # noqa: ASYNC110
            await trio.sleep(0.05)
    assert await db.fetchval("SELECT count(*) FROM run WHERE status = 'completed'") == 25
    assert await db.fetchval("SELECT count(*) FROM billing_hold") == 0


async def _executing(gateway: RunningGateway) -> tuple[str, str, openai.AsyncOpenAI]:
    _, client, asst_id, thread_id = await run_setup(gateway, 'a b c d e f #sim{"chunk_delay": 0.3}')
    run = await client.beta.threads.runs.create(thread_id=thread_id, assistant_id=asst_id)
    db = gateway.services.db
    with trio.fail_after(3):  # the model has begun to answer: its message step exists
        while not await db.fetchval("SELECT count(*) FROM run_step WHERE run_id = $1", run.id):  # noqa: ASYNC110
            await trio.sleep(0.01)
    return run.id, thread_id, client


async def test_a_notify_from_elsewhere_cancels_at_once(gateway: RunningGateway) -> None:
    run_id, thread_id, client = await _executing(gateway)
    # What a cancel in another process does: the row, then the signal (delivered at commit).
    async with gateway.services.db.transaction() as conn:
        await conn.execute("UPDATE run SET status = 'cancelling' WHERE id = $1", run_id)
        await conn.execute("SELECT pg_notify('ringside_run_cancel', $1)", run_id)
    with trio.fail_after(0.5):
        await gateway.sim.wait_until(lambda s: s.cancelled_streams == 1)
    run = await client.beta.threads.runs.poll(run_id, thread_id=thread_id)
    assert run.status == "cancelled"


async def test_a_run_expired_meanwhile_stays_expired(gateway: RunningGateway) -> None:
    run_id, thread_id, client = await _executing(gateway)
    db = gateway.services.db
    # What the sweeper does to an overdue run.
    async with db.transaction() as conn:
        await conn.execute("UPDATE run SET status = 'expired' WHERE id = $1", run_id)
        await conn.execute("SELECT pg_notify('ringside_run_cancel', $1)", run_id)
    with trio.fail_after(1):
        await gateway.sim.wait_until(lambda s: s.cancelled_streams == 1)
    request_id = await db.fetchval("SELECT request_id FROM run_step WHERE run_id = $1", run_id)
    event = await gateway.usage_event(request_id)  # the partial call is billed all the same
    assert event["status"] == "client_aborted"
    with trio.fail_after(1):  # and its usage counted on the run, its process let go
        while await db.fetchval("SELECT process_id FROM run WHERE id = $1", run_id):  # noqa: ASYNC110
            await trio.sleep(0.01)
    run = await client.beta.threads.runs.retrieve(run_id, thread_id=thread_id)
    assert run.status == "expired"
    assert run.usage is not None
    assert run.usage.completion_tokens == event["output_tokens"]
    messages = await client.beta.threads.messages.list(thread_id=thread_id)
    assert messages.data[0].status == "incomplete"
    assert messages.data[0].incomplete_details is not None
    assert messages.data[0].incomplete_details.reason == "run_expired"
    # The gateway wrote no webhook of its own (the sweeper writes run.failed/expired).
    assert await db.fetchval("SELECT count(*) FROM webhook_event WHERE type LIKE 'run.%'") == 0


async def test_a_settlement_the_database_refuses_does_not_keep_the_run_from_ending(
    gateway: RunningGateway,
) -> None:
    """A run's end and its call's settlement are one statement; when the database refuses the
    settlement, the run still ends (its lock freed at once), and the hold stays for the
    settlement worker instead of being billed twice or lost."""
    _, client, asst_id, thread_id = await run_setup(gateway)
    db = gateway.services.db
    # Every usage event is refused while the constraint exists (NOT VALID: old rows unchecked).
    await db.execute(
        "ALTER TABLE usage_event ADD CONSTRAINT test_refuse_usage CHECK (false) NOT VALID"
    )
    try:
        with trio.fail_after(15):  # (without the fallback the run stays in_progress until expiry)
            run = await client.beta.threads.runs.create_and_poll(
                thread_id=thread_id, assistant_id=asst_id
            )
    finally:
        await db.execute("ALTER TABLE usage_event DROP CONSTRAINT test_refuse_usage")
    assert run.status == "completed"
    messages = await client.beta.threads.messages.list(thread_id=thread_id)
    assert messages.data[0].role == "assistant"
    assert messages.data[0].status == "completed"
    request_id = await db.fetchval("SELECT request_id FROM run_step WHERE run_id = $1", run.id)
    assert (
        await db.fetchval("SELECT count(*) FROM usage_event WHERE request_id = $1", request_id) == 0
    )
    assert (
        await db.fetchval("SELECT count(*) FROM billing_hold WHERE request_id = $1", request_id)
        == 1
    )
    # The thread is free: the next run is accepted and billed as usual.
    again = await client.beta.threads.runs.create_and_poll(
        thread_id=thread_id, assistant_id=asst_id
    )
    assert again.status == "completed"
    step_request = await db.fetchval("SELECT request_id FROM run_step WHERE run_id = $1", again.id)
    assert (await gateway.usage_event(step_request))["status"] == "ok"


async def test_json_schema_format_and_run_list_pages(gateway: RunningGateway) -> None:
    _, client, asst_id, thread_id = await run_setup(gateway)
    schema = {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
    }
    ids = []
    for _ in range(3):
        run = await client.beta.threads.runs.create_and_poll(
            thread_id=thread_id, assistant_id=asst_id, response_format=schema
        )
        ids.append(run.id)
    assert gateway.sim.chats()[-1].json["response_format"] == schema
    first = await client.beta.threads.runs.list(thread_id=thread_id, limit=2)
    assert [r.id for r in first.data] == ids[::-1][:2]
    assert first.has_more
    rest = await client.beta.threads.runs.list(
        thread_id=thread_id, limit=2, after=first.data[-1].id
    )
    assert [r.id for r in rest.data] == [ids[0]]
    assert not rest.has_more
    every = [r.id async for r in client.beta.threads.runs.list(thread_id=thread_id, order="asc")]
    assert every == ids


@pytest.mark.parametrize(
    "model",
    [
        "fc:anthropic/claude-sonnet-5",
        "fc:gemini/gemini-3.8-flash",
        "fc:cohere/command-a-03-2025",
        "fc:bedrock/anthropic.claude-sonnet-5",
        "fc:replicate/meta/meta-llama-3-8b-instruct",
    ],
)
async def test_runs_on_native_providers(gateway: RunningGateway, model: str) -> None:
    """A run reads its provider's stream through the same adapters as chat completions."""
    _, client, asst_id, thread_id = await run_setup(gateway, "hello there")
    run = await client.beta.threads.runs.create_and_poll(
        thread_id=thread_id, assistant_id=asst_id, model=model
    )
    assert run.status == "completed", run.last_error
    assert run.model == model
    assert run.usage is not None
    assert (run.usage.prompt_tokens, run.usage.completion_tokens) == (5, 3)
    page = await client.beta.threads.messages.list(thread_id=thread_id, order="desc", limit=1)
    answer = page.data[0]
    assert answer.role == "assistant"
    assert answer.content[0].type == "text"
    assert answer.content[0].text.value == "Echo: hello there"
