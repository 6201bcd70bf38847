"""Function calling in runs through the official openai SDK: requires_action and
submit_tool_outputs, parallel tool calls, tool_choice (forced, required)."""

from __future__ import annotations

import openai
import pytest

from tests.api.devapi import assert_error
from tests.api.runapi import raw_run, run_setup
from tests.gateway import RunningGateway
from tests.simulator.openapi import validate

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


async def test_function_calling_through_requires_action(gateway: RunningGateway) -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
    content = 'Weather? #sim{"tool_call": {"name": "get_weather", "arguments": {"city": "Oslo"}}}'
    dev, client, asst_id, thread_id = await run_setup(gateway, content, tools=[tool])
    run = await client.beta.threads.runs.create_and_poll(thread_id=thread_id, assistant_id=asst_id)
    assert run.status == "requires_action"
    assert run.usage is None
    assert run.required_action is not None
    [call] = run.required_action.submit_tool_outputs.tool_calls
    assert call.function.name == "get_weather"
    assert call.function.arguments == '{"city":"Oslo"}'
    validate(await raw_run(dev, thread_id, run.id), "RunObject")
    # A second run while this one waits: the thread is locked.
    r = await dev("POST", f"/v1/threads/{thread_id}/runs", json={"assistant_id": asst_id})
    assert_error(r, 409, "conversation_locked")
    assert r.json()["error"]["type"] == "conflict_error"

    run = await client.beta.threads.runs.submit_tool_outputs_and_poll(
        thread_id=thread_id,
        run_id=run.id,
        tool_outputs=[{"tool_call_id": call.id, "output": 'Sunny #sim{"tool_call": null}'}],
    )
    assert run.status == "completed"
    assert run.usage is not None
    # The second call carried the tool call and its output.
    sent = gateway.sim.chats()[-1].json
    assert sent["messages"][-2]["tool_calls"][0]["id"] == call.id
    assert sent["messages"][-1] == {
        "role": "tool",
        "tool_call_id": call.id,
        "content": 'Sunny #sim{"tool_call": null}',
    }
    steps = await client.beta.threads.runs.steps.list(
        thread_id=thread_id, run_id=run.id, order="asc"
    )
    assert [s.type for s in steps.data] == ["tool_calls", "message_creation"]
    tool_step = steps.data[0]
    assert tool_step.status == "completed"
    assert tool_step.step_details.tool_calls[0].function.output == 'Sunny #sim{"tool_call": null}'
    # Usage: the run's is the sum of its two model calls, each one usage event.
    assert tool_step.usage is not None
    assert steps.data[1].usage is not None
    assert run.usage.total_tokens == tool_step.usage.total_tokens + steps.data[1].usage.total_tokens
    count = await gateway.services.db.fetchval(
        "SELECT count(*) FROM usage_event WHERE request_id IN"
        " (SELECT request_id FROM run_step WHERE run_id = $1)",
        run.id,
    )
    assert count == 2
    # The thread is free again.
    again = await client.beta.threads.runs.create(thread_id=thread_id, assistant_id=asst_id)
    assert again.status == "queued"


