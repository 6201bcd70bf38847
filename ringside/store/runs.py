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


def run_of(record: Record) -> RunRow:
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
    return run_of(record)


_SELECT_RUN = f"""
    SELECT {_RUN_COLUMNS} FROM run WHERE id = $1 AND conversation_id = $2"""


async def select_run(conn: Conn | Database, run_id: str, conversation_id: str) -> RunRow | None:
    record = await conn.fetchrow(_SELECT_RUN, run_id, conversation_id)
    return run_of(record) if record else None


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
    return [run_of(r) for r in await conn.fetch(query, conversation_id, *win.bounds)]


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
    return run_of(record) if record else None


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
    return run_of(record) if record else None


_RESUME = f"""
    UPDATE run SET status = 'queued', required_action = NULL
     WHERE id = $1 AND status = 'requires_action'
 RETURNING {_RUN_COLUMNS}"""


async def resume(conn: Conn, run_id: str) -> RunRow | None:
    """requires_action -> queued (tool outputs submitted); None if it is no longer waiting."""
    record = await conn.fetchrow(_RESUME, run_id)
    return run_of(record) if record else None


# The end of a segment. The status moves only from a state the segment may leave; usage is
# counted even when the run ended meanwhile (the call was billed).
# ($1 run, then ``finish_args``); also in ``run_segments``, which ends a segment in one
# statement.
FINISH_RUN = f"""
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


def finish_args(
    run_id: str, ending: Ending, prompt_tokens: int, completion_tokens: int
) -> tuple[Any, ...]:
    """The parameters $1 to $7 of ``FINISH_RUN``."""
    return (
        run_id,
        ending.status,
        _json(ending.required_action),
        _json(ending.last_error),
        _json(ending.incomplete_details),
        prompt_tokens,
        completion_tokens,
    )


async def finish_segment(
    conn: Conn, run_id: str, ending: Ending, prompt_tokens: int, completion_tokens: int
) -> RunRow | None:
    """The run as the segment ended it; None (its usage still added) if it had ended."""
    record = await conn.fetchrow(
        FINISH_RUN, *finish_args(run_id, ending, prompt_tokens, completion_tokens)
    )
    if record is None:
        await conn.execute(_ADD_USAGE, run_id, prompt_tokens, completion_tokens)
        return None
    return run_of(record)


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
    return run_of(record) if record else None


async def notify_cancel(conn: Conn | Database, run_id: str) -> None:
    """Delivered at commit to every process LISTENing (the one executing the run acts)."""
    await conn.execute("SELECT pg_notify($1, $2)", CANCEL_CHANNEL, run_id)


# --- webhooks (the outbox) -------------------------------------------------------------------

# run.completed (completed, incomplete) or run.failed (with its reason), in the transaction of
# the run's last transition; the data is ringside_run_event_data's (sql/0008).
RUN_EVENTS = {
    "completed": ("run.completed", None),
    "incomplete": ("run.completed", None),
    "failed": ("run.failed", "error"),
    "cancelled": ("run.failed", "cancelled"),
    "expired": ("run.failed", "expired"),
}
# The event of the run in ``{run}`` (a table or CTE with the run's columns), $N parameters:
# {id} the event id, {type} its type, {reason} its reason, {thread} the public thread id.
RUN_EVENT_INSERT = """
    INSERT INTO webhook_event (id, developer_id, type, data)
    SELECT {id}, r.developer_id, {type}::text,
           ringside_run_event_data(r.id, {thread}::text, r.assistant_id, r.customer_id,
                                   r.status, r.model, {reason}::text, r.last_error,
                                   r.incomplete_details, r.prompt_tokens,
                                   r.completion_tokens, r.created_at)
      FROM {run} AS r"""
_INSERT_RUN_EVENT = (
    RUN_EVENT_INSERT.format(id="$2", type="$3", reason="$4", thread="$5", run="run")
    + " WHERE r.id = $1"
)


async def insert_run_event(conn: Conn, run: RunRow, thread_id: str, event_id: str) -> None:
    """The webhook event of ``run``, which has just ended (as stored)."""
    kind, reason = RUN_EVENTS[run.status]
    await conn.execute(_INSERT_RUN_EVENT, run.id, event_id, kind, reason, thread_id)
