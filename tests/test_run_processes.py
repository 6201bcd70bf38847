"""Assistants runs across real processes, driven by the official openai SDK: two gateway
processes racing run creations on one thread (the lock is PostgreSQL's, so exactly one wins), a
cancel sent to one process stopping a run executing in another (a NOTIFY, not polling), and a
run left in ``requires_action`` that the ``runs`` worker expires (lock released, ``run.failed``
webhook with reason ``expired`` delivered by the ``webhooks`` worker)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import trio
from openai.types.beta.threads import Run

from ringside.store.bridge import open_storage
from tests.gateway import ADMIN_KEY, simulator_env
from tests.processes import BIN, ROOT, base_env, run_cli, spawn_gateway
from tests.simulator.server import RunningSimulator
from tests.workers.receiver import Receiver, open_receiver

# The SDK marks the whole Assistants surface deprecated (OpenAI switched it off).
pytestmark = pytest.mark.filterwarnings(
    "ignore:(deprecated|The Assistants API is deprecated):DeprecationWarning"
)

MODEL = "fc:openai/gpt-4o-mini"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def sim(text: str, **directive: Any) -> str:
    return f"{text} #sim{json.dumps(directive)}"


# Directives add up over a thread's messages: a later message turns an earlier one's off.
QUICK = sim("and now quickly", delay=0, hang=False, tool_call=None)


@pytest.fixture
def env(database_url: str, redis_url: str, simulator: RunningSimulator) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "RINGSIDE_ADMIN_KEY": ADMIN_KEY,
        "RINGSIDE_HEARTBEAT_SECONDS": "0.5",
        "RINGSIDE_PROCESS_DEAD_AFTER_SECONDS": "3",
        "RINGSIDE_SWEEP_INTERVAL_SECONDS": "0.2",
        "RINGSIDE_WEBHOOKS_ALLOW_PRIVATE": "1",
        "RINGSIDE_WEBHOOK_POLL_SECONDS": "0.1",
        **simulator_env(simulator),
    }


@asynccontextmanager
async def sdk(url: str, key: str) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=30)
    try:
        yield client
    finally:
        await client.close()


@asynccontextmanager
async def spawn_workers(env: dict[str, str], log: Path, *names: str) -> AsyncIterator[None]:
    with log.open("ab") as out:
        process = await trio.lowlevel.open_process(
            [str(BIN / "python"), "-m", "workers", *names], env=base_env(env), cwd=ROOT,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        yield
    finally:
        with trio.CancelScope(shield=True):
            process.terminate()
            with trio.move_on_after(10):
                await process.wait()
            if process.poll() is None:
                process.kill()
            await process.wait()


async def until(
    client: openai.AsyncOpenAI, run: Run, statuses: tuple[str, ...], within: float = 15.0
) -> Run:
    with trio.fail_after(within):
        while run.status not in statuses:
            await trio.sleep(0.05)
            run = await client.beta.threads.runs.retrieve(run.id, thread_id=run.thread_id)
    return run


async def new_developer(env: dict[str, str]) -> str:
    dev = await run_cli(env, "developers", "create", "--name", "runs")
    return str(dev["api_key"]["key"])


async def test_two_processes_racing_run_creations_on_one_thread_exactly_one_wins(
    env: dict[str, str], tmp_path: Path
) -> None:
    async with spawn_gateway(env, tmp_path) as gw_a, spawn_gateway(env, tmp_path) as gw_b:
        key = await new_developer(env)
        async with sdk(gw_a.url, key) as a, sdk(gw_b.url, key) as b:
            assistant = await a.beta.assistants.create(model=MODEL, name="racer")
            thread = await b.beta.threads.create(
                messages=[{"role": "user", "content": sim("take your time", delay=2)}]
            )
            wins: list[Run] = []
            conflicts: list[openai.APIStatusError] = []

            async def create(client: openai.AsyncOpenAI) -> None:
                try:
                    wins.append(
                        await client.beta.threads.runs.create(
                            thread_id=thread.id, assistant_id=assistant.id
                        )
                    )
                except openai.ConflictError as exc:
                    conflicts.append(exc)

            async with trio.open_nursery() as nursery:
                for i in range(16):
                    nursery.start_soon(create, (a, b)[i % 2])
            assert len(wins) == 1, wins
            assert len(conflicts) == 15
            for exc in conflicts:
                assert exc.status_code == 409
                body: Any = exc.body
                assert (body["type"], body["code"]) == ("conflict_error", "conversation_locked")
            [won] = wins
            done = await until(a, won, ("completed",))
            assert done.usage is not None
            # The lock is gone with the run: the next one is taken, from either process.
            await a.beta.threads.messages.create(thread.id, role="user", content=QUICK)
            second = await b.beta.threads.runs.create(
                thread_id=thread.id, assistant_id=assistant.id
            )
            assert (await until(b, second, ("completed",))).status == "completed"
            listed = await a.beta.threads.runs.list(thread_id=thread.id)
            assert sorted(r.id for r in listed.data) == sorted([won.id, second.id])


async def test_cancel_sent_to_one_process_stops_a_run_executing_in_another(
    env: dict[str, str], tmp_path: Path, simulator: RunningSimulator, database_url: str,
    redis_url: str,
) -> None:  # fmt: skip
    async with spawn_gateway(env, tmp_path) as gw_a, spawn_gateway(env, tmp_path) as gw_b:
        key = await new_developer(env)
        async with sdk(gw_a.url, key) as a, sdk(gw_b.url, key) as b:
            assistant = await a.beta.assistants.create(model=MODEL, name="stopper")
            thread = await a.beta.threads.create(
                messages=[{"role": "user", "content": sim("never answers", hang=True)}]
            )
            run = await a.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
            run = await until(b, run, ("in_progress",))
            with trio.fail_after(10):
                while not simulator.sim.chats():  # noqa: ASYNC110 - the upstream call is open
                    await trio.sleep(0.02)
            started = time.monotonic()
            cancelling = await b.beta.threads.runs.cancel(run.id, thread_id=thread.id)
            assert cancelling.status in ("cancelling", "cancelled")
            cancelled = await until(b, cancelling, ("cancelled",), within=5)
            took = time.monotonic() - started
            assert took < 2.0, f"cancelled {took:.2f} s after the cancel"
            assert cancelled.cancelled_at is not None
            with trio.fail_after(5):
                while not simulator.sim.cancelled_requests:  # noqa: ASYNC110
                    await trio.sleep(0.02)  # the upstream call was aborted by process A
            async with open_storage(database_url, redis_url) as (db, _):
                with trio.fail_after(5):
                    while await db.fetchval("SELECT count(*) FROM billing_hold"):  # noqa: ASYNC110
                        await trio.sleep(0.05)  # the aborted call settled
            await b.beta.threads.messages.create(thread.id, role="user", content=QUICK)
            after = await b.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
            assert (await until(a, after, ("completed",))).status == "completed"


async def webhook_endpoint(url: str, key: str, receiver: Receiver) -> None:
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}) as c:
        r = await c.post("/v1/webhooks", json={"url": receiver.url, "events": ["run.failed"]})
        assert r.status_code == 200, r.text
        receiver.secrets.append(r.json()["secret"])


async def customer_id(url: str, key: str, ref: str) -> str:
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}) as c:
        r = await c.get(f"/v1/customers/{ref}")
        assert r.status_code == 200, r.text
        return str(r.json()["id"])


async def test_a_run_left_in_requires_action_is_expired_by_the_worker(
    env: dict[str, str], tmp_path: Path
) -> None:
    async with open_receiver() as receiver, spawn_gateway(env, tmp_path) as gw:
        key = await new_developer(env)
        await webhook_endpoint(gw.url, key, receiver)
        async with sdk(gw.url, key) as client:
            assistant = await client.beta.assistants.create(
                model=MODEL, name="forgetful", tools=[WEATHER]
            )
            thread = await client.beta.threads.create(
                messages=[
                    {
                        "role": "user",
                        "content": sim(
                            "weather in Paris?",
                            tool_call={"name": "get_weather", "arguments": '{"city": "Paris"}'},
                        ),
                    }
                ],
                extra_headers={"FC-Customer": "cust_forgetful"},
            )
            run = await client.beta.threads.runs.create(
                thread_id=thread.id, assistant_id=assistant.id, extra_body={"expires_in_seconds": 2}
            )
            assert run.expires_at is not None
            assert run.expires_at - run.created_at == 2
            waiting = await until(client, run, ("requires_action",))
            assert waiting.required_action is not None
            [call] = waiting.required_action.submit_tool_outputs.tool_calls
            assert call.function.name == "get_weather"

            # Nobody submits the tool outputs; the sweeper ends the run once it is overdue.
            async with spawn_workers(env, tmp_path / "workers.log", "runs", "webhooks"):
                expired = await until(client, waiting, ("expired",), within=15)
                await receiver.wait_for(1, within=15)
            assert expired.required_action is None
            assert (expired.failed_at, expired.completed_at, expired.cancelled_at) == (
                None,
                None,
                None,
            )
            steps = await client.beta.threads.runs.steps.list(run.id, thread_id=thread.id)
            assert [s.status for s in steps.data if s.type == "tool_calls"] == ["expired"]
            assert all(s.status != "in_progress" for s in steps.data)

            # The thread is free again.
            await client.beta.threads.messages.create(thread.id, role="user", content=QUICK)
            after = await client.beta.threads.runs.create(
                thread_id=thread.id, assistant_id=assistant.id
            )
            assert (await until(client, after, ("completed",))).status == "completed"

        [delivery] = receiver.received
        assert delivery.verified
        event = delivery.event
        assert event["type"] == "run.failed"
        data = event["data"]
        assert data == {
            "run_id": run.id,
            "thread_id": thread.id,
            "assistant_id": assistant.id,
            "customer_id": await customer_id(gw.url, key, "cust_forgetful"),
            "status": "expired",
            "model": data["model"],
            "reason": "expired",
            "last_error": None,
            "incomplete_details": None,
            "usage": data["usage"],
            "created_at": run.created_at,
            "ended_at": data["ended_at"],
        }
        assert data["model"] in (MODEL, "gpt-4o-mini")
        assert data["usage"]["total_tokens"] == (
            data["usage"]["prompt_tokens"] + data["usage"]["completion_tokens"]
        )
        assert data["usage"]["total_tokens"] > 0  # the model call that asked for the tool
        assert run.created_at + 2 <= data["ended_at"] <= run.created_at + 20