async def test_parallel_tool_calls(gateway: RunningGateway) -> None:
    tools = [
        {"type": "function", "function": {"name": "a", "parameters": {"type": "object"}}},
        {"type": "function", "function": {"name": "b", "parameters": {"type": "object"}}},
    ]
    content = 'both #sim{"tool_call": [{"name": "a", "arguments": {"x": 1}}, {"name": "b"}]}'
    _, client, asst_id, thread_id = await run_setup(gateway, content, tools=tools)
    run = await client.beta.threads.runs.create_and_poll(thread_id=thread_id, assistant_id=asst_id)
    assert run.status == "requires_action"
    assert run.required_action is not None
    calls = run.required_action.submit_tool_outputs.tool_calls
    assert [c.function.name for c in calls] == ["a", "b"]
    assert gateway.sim.chats()[-1].json["parallel_tool_calls"] is True
    # Every pending call must be answered.
    with pytest.raises(openai.BadRequestError):
        await client.beta.threads.runs.submit_tool_outputs(
            thread_id=thread_id, run_id=run.id, tool_outputs=[{"tool_call_id": calls[0].id}]
        )
    run = await client.beta.threads.runs.submit_tool_outputs_and_poll(
        thread_id=thread_id,
        run_id=run.id,
        tool_outputs=[
            {"tool_call_id": calls[0].id, "output": "1"},
            {"tool_call_id": calls[1].id, "output": '2 #sim{"tool_call": null}'},
        ],
    )
    assert run.status == "completed"
    tool_messages = [m for m in gateway.sim.chats()[-1].json["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_messages] == [calls[0].id, calls[1].id]


async def test_forced_and_required_tool_choice(gateway: RunningGateway) -> None:
    tools = [
        {"type": "function", "function": {"name": "first", "parameters": {"type": "object"}}},
        {"type": "function", "function": {"name": "second", "parameters": {"type": "object"}}},
    ]
    _, client, asst_id, thread_id = await run_setup(gateway, tools=tools)
    run = await client.beta.threads.runs.create_and_poll(
        thread_id=thread_id,
        assistant_id=asst_id,
        tool_choice={"type": "function", "function": {"name": "second"}},
    )
    assert run.status == "requires_action"
    assert run.required_action is not None
    assert run.required_action.submit_tool_outputs.tool_calls[0].function.name == "second"
    assert gateway.sim.chats()[-1].json["tool_choice"] == {
        "type": "function",
        "function": {"name": "second"},
    }
    await client.beta.threads.runs.cancel(run.id, thread_id=thread_id)
    run = await client.beta.threads.runs.create_and_poll(
        thread_id=thread_id, assistant_id=asst_id, tool_choice="required"
    )
    assert run.status == "requires_action"
    assert gateway.sim.chats()[-1].json["tool_choice"] == "required"
    with pytest.raises(openai.BadRequestError):
        await client.beta.threads.runs.create(
            thread_id=thread_id,
            assistant_id=asst_id,
            tool_choice={"type": "function", "function": {"name": "missing"}},
        )


async def test_refused_tool_outputs_leave_the_run_waiting(gateway: RunningGateway) -> None:
    content = 'x #sim{"tool_call": {"name": "f"}}'
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    dev, client, asst_id, thread_id = await run_setup(gateway, content, tools=[tool])
    run = await client.beta.threads.runs.create_and_poll(
        thread_id=thread_id, assistant_id=asst_id, extra_body={"user": "tight"}
    )
    assert run.status == "requires_action"
    assert run.required_action is not None
    [call] = run.required_action.submit_tool_outputs.tool_calls
    r = await dev("PATCH", "/v1/customers/tight", json={"monthly_budget_usd": "0"})
    assert r.status_code == 200, r.text
    db = gateway.services.db
    events = await db.fetchval("SELECT count(*) FROM usage_event")
    path = f"/v1/threads/{thread_id}/runs/{run.id}/submit_tool_outputs"
    r = await dev("POST", path, json={"tool_outputs": [{"tool_call_id": call.id, "output": "1"}]})
    assert_error(r, 402, "customer_budget_exceeded")
    again = await client.beta.threads.runs.retrieve(run.id, thread_id=thread_id)
    assert again.status == "requires_action"
    assert again.required_action == run.required_action
    steps = await client.beta.threads.runs.steps.list(thread_id=thread_id, run_id=run.id)
    assert steps.data[0].status == "in_progress"
    assert steps.data[0].step_details.tool_calls[0].function.output is None
    assert await db.fetchval("SELECT count(*) FROM usage_event") == events
    assert await db.fetchval("SELECT count(*) FROM billing_hold") == 0
    # Cancelling a waiting run ends it at once, its tool step cancelled.
    cancelled = await client.beta.threads.runs.cancel(run.id, thread_id=thread_id)
    assert cancelled.status == "cancelled"
    steps = await client.beta.threads.runs.steps.list(
        thread_id=thread_id,
        run_id=run.id,
        include=["step_details.tool_calls[*].file_search.results[*].content"],
    )
    assert steps.data[0].status == "cancelled"
    r = await dev("POST", path, json={"tool_outputs": [{"tool_call_id": call.id, "output": "1"}]})
    assert_error(r, 400, "invalid_request")
