"""SQL for runs (their steps are ``run_steps``'). Every transition is a conditional UPDATE on
the run's status, so a run that already ended (completed, cancelled, expired by the sweeper,
...) is never overwritten; the partial unique index ``run_active_conversation_idx`` is the
thread lock."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from ringside.pagination import Window
from ringside.store.bridge import Conn, Database, Record

ACTIVE = ("queued", "in_progress", "requires_action", "cancelling")
CANCEL_CHANNEL = "ringside_run_cancel"


@dataclass(frozen=True)
class RunRow:
    seq: int
    id: str
    developer_id: str
    conversation_id: str
    assistant_id: str
    customer_id: str | None
    api_key_id: str
    status: str
    model: str
    instructions: str
    tools: list[dict[str, Any]]
    tool_resources: dict[str, Any] | None
    temperature: float | None
    top_p: float | None
    max_prompt_tokens: int | None
    max_completion_tokens: int | None
    truncation_strategy: dict[str, Any]
    tool_choice: Any
    parallel_tool_calls: bool
    response_format: Any | None
    metadata: dict[str, str]
    required_action: dict[str, Any] | None
    last_error: dict[str, Any] | None
    incomplete_details: dict[str, Any] | None
    prompt_tokens: int
    completion_tokens: int
    process_id: str | None
    created_at: datetime
    started_at: datetime | None
    expires_at: datetime
    cancelled_at: datetime | None
    failed_at: datetime | None
    completed_at: datetime | None


@dataclass(frozen=True)
class NewRun:
    id: str
    developer_id: str
    conversation_id: str
    assistant_id: str
    customer_id: str | None
    api_key_id: str
    model: str
    instructions: str
    tools: list[dict[str, Any]]
    tool_resources: dict[str, Any] | None
    temperature: float | None
    top_p: float | None
    max_prompt_tokens: int | None
    max_completion_tokens: int | None
    truncation_strategy: dict[str, Any]
    tool_choice: Any
    parallel_tool_calls: bool
    response_format: Any | None
    metadata: dict[str, str]
    expires_in_s: int


_RUN_COLUMNS = """seq, id, developer_id, conversation_id, assistant_id, customer_id, api_key_id,
    status, model, instructions, tools, tool_resources, temperature, top_p, max_prompt_tokens,
    max_completion_tokens, truncation_strategy, tool_choice, parallel_tool_calls,
    response_format, metadata, required_action, last_error, incomplete_details, prompt_tokens,
    completion_tokens, process_id, created_at, started_at, expires_at, cancelled_at, failed_at,
    completed_at"""
_RUN_JSON = (
    "tools",
    "tool_resources",
    "truncation_strategy",
    "tool_choice",
    "response_format",
    "metadata",
    "required_action",
    "last_error",
    "incomplete_details",
)


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _run(record: Record) -> RunRow:
    values = dict(record)
    for name in _RUN_JSON:
        if values[name] is not None:
            values[name] = orjson.loads(values[name])
    return RunRow(**values)


_INSERT_RUN = f"""
    INSERT INTO run (id, developer_id, conversation_id, assistant_id, customer_id, api_key_id,
                     status, model, instructions, tools, tool_resources, temperature, top_p,
                     max_prompt_tokens, max_completion_tokens, truncation_strategy,
                     tool_choice, parallel_tool_calls, response_format, metadata, expires_at)
    VALUES ($1, $2, $3, $4, $5, $6, 'queued', $7, $8, $9::jsonb, $10::jsonb, $11, $12, $13,
            $14, $15::jsonb, $16::jsonb, $17, $18::jsonb, $19::jsonb,
            now() + make_interval(secs => $20))
 RETURNING {_RUN_COLUMNS}"""


async def insert_run(conn: Conn, run: NewRun) -> RunRow:
    """Raises ``UniqueViolation`` when the conversation already has an active run."""
    record = await conn.fetchrow(
        _INSERT_RUN,
        run.id,
        run.developer_id,
        run.conversation_id,
        run.assistant_id,
        run.customer_id,
        run.api_key_id,
        run.model,
        run.instructions,
        _json(run.tools),
        _json(run.tool_resources),
        run.temperature,
        run.top_p,
        run.max_prompt_tokens,
        run.max_completion_tokens,
        _json(run.truncation_strategy),
        _json(run.tool_choice),
        run.parallel_tool_calls,
        _json(run.response_format),
        _json(run.metadata),
        float(run.expires_in_s),
    )
    assert record is not None
    return _run(record)


_SELECT_RUN = f"""
    SELECT {_RUN_COLUMNS} FROM run WHERE id = $1 AND conversation_id = $2"""


async def select_run(conn: Conn | Database, run_id: str, conversation_id: str) -> RunRow | None:
    record = await conn.fetchrow(_SELECT_RUN, run_id, conversation_id)
    return _run(record) if record else None


_LIST_RUNS = """
    SELECT {columns}
      FROM run
     WHERE conversation_id = $1 AND seq > $2 AND seq < $3
     ORDER BY seq {direction}
     LIMIT $4"""
_LIST_RUNS_ASC = _LIST_RUNS.format(columns=_RUN_COLUMNS, direction="ASC")
_LIST_RUNS_DESC = _LIST_RUNS.format(columns=_RUN_COLUMNS, direction="DESC")


async def select_runs(conn: Conn | Database, conversation_id: str, win: Window) -> list[RunRow]:
    query = _LIST_RUNS_ASC if win.ascending else _LIST_RUNS_DESC
    return [_run(r) for r in await conn.fetch(query, conversation_id, *win.bounds)]


async def select_run_seq(conn: Conn | Database, conversation_id: str, run_id: str) -> int | None:
    seq: int | None = await conn.fetchval(
        "SELECT seq FROM run WHERE conversation_id = $1 AND id = $2", conversation_id, run_id
    )
    return seq


_UPDATE_METADATA = f"""
    UPDATE run SET metadata = $3::jsonb
     WHERE id = $1 AND conversation_id = $2
 RETURNING {_RUN_COLUMNS}"""


async def update_metadata(
    conn: Conn | Database, run_id: str, conversation_id: str, metadata: dict[str, str]
) -> RunRow | None:
    record = await conn.fetchrow(_UPDATE_METADATA, run_id, conversation_id, _json(metadata))
    return _run(record) if record else None


_SET_CUSTOMER = "UPDATE run SET customer_id = $2 WHERE id = $1"


async def set_customer(conn: Conn, run_id: str, customer_id: str | None) -> None:
    await conn.execute(_SET_CUSTOMER, run_id, customer_id)


_BEGIN_SEGMENT = f"""
    UPDATE run
       SET status = 'in_progress', started_at = COALESCE(started_at, now()), process_id = $2
     WHERE id = $1 AND status = 'queued'
 RETURNING {_RUN_COLUMNS}"""


async def begin_segment(conn: Conn | Database, run_id: str, process_id: str) -> RunRow | None:
    """queued -> in_progress; None if the run left ``queued`` (cancelled, expired) meanwhile."""
    record = await conn.fetchrow(_BEGIN_SEGMENT, run_id, process_id)
    return _run(record) if record else None


_RESUME = f"""
    UPDATE run SET status = 'queued', required_action = NULL
     WHERE id = $1 AND status = 'requires_action'
 RETURNING {_RUN_COLUMNS}"""


async def resume(conn: Conn, run_id: str) -> RunRow | None:
    """requires_action -> queued (tool outputs submitted); None if it is no longer waiting."""
    record = await conn.fetchrow(_RESUME, run_id)
    return _run(record) if record else None


# The end of a segment. The status moves only from a state the segment may leave; usage is
# counted even when the run ended meanwhile (the call was billed).
_FINISH = f"""
    UPDATE run
       SET status = $2, required_action = $3::jsonb, last_error = $4::jsonb,
           incomplete_details = $5::jsonb,
           prompt_tokens = prompt_tokens + $6, completion_tokens = completion_tokens + $7,
           process_id = NULL,
           cancelled_at = CASE WHEN $2 = 'cancelled' THEN now() END,
           failed_at = CASE WHEN $2 = 'failed' THEN now() END,
           completed_at = CASE WHEN $2 IN ('completed', 'incomplete') THEN now() END
     WHERE id = $1 AND status IN ('queued', 'in_progress', 'cancelling')
 RETURNING {_RUN_COLUMNS}"""
_ADD_USAGE = """
    UPDATE run SET prompt_tokens = prompt_tokens + $2, completion_tokens = completion_tokens + $3,
                   process_id = NULL
     WHERE id = $1"""


@dataclass(frozen=True)
class Ending:
    status: str
    required_action: dict[str, Any] | None = None
    last_error: dict[str, Any] | None = None
    incomplete_details: dict[str, Any] | None = None


async def finish_segment(
    conn: Conn, run_id: str, ending: Ending, prompt_tokens: int, completion_tokens: int
) -> RunRow | None:
    """The run as the segment ended it; None (its usage still added) if it had ended."""
    record = await conn.fetchrow(
        _FINISH,
        run_id,
        ending.status,
        _json(ending.required_action),
        _json(ending.last_error),
        _json(ending.incomplete_details),
        prompt_tokens,
        completion_tokens,
    )
    if record is None:
        await conn.execute(_ADD_USAGE, run_id, prompt_tokens, completion_tokens)
        return None
    return _run(record)


# queued / in_progress: cancelling (the executing process finishes it, told by NOTIFY);
# requires_action: nothing executes, so it is cancelled at once.
_CANCEL = f"""
    UPDATE run
       SET status = CASE WHEN status = 'requires_action' THEN 'cancelled' ELSE 'cancelling' END,
           cancelled_at = CASE WHEN status = 'requires_action' THEN now() END,
           required_action = NULL
     WHERE id = $1 AND status IN ('queued', 'in_progress', 'requires_action')
 RETURNING {_RUN_COLUMNS}"""


async def cancel(conn: Conn, run_id: str) -> RunRow | None:
    record = await conn.fetchrow(_CANCEL, run_id)
    return _run(record) if record else None


async def notify_cancel(conn: Conn | Database, run_id: str) -> None:
    """Delivered at commit to every process LISTENing (the one executing the run acts)."""
    await conn.execute("SELECT pg_notify($1, $2)", CANCEL_CHANNEL, run_id)


# --- webhooks (the outbox) -------------------------------------------------------------------

_INSERT_EVENT = """
    INSERT INTO webhook_event (id, developer_id, type, data) VALUES ($1, $2, $3, $4::jsonb)"""


async def insert_event(
    conn: Conn, *, id: str, developer_id: str, type: str, data: dict[str, Any]
) -> None:
    await conn.execute(_INSERT_EVENT, id, developer_id, type, _json(data))
