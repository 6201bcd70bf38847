"""Runs (OpenAI Assistants v2): starting a run (or a thread and its run), tool outputs,
cancel, and the reads; their parameters are ``run_params``'.

A run holds its thread's lock from creation until it ends: the run row is inserted in the
transaction that also adds ``additional_messages``, is admitted by the rate limits and
reserves the first model call (the hold written in that same transaction), so a second run on
the thread (``409 conversation_locked``: the second insert waits on the first's index entry,
then fails), a rate limit (429) or a refused reservation (402) leaves nothing behind. Each
model call of a run is one *segment* (``run_segment``), executed by the ``RunExecutor``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ringside.domain import assistants, run_calls, run_events, threads
from ringside.domain.auth import Caller
from ringside.domain.run_params import RunSpec, new_run
from ringside.domain.run_prompt import PromptMessage
from ringside.domain.threads import ThreadRow, ThreadSpec
from ringside.errors import Conflict, InvalidRequest, NotFound
from ringside.ids import new_id
from ringside.pagination import PageRequest, page_of, resolve_window
from ringside.services import Services
from ringside.store import run_steps as step_store
from ringside.store import runs as store
from ringside.store.bridge import Conn, UniqueViolation
from ringside.store.run_steps import StepRow
from ringside.store.runs import NewRun, RunRow


def locked(thread_id: str) -> Conflict:
    return Conflict(
        f"Thread {thread_id} already has an active run; wait for it to end or cancel it.",
        code="conversation_locked",
        param="thread_id",
    )


async def insert_run(conn: Conn, run: NewRun, thread_id: str) -> RunRow:
    try:
        return await store.insert_run(conn, run)
    except UniqueViolation:
        raise locked(thread_id) from None


def _last(run: RunRow) -> int | None:
    strategy = run.truncation_strategy
    return strategy.get("last_messages") if strategy.get("type") == "last_messages" else None


async def prompt_of(conn: Conn, run: RunRow, steps: list[StepRow]) -> run_calls.PromptInput:
    """The thread's messages for the run's next call (the run's own transaction sees the
    messages it just added)."""
    rows = await threads.prompt_messages(conn, run.conversation_id, _last(run))
    return run_calls.PromptInput([PromptMessage(m.role, m.content) for m in rows], steps)


@dataclass(frozen=True)
class Started:
    run: RunRow
    thread: ThreadRow
    segment: run_calls.Segment


def _announce(segment: run_calls.Segment, *events: str) -> None:
    """The events a stream opens with (the run as the request left it: queued)."""
    shown = run_events.run_json(segment.run, segment.thread.thread_id)
    segment.prelude.extend((name, shown) for name in events)


async def start_run(
    svc: Services,
    caller: Caller,
    thread: ThreadRow,
    spec: RunSpec,
    attribution: str | None,
    origin: run_calls.Origin,
) -> Started:
    """``POST /v1/threads/{id}/runs``: the run, its additional messages and its first call's
    reservation, all or nothing."""
    assistant = await assistants.get_assistant(svc.db, caller.developer_id, spec.assistant_id)
    planned = new_run(svc, caller, thread, assistant, spec)
    customer_ref = attribution if attribution is not None else thread.customer_id
    async with run_calls.reserving(svc) as reservations, svc.db.transaction() as conn:
        run = await insert_run(conn, planned, thread.thread_id)
        for message in spec.additional_messages:
            await threads.add_message(conn, thread, message)
        prompt = await prompt_of(conn, run, [])
        segment = await reservations.reserve(
            conn, caller, run, thread, customer_ref, prompt, origin, stream=spec.stream
        )
    _announce(segment, "thread.run.created", "thread.run.queued")
    return Started(segment.run, thread, segment)


async def start_thread_and_run(
    svc: Services,
    caller: Caller,
    spec: RunSpec,
    thread_spec: ThreadSpec,
    attribution: str | None,
    origin: run_calls.Origin,
) -> Started:
    """``POST /v1/threads/runs``: a new thread with its messages and its run."""
    assistant = await assistants.get_assistant(svc.db, caller.developer_id, spec.assistant_id)
    planned = new_run(svc, caller, None, assistant, spec)
    async with run_calls.reserving(svc) as reservations, svc.db.transaction() as conn:
        # The customer (a stub for an unknown ref), the thread, the run and the reservation
        # commit together or not at all.
        customer_id = await threads.thread_customer(conn, caller, attribution)
        thread, _ = await threads.create_thread(conn, caller, customer_id, thread_spec)
        planned = dataclasses.replace(
            planned, conversation_id=thread.conversation_id, customer_id=customer_id
        )
        run = await insert_run(conn, planned, thread.thread_id)
        prompt = await prompt_of(conn, run, [])
        segment = await reservations.reserve(
            conn, caller, run, thread, customer_id, prompt, origin, stream=spec.stream
        )
    segment.prelude.append(("thread.created", threads.thread_json(thread)))
    _announce(segment, "thread.run.created", "thread.run.queued")
    return Started(segment.run, thread, segment)


# --- tool outputs --------------------------------------------------------------------------


def _with_outputs(step: StepRow, outputs: dict[str, str]) -> dict[str, Any]:
    calls = step.step_details.get("tool_calls") or []
    wanted = {c["id"] for c in calls}
    if set(outputs) != wanted:
        missing = sorted(wanted - set(outputs))
        detail = f"missing {missing}" if missing else f"unknown {sorted(set(outputs) - wanted)}"
        raise InvalidRequest(
            f"Tool outputs must answer exactly the run's pending tool calls ({detail}).",
            param="tool_outputs",
        )
    for call in calls:
        call["function"]["output"] = outputs[call["id"]]
    return {"type": "tool_calls", "tool_calls": calls}


async def submit_tool_outputs(
    svc: Services,
    caller: Caller,
    thread: ThreadRow,
    run_id: str,
    outputs: dict[str, str],
    attribution: str | None,
    origin: run_calls.Origin,
    *,
    stream: bool,
) -> Started:
    """Answer a run's ``requires_action``: its tool step completes with the outputs and the
    next model call is reserved, all or nothing (a refusal leaves it waiting)."""
    async with run_calls.reserving(svc) as reservations, svc.db.transaction() as conn:
        run = await store.resume(conn, run_id)
        if run is None:
            current = await get_run(svc, thread, run_id)
            raise InvalidRequest(
                f"Run {run_id} is {current.status}; tool outputs are only accepted while it "
                "requires_action.",
                param="run_id",
            )
        steps = await step_store.select_all_steps(conn, run.id)
        pending = [s for s in steps if s.type == "tool_calls" and s.status == "in_progress"]
        if not pending:
            raise InvalidRequest(f"Run {run_id} has no pending tool calls.", param="run_id")
        step = pending[-1]
        done = await step_store.finish_step(
            conn, step.id, status="completed", details=_with_outputs(step, outputs)
        )
        assert done is not None
        steps = [done if s.id == done.id else s for s in steps]
        prompt = await prompt_of(conn, run, steps)
        ref = attribution if attribution is not None else run.customer_id
        segment = await reservations.reserve(
            conn, caller, run, thread, ref, prompt, origin, stream=stream
        )
        segment.prelude.append(
            ("thread.run.step.completed", run_events.step_json(done, run, thread.thread_id))
        )
    _announce(segment, "thread.run.queued")
    return Started(segment.run, thread, segment)


# --- reads, update, cancel -----------------------------------------------------------------


def _run_not_found(run_id: str) -> NotFound:
    return NotFound(f"No run found with id {run_id!r}.", param="run_id")


async def get_run(svc: Services, thread: ThreadRow, run_id: str) -> RunRow:
    row = await store.select_run(svc.db, run_id, thread.conversation_id)
    if row is None:
        raise _run_not_found(run_id)
    return row


async def list_runs(
    svc: Services, thread: ThreadRow, page: PageRequest
) -> tuple[list[RunRow], bool]:
    async def key_of(run_id: str) -> int | None:
        return await store.select_run_seq(svc.db, thread.conversation_id, run_id)

    win = await resolve_window(page, key_of)
    return page_of(await store.select_runs(svc.db, thread.conversation_id, win), win)


async def update_run(
    svc: Services, thread: ThreadRow, run_id: str, metadata: dict[str, str] | None
) -> RunRow:
    if metadata is None:
        return await get_run(svc, thread, run_id)
    row = await store.update_metadata(svc.db, run_id, thread.conversation_id, metadata)
    if row is None:
        raise _run_not_found(run_id)
    return row


async def cancel_run(svc: Services, thread: ThreadRow, run_id: str) -> RunRow:
    """queued / in_progress: ``cancelling``, and the process executing it is told (NOTIFY)
    and ends it ``cancelled``; requires_action: ``cancelled`` at once (nothing executes)."""
    run = await get_run(svc, thread, run_id)
    async with svc.db.transaction() as conn:
        row = await store.cancel(conn, run.id)
        if row is None:
            raise InvalidRequest(f"Cannot cancel run with status '{run.status}'.", param="run_id")
        if row.status == "cancelled":
            await step_store.close_open_steps(conn, row.id, "cancelled")
            await store.insert_run_event(conn, row, thread.thread_id, new_id("evt"))
        else:
            await store.notify_cancel(conn, row.id)
    return row


async def get_step(
    svc: Services, thread: ThreadRow, run_id: str, step_id: str
) -> tuple[RunRow, StepRow]:
    run = await get_run(svc, thread, run_id)
    row = await step_store.select_step(svc.db, run.id, step_id)
    if row is None:
        raise NotFound(f"No run step found with id {step_id!r}.", param="step_id")
    return run, row


async def list_steps(
    svc: Services, thread: ThreadRow, run_id: str, page: PageRequest
) -> tuple[RunRow, list[StepRow], bool]:
    run = await get_run(svc, thread, run_id)

    async def key_of(step_id: str) -> int | None:
        return await step_store.select_step_seq(svc.db, run.id, step_id)

    win = await resolve_window(page, key_of)
    rows, more = page_of(await step_store.select_steps(svc.db, run.id, win), win)
    return run, rows, more
