"""SQL for what a run segment writes as it executes, one statement (and one round trip) each:
its message, with the ``message_creation`` step, when the model starts writing; and its end,
where the run's transition, its message and steps closed, and its webhook event commit
together. The pieces are the other stores' (``messages``, ``run_steps``, ``runs``), so each
table's rules stay written once.

A segment whose run ended meanwhile (the sweeper expired it) is not ended by ``end``: every
part of the statement waits on the run's conditional UPDATE, and the caller takes the slower
path of separate statements for that rare case.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from ringside.store import billing, messages, run_steps, runs
from ringside.store.billing import SettleSpec
from ringside.store.bridge import Conn, Database
from ringside.store.messages import MessageRow, MessageValues
from ringside.store.run_steps import StepRow
from ringside.store.runs import Ending, RunRow


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


# --- the message, when the model starts writing ----------------------------------------------

_OPEN_MESSAGE = f"""
    WITH {messages.APPEND_ANY_CTES}, step AS (
        INSERT INTO run_step (id, run_id, type, status, step_details, request_id)
        SELECT $10, $7, 'message_creation', 'in_progress', $11::jsonb, $12 FROM appended
     RETURNING seq, created_at
    )
    SELECT appended.*, step.seq AS step_seq, step.created_at AS step_created_at
      FROM appended, step"""


async def open_message(
    db: Conn | Database, thread_id: str, conversation_id: str, values: MessageValues,
    *, step_id: str, request_id: str,
) -> tuple[MessageRow, StepRow] | None:  # fmt: skip
    """The run's message (``values``, its run_id set) and its message_creation step; None
    when the thread is full or gone."""
    assert values.run_id is not None
    details = {"type": "message_creation", "message_creation": {"message_id": values.id}}
    record = await db.fetchrow(
        _OPEN_MESSAGE,
        *messages.append_args(conversation_id, values),
        step_id,
        _json(details),
        request_id,
    )
    if record is None:
        return None
    fields = dict(record)
    step = run_steps.opened(
        seq=fields.pop("step_seq"),
        id=step_id,
        run_id=values.run_id,
        type="message_creation",
        details=details,
        request_id=request_id,
        created_at=fields.pop("step_created_at"),
    )
    return messages.message_of(fields, thread_id), step


# --- the end ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MessageEnd:
    row: MessageRow
    content: list[dict[str, Any]]
    status: str
    incomplete_details: dict[str, Any] | None


@dataclass(frozen=True)
class StepEnd:
    row: StepRow
    status: str
    details: dict[str, Any]
    last_error: dict[str, Any] | None
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class SegmentEnd:
    """How a segment leaves its rows: the run's ending (and the call's usage), its message and
    steps, and the status for any other step still open (cancelled / failed runs)."""

    run_id: str
    thread_id: str
    ending: Ending
    prompt_tokens: int
    completion_tokens: int
    message: MessageEnd | None
    steps: Sequence[StepEnd]
    close_others: str | None
    event_id: str


@dataclass(frozen=True)
class Ended:
    run: RunRow
    message: MessageRow | None
    steps: list[StepRow]  # this segment's, then any other it closed


# $1-$7 FINISH_RUN's; $8-$11 the message; $12-$17 the steps; $18 the others' status;
# $19-$22 the event (id, type, reason, thread id); settling, $23-$36 ringside_settle's.
_ENDING = f"""
    r AS ({runs.FINISH_RUN}
    ), message AS (
        UPDATE thread_message
           SET {messages.FINISH_SET.format(content="$8", status="$9", details="$10")}
         WHERE id = $11 AND EXISTS (SELECT FROM r)
    ), steps AS (
        UPDATE run_step AS s
           SET {
    run_steps.FINISH_SET.format(
        status="v.status",
        details="v.details",
        error="v.error",
        prompt="v.prompt",
        completion="v.completion",
    )
}
          FROM unnest($12::text[], $13::text[], $14::text[], $15::text[], $16::int[],
                      $17::int[]) AS v (id, status, details, error, prompt, completion)
         WHERE s.id = v.id AND s.status = 'in_progress' AND EXISTS (SELECT FROM r)
    ), others AS (
        UPDATE run_step AS s
           SET {run_steps.CLOSE_SET.format(status="$18::text")}
         WHERE s.run_id = $1 AND s.status = 'in_progress' AND $18::text IS NOT NULL
           AND s.id <> ALL($12::text[]) AND EXISTS (SELECT FROM r)
     RETURNING s.id
    ), event AS ({
    runs.RUN_EVENT_INSERT.format(id="$19", type="$20", reason="$21", thread="$22", run="r")
}
         WHERE $20::text IS NOT NULL
    )"""
_ENDED = "r.*, now() AS ended_at, ARRAY(SELECT id FROM others) AS closed"
_END = f"WITH {_ENDING} SELECT {_ENDED} FROM r"
# The call's settlement in the same statement, whether or not the run was still active (the
# call was made either way): the run's end and its billing commit together.
_END_SETTLED = f"""
    WITH billed AS (SELECT settled FROM {billing.settle_call(23)}), {_ENDING}
    SELECT {_ENDED} FROM billed LEFT JOIN r ON true"""


async def end(db: Database, seg: SegmentEnd, settle: SettleSpec | None) -> Ended | None:
    """End the segment, and settle its call (``settle``), in one statement; None when its run
    had ended already (expired, say): then nothing but the settlement was written."""
    message = seg.message
    kind, reason = runs.RUN_EVENTS.get(seg.ending.status, (None, None))
    record = await db.fetchrow(
        _END if settle is None else _END_SETTLED,
        *runs.finish_args(seg.run_id, seg.ending, seg.prompt_tokens, seg.completion_tokens),
        _json(message.content) if message else None,
        message.status if message else None,
        _json(message.incomplete_details) if message else None,
        message.row.id if message else None,
        [s.row.id for s in seg.steps],
        [s.status for s in seg.steps],
        [_json(s.details) for s in seg.steps],
        [_json(s.last_error) for s in seg.steps],
        [s.prompt_tokens for s in seg.steps],
        [s.completion_tokens for s in seg.steps],
        seg.close_others,
        seg.event_id,
        kind,
        reason,
        seg.thread_id,
        *(() if settle is None else billing.settle_args(settle)),
    )
    if record is None or record["id"] is None:
        return None
    fields = dict(record)
    at: datetime = fields.pop("ended_at")
    closed: list[str] = fields.pop("closed")
    steps = [_step_ended(s, at) for s in seg.steps]
    if closed:  # only a step no segment owns (none today): read back as they were left
        steps += await run_steps.select_steps_by_id(db, closed)
    return Ended(runs.run_of(fields), _message_ended(message, at), steps)


async def end_late(conn: Conn, seg: SegmentEnd) -> tuple[MessageRow | None, list[StepRow]]:
    """A segment's message and steps, after its run ended without it (statement by
    statement: the rare path)."""
    ended = None
    if seg.message is not None:
        m = seg.message
        ended = await messages.finish_message(
            conn,
            m.row.id,
            content=m.content,
            status=m.status,
            incomplete_details=m.incomplete_details,
        )
    steps: list[StepRow] = []
    for s in seg.steps:
        step = await run_steps.finish_step(
            conn,
            s.row.id,
            status=s.status,
            details=s.details,
            last_error=s.last_error,
            prompt_tokens=s.prompt_tokens,
            completion_tokens=s.completion_tokens,
        )
        steps += [step] if step else []
    if seg.close_others is not None:
        steps += await run_steps.close_open_steps(conn, seg.run_id, seg.close_others)
    return ended, steps


def _message_ended(m: MessageEnd | None, at: datetime) -> MessageRow | None:
    if m is None:
        return None
    return messages.finished(
        m.row, content=m.content, status=m.status, incomplete_details=m.incomplete_details, at=at
    )


def _step_ended(s: StepEnd, at: datetime) -> StepRow:
    return run_steps.finished(
        s.row,
        status=s.status,
        details=s.details,
        last_error=s.last_error,
        prompt_tokens=s.prompt_tokens,
        completion_tokens=s.completion_tokens,
        at=at,
    )
