"""SQL for run steps: one per model call's output (a message it created, or the tool calls it
made), linked to that call's usage event by ``request_id``. Transitions leave only
``in_progress``, so a step closed by the sweeper is never reopened."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from ringside.pagination import Window
from ringside.store.bridge import Conn, Database, Record


@dataclass(frozen=True)
class StepRow:
    seq: int
    id: str
    run_id: str
    type: str
    status: str
    step_details: dict[str, Any]
    last_error: dict[str, Any] | None
    request_id: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    metadata: dict[str, str]
    created_at: datetime
    cancelled_at: datetime | None
    failed_at: datetime | None
    completed_at: datetime | None
    expired_at: datetime | None


_STEP_COLUMNS = """seq, id, run_id, type, status, step_details, last_error, request_id,
    prompt_tokens, completion_tokens, metadata, created_at, cancelled_at, failed_at,
    completed_at, expired_at"""
_STEP_JSON = ("step_details", "last_error", "metadata")


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def step_of(record: Record) -> StepRow:
    values = dict(record)
    for name in _STEP_JSON:
        if values[name] is not None:
            values[name] = orjson.loads(values[name])
    return StepRow(**values)


_INSERT_STEP = f"""
    INSERT INTO run_step (id, run_id, type, status, step_details, request_id)
    VALUES ($1, $2, $3, 'in_progress', $4::jsonb, $5)
 RETURNING {_STEP_COLUMNS}"""


async def insert_step(
    conn: Conn | Database,
    *,
    id: str,
    run_id: str,
    type: str,
    details: dict[str, Any],
    request_id: str,
) -> StepRow:
    record = await conn.fetchrow(_INSERT_STEP, id, run_id, type, _json(details), request_id)
    assert record is not None
    return step_of(record)


# A step leaving in_progress (or staying there with its details filled in: tool calls that
# wait for their outputs); ``finished`` is the row it leaves. Also in ``run_segments``.
FINISH_SET = """status = {status}, step_details = {details}::jsonb, last_error = {error}::jsonb,
           prompt_tokens = COALESCE({prompt}, prompt_tokens),
           completion_tokens = COALESCE({completion}, completion_tokens),
           cancelled_at = CASE WHEN {status} = 'cancelled' THEN now() END,
           failed_at = CASE WHEN {status} = 'failed' THEN now() END,
           completed_at = CASE WHEN {status} = 'completed' THEN now() END,
           expired_at = CASE WHEN {status} = 'expired' THEN now() END"""
_FINISH_STEP = f"""
    UPDATE run_step
       SET {FINISH_SET.format(status="$2", details="$3", error="$4", prompt="$5", completion="$6")}
     WHERE id = $1 AND status = 'in_progress'
 RETURNING {_STEP_COLUMNS}"""


def opened(
    *,
    seq: int,
    id: str,
    run_id: str,
    type: str,
    details: dict[str, Any],
    request_id: str,
    created_at: datetime,
) -> StepRow:
    """The row ``_INSERT_STEP`` makes (its defaults), from its generated seq and created_at."""
    return StepRow(
        seq=seq, id=id, run_id=run_id, type=type, status="in_progress", step_details=details,
        last_error=None, request_id=request_id, prompt_tokens=None, completion_tokens=None,
        metadata={}, created_at=created_at, cancelled_at=None, failed_at=None,
        completed_at=None, expired_at=None,
    )  # fmt: skip


def finished(
    row: StepRow,
    *,
    status: str,
    details: dict[str, Any],
    last_error: dict[str, Any] | None,
    prompt_tokens: int | None,
    completion_tokens: int | None,
    at: datetime,
) -> StepRow:
    """The row as ``FINISH_SET`` leaves it, in a statement whose now() is ``at``."""
    return dataclasses.replace(
        row,
        status=status,
        step_details=details,
        last_error=last_error,
        prompt_tokens=row.prompt_tokens if prompt_tokens is None else prompt_tokens,
        completion_tokens=row.completion_tokens if completion_tokens is None else completion_tokens,
        cancelled_at=at if status == "cancelled" else None,
        failed_at=at if status == "failed" else None,
        completed_at=at if status == "completed" else None,
        expired_at=at if status == "expired" else None,
    )


async def finish_step(
    conn: Conn | Database,
    step_id: str,
    *,
    status: str,
    details: dict[str, Any],
    last_error: dict[str, Any] | None = None,
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
) -> StepRow | None:
    record = await conn.fetchrow(
        _FINISH_STEP,
        step_id,
        status,
        _json(details),
        _json(last_error),
        prompt_tokens,
        completion_tokens,
    )
    return step_of(record) if record else None


# Steps still open when their run ends cancelled or failed; also in ``run_segments``.
CLOSE_SET = """status = {status},
           cancelled_at = CASE WHEN {status} = 'cancelled' THEN now() END,
           failed_at = CASE WHEN {status} = 'failed' THEN now() END"""
_CLOSE_STEPS = f"""
    UPDATE run_step
       SET {CLOSE_SET.format(status="$2")}
     WHERE run_id = $1 AND status = 'in_progress'
 RETURNING {_STEP_COLUMNS}"""


async def close_open_steps(conn: Conn | Database, run_id: str, status: str) -> list[StepRow]:
    """Every step still in progress of a run that ended (cancelled or failed)."""
    return [step_of(r) for r in await conn.fetch(_CLOSE_STEPS, run_id, status)]


_SELECT_STEP = f"SELECT {_STEP_COLUMNS} FROM run_step WHERE run_id = $1 AND id = $2"


async def select_step(conn: Conn | Database, run_id: str, step_id: str) -> StepRow | None:
    record = await conn.fetchrow(_SELECT_STEP, run_id, step_id)
    return step_of(record) if record else None


_SELECT_STEPS_BY_ID = f"""
    SELECT {_STEP_COLUMNS} FROM run_step WHERE id = ANY($1::text[]) ORDER BY seq"""


async def select_steps_by_id(conn: Conn | Database, step_ids: list[str]) -> list[StepRow]:
    return [step_of(r) for r in await conn.fetch(_SELECT_STEPS_BY_ID, step_ids)]


_SELECT_STEPS_OF_RUN = f"""
    SELECT {_STEP_COLUMNS} FROM run_step WHERE run_id = $1 ORDER BY seq"""


async def select_all_steps(conn: Conn | Database, run_id: str) -> list[StepRow]:
    return [step_of(r) for r in await conn.fetch(_SELECT_STEPS_OF_RUN, run_id)]


_LIST_STEPS = """
    SELECT {columns}
      FROM run_step
     WHERE run_id = $1 AND seq > $2 AND seq < $3
     ORDER BY seq {direction}
     LIMIT $4"""
_LIST_STEPS_ASC = _LIST_STEPS.format(columns=_STEP_COLUMNS, direction="ASC")
_LIST_STEPS_DESC = _LIST_STEPS.format(columns=_STEP_COLUMNS, direction="DESC")


async def select_steps(conn: Conn | Database, run_id: str, win: Window) -> list[StepRow]:
    query = _LIST_STEPS_ASC if win.ascending else _LIST_STEPS_DESC
    return [step_of(r) for r in await conn.fetch(query, run_id, *win.bounds)]


async def select_step_seq(conn: Conn | Database, run_id: str, step_id: str) -> int | None:
    seq: int | None = await conn.fetchval(
        "SELECT seq FROM run_step WHERE run_id = $1 AND id = $2", run_id, step_id
    )
    return seq
