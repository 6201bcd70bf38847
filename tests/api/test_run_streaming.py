"""Streaming runs: OpenAI's event taxonomy and payloads (validated against the spec), the SDK's
stream helpers with an AsyncAssistantEventHandler, and a client that disconnects mid-run."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest
import trio
from openai.lib.streaming import AsyncAssistantEventHandler
from openai.types.beta.threads import Message, Text, TextDelta
from openai.types.beta.threads.runs import RunStep, ToolCall

from ringside.domain.run_executor import EventStream
from tests.api.devapi import DevApi, new_dev
from tests.gateway import RunningGateway, open_gateway
from tests.simulator.openapi import validate
from tests.simulator.server import RunningSimulator

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

MODEL = "fc:openai/gpt-4o-mini"
TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}


def parse_sse(raw: bytes) -> list[tuple[str, Any]]:
    events = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        data = fields["data"]
        events.append((fields["event"], data if data == "[DONE]" else json.loads(data)))
    return events


def check_events(events: list[tuple[str, Any]]) -> None:
    for name, data in events:
        validate({"event": name, "data": data}, "AssistantStreamEvent")


async def _setup(gw: RunningGateway, content: str, **assistant: Any) -> tuple[DevApi, str, str]:
    dev = await new_dev(gw)
    client = gw.openai(dev.key)
    asst = await client.beta.assistants.create(model=MODEL, **assistant)
    thread = await client.beta.threads.create(messages=[{"role": "user", "content": content}])
    return dev, asst.id, thread.id


async def _stream(dev: DevApi, path: str, body: dict[str, Any]) -> list[tuple[str, Any]]:
    r = await dev("POST", path, json={**body, "stream": True})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    return parse_sse(r.content)


async def test_text_run_event_order_and_payloads(gateway: RunningGateway) -> None:
    dev, asst_id, thread_id = await _setup(gateway, "one two three")
    events = await _stream(dev, f"/v1/threads/{thread_id}/runs", {"assistant_id": asst_id})
    check_events(events)
    names = [n for n, _ in events]
    deltas = names.count("thread.message.delta")
    assert deltas >= 3
    assert names == [
        "thread.run.created",
        "thread.run.queued",
        "thread.run.in_progress",
        "thread.run.step.created",
        "thread.run.step.in_progress",
        "thread.message.created",
        "thread.message.in_progress",
        *["thread.message.delta"] * deltas,
        "thread.message.completed",
        "thread.run.step.completed",
        "thread.run.completed",
        "done",
    ]
    text = "".join(
        d["delta"]["content"][0]["text"]["value"] for n, d in events if n.endswith("delta")
    )
    assert text == "Echo: one two three"
    completed = dict(events)["thread.run.completed"]
    assert completed["status"] == "completed"
    assert completed["usage"]["total_tokens"] > 0
    message = dict(events)["thread.message.completed"]
    assert message["content"][0]["text"]["value"] == text


async def test_create_and_run_stream_starts_with_thread_created(gateway: RunningGateway) -> None:
    dev, asst_id, _ = await _setup(gateway, "x")
    body = {"assistant_id": asst_id, "thread": {"messages": [{"role": "user", "content": "hi"}]}}
    events = await _stream(dev, "/v1/threads/runs", body)
    check_events(events)
    assert [n for n, _ in events][:3] == [
        "thread.created",
        "thread.run.created",
        "thread.run.queued",
    ]
    assert events[-2][0] == "thread.run.completed"


async def test_tool_call_stream_then_submit_stream(gateway: RunningGateway) -> None:
    content = 'go #sim{"tool_call": [{"name": "lookup", "arguments": {"q": "a long query"}}]}'
    dev, asst_id, thread_id = await _setup(gateway, content, tools=[TOOL])
    events = await _stream(dev, f"/v1/threads/{thread_id}/runs", {"assistant_id": asst_id})
    check_events(events)
    names = [n for n, _ in events]
    assert "thread.run.step.delta" in names
    assert names[-2:] == ["thread.run.requires_action", "done"]
    run = events[-2][1]
    [call] = run["required_action"]["submit_tool_outputs"]["tool_calls"]
    args = "".join(
        d["delta"]["step_details"]["tool_calls"][0].get("function", {}).get("arguments", "")
        for n, d in events
        if n == "thread.run.step.delta"
    )
    assert args == call["function"]["arguments"] == '{"q":"a long query"}'
    events = await _stream(
        dev,
        f"/v1/threads/{thread_id}/runs/{run['id']}/submit_tool_outputs",
        {"tool_outputs": [{"tool_call_id": call["id"], "output": 'ok #sim{"tool_call": null}'}]},
    )
    check_events(events)
    names = [n for n, _ in events]
    assert names[:3] == ["thread.run.step.completed", "thread.run.queued", "thread.run.in_progress"]
    assert names[-2:] == ["thread.run.completed", "done"]


class Recorder(AsyncAssistantEventHandler):
    def __init__(self) -> None:
        super().__init__()
        self.text = ""
        self.texts_done: list[str] = []
        self.messages: list[Message] = []
        self.steps: list[RunStep] = []
        self.tool_calls: list[ToolCall] = []

    async def on_text_delta(self, delta: TextDelta, snapshot: Text) -> None:
        self.text += delta.value or ""

    async def on_text_done(self, text: Text) -> None:
        self.texts_done.append(text.value)

    async def on_message_done(self, message: Message) -> None:
        self.messages.append(message)

    async def on_run_step_done(self, run_step: RunStep) -> None:
        self.steps.append(run_step)

    async def on_tool_call_done(self, tool_call: ToolCall) -> None:
        self.tool_calls.append(tool_call)


async def test_sdk_stream_helpers_with_event_handler(gateway: RunningGateway) -> None:
    dev = await new_dev(gateway)
    client = gateway.openai(dev.key)
    asst = await client.beta.assistants.create(model=MODEL, tools=[TOOL])
    thread = await client.beta.threads.create(messages=[{"role": "user", "content": "plain words"}])
    handler = Recorder()
    async with client.beta.threads.runs.stream(
        thread_id=thread.id, assistant_id=asst.id, event_handler=handler
    ) as stream:
        await stream.until_done()
    assert handler.text == "Echo: plain words"
    assert handler.texts_done == ["Echo: plain words"]
    assert handler.messages[0].status == "completed"
    run = handler.current_run
    assert run is not None
    assert run.status == "completed"

    # create_and_run_stream with a tool call, then submit_tool_outputs_stream.
    content = 'x #sim{"tool_call": {"name": "lookup", "arguments": {"k": 1}}}'
    handler = Recorder()
    async with client.beta.threads.create_and_run_stream(
        assistant_id=asst.id,
        thread={"messages": [{"role": "user", "content": content}]},
        event_handler=handler,
    ) as stream:
        await stream.until_done()
    run = handler.current_run
    assert run is not None
    assert run.status == "requires_action"
    assert run.required_action is not None
    [call] = run.required_action.submit_tool_outputs.tool_calls
    assert [c.id for c in handler.tool_calls] == [call.id]
    assert handler.tool_calls[0].type == "function"
    assert handler.tool_calls[0].function.arguments == '{"k":1}'
    handler = Recorder()
    async with client.beta.threads.runs.submit_tool_outputs_stream(
        thread_id=run.thread_id,
        run_id=run.id,
        tool_outputs=[{"tool_call_id": call.id, "output": 'done #sim{"tool_call": null}'}],
        event_handler=handler,
    ) as stream:
        await stream.until_done()
    assert handler.current_run is not None
    assert handler.current_run.status == "completed"
    assert handler.text == "Echo: x"


async def test_client_disconnect_mid_stream_cancels_bills_and_frees(
    gateway: RunningGateway,
) -> None:
    content = 'a b c d e f g h i j k l #sim{"chunk_delay": 0.2}'
    dev, asst_id, thread_id = await _setup(gateway, content)
    path = f"/v1/threads/{thread_id}/runs"
    seen = b""
    async with gateway.http.stream(
        "POST",
        path,
        json={"assistant_id": asst_id, "stream": True},
        headers={"Authorization": f"Bearer {dev.key}"},
    ) as r:
        async for part in r.aiter_bytes():
            seen += part
            if seen.count(b"thread.message.delta") >= 2:
                break
    run_id = parse_sse(seen.split(b"\n\n", 1)[0] + b"\n\n")[0][1]["id"]
    with trio.fail_after(2):
        await gateway.sim.wait_until(lambda s: s.cancelled_streams == 1)
    db = gateway.services.db
    with trio.fail_after(1):  # the run ends as soon as the stream is closed
        while (await db.fetchval("SELECT status FROM run WHERE id = $1", run_id)) != "cancelled":  # noqa: ASYNC110
            await trio.sleep(0.01)
    # Billed for what was generated, as one usage event of the run's call.
    request_id = await db.fetchval("SELECT request_id FROM run_step WHERE run_id = $1", run_id)
    event = await gateway.usage_event(request_id)
    assert event["status"] == "client_aborted"
    assert event["output_tokens"] > 0
    run = await dev.ok("GET", f"{path}/{run_id}")
    validate(run, "RunObject")
    assert run["usage"]["completion_tokens"] == event["output_tokens"]
    message = await db.fetchrow("SELECT status FROM thread_message WHERE run_id = $1", run_id)
    assert message is not None
    assert message["status"] == "incomplete"
    # The thread is free at once.
    client = gateway.openai(dev.key)
    again = await client.beta.threads.runs.create(thread_id=thread_id, assistant_id=asst_id)
    assert again.status == "queued"


async def test_cancel_during_a_stream_ends_it_cancelled(gateway: RunningGateway) -> None:
    content = 'a b c d e f g h #sim{"chunk_delay": 0.2}'
    dev, asst_id, thread_id = await _setup(gateway, content)
    client = gateway.openai(dev.key)
    path = f"/v1/threads/{thread_id}/runs"
    seen = b""
    async with gateway.http.stream(
        "POST",
        path,
        json={"assistant_id": asst_id, "stream": True},
        headers={"Authorization": f"Bearer {dev.key}"},
    ) as r:
        async for part in r.aiter_bytes():
            if not seen:
                run_id = parse_sse(part.split(b"\n\n", 1)[0] + b"\n\n")[0][1]["id"]
                await client.beta.threads.runs.cancel(run_id, thread_id=thread_id)
            seen += part
    events = parse_sse(seen)
    check_events(events)
    assert [n for n, _ in events][-2:] == ["thread.run.cancelled", "done"]
    with pytest.raises(openai.BadRequestError):
        await client.beta.threads.runs.cancel(run_id, thread_id=thread_id)


async def test_idempotent_stream_replays_the_run_object(gateway: RunningGateway) -> None:
    dev, asst_id, thread_id = await _setup(gateway, "once")
    path = f"/v1/threads/{thread_id}/runs"
    body = {"assistant_id": asst_id, "stream": True}
    headers = {"Idempotency-Key": "stream-once"}
    first = await dev("POST", path, json=body, headers=headers)
    events = parse_sse(first.content)
    assert events[-2][0] == "thread.run.completed"
    again = await dev("POST", path, json=body, headers=headers)
    assert again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == events[0][1]["id"]
    validate(again.json(), "RunObject")
    assert len(gateway.sim.chats()) == 1


async def test_failures_stream_as_failed_runs(gateway: RunningGateway) -> None:
    dev, asst_id, thread_id = await _setup(gateway, 'a b c d e f #sim{"stream_error_after": 2}')
    events = await _stream(dev, f"/v1/threads/{thread_id}/runs", {"assistant_id": asst_id})
    check_events(events)
    names = [n for n, _ in events]
    assert names[-4:] == [
        "thread.message.incomplete",
        "thread.run.step.failed",
        "thread.run.failed",
        "done",
    ]
    failed = events[-2][1]
    assert failed["last_error"]["code"] == "server_error"
    assert failed["usage"]["completion_tokens"] > 0  # what was generated is billed
    # A provider without a usable key: the run is created, then fails.
    gateway.services.upstreams.rings["anthropic"].refused("sk-anthropic-test")
    body = {"assistant_id": asst_id, "model": "fc:anthropic/claude-fable-5"}
    dev, asst_id, thread_id = await _setup(gateway, "hi")
    events = await _stream(dev, f"/v1/threads/{thread_id}/runs", {**body, "assistant_id": asst_id})
    check_events(events)
    assert [n for n, _ in events] == [
        "thread.run.created",
        "thread.run.queued",
        "thread.run.in_progress",
        "thread.run.failed",
        "done",
    ]
    assert events[-2][1]["last_error"]["message"].startswith("no_active_provider_keys")


async def test_a_streamed_run_whose_body_never_starts_is_cancelled_after_the_grace(
    database_url: str, redis_url: str, simulator: RunningSimulator, data_dir: Path
) -> None:
    """Quart sends the headers before it enters the body; a client leaving in between leaves
    the body unread and unclosed. The unstarted-stream guard closes it, which cancels the
    segment as a disconnect mid-stream would."""
    env = {"RINGSIDE_STREAM_START_GRACE_SECONDS": "0.4"}
    async with open_gateway(database_url, redis_url, simulator, data_dir, env) as gw:
        svc = gw.services
        events = EventStream(svc.runs, "run_unread", svc.unstarted_streams)
        cancelled = trio.Event()

        async def work(register: Callable[[trio.CancelScope], None]) -> None:
            with trio.CancelScope() as scope:
                register(scope)
                await trio.sleep_forever()
            cancelled.set()

        events.done = svc.runs.start("run_unread", work)
        assert len(svc.unstarted_streams) == 1
        with trio.fail_after(3):
            await cancelled.wait()
        assert len(svc.unstarted_streams) == 0
