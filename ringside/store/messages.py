"""SQL for thread messages.

A conversation's ``message_count`` (live messages, at most 5,000) and ``next_ordinal`` move in
the same conditional UPDATE that hands a new message its ordinal: the row lock serialises
concurrent posts, the re-checked WHERE stops them at the cap, and ordinals follow lock order.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from ringside.pagination import Window
from ringside.store.bridge import Conn, Database, Record
from ringside.store.threads import (
    ACTIVE_RUN,
    MAX_MESSAGES,
    ThreadRow,
    json_or_none,
    loads_or_none,
)


@dataclass(frozen=True)
class MessageRow:
    seq: int
    id: str
    conversation_id: str
    thread_id: str
    ordinal: int
    role: str
    content: list[dict[str, Any]]
    attachments: list[dict[str, Any]] | None
    assistant_id: str | None
    run_id: str | None
    status: str
    incomplete_details: dict[str, Any] | None
    metadata: dict[str, str]
    created_at: datetime
    completed_at: datetime | None
    incomplete_at: datetime | None


@dataclass(frozen=True)
class MessageValues:
    """A message to insert."""

    id: str
    role: str
    content: list[dict[str, Any]]
    attachments: list[dict[str, Any]] | None
    metadata: dict[str, str]
    assistant_id: str | None = None
    run_id: str | None = None
    status: str = "completed"


_MESSAGE_COLUMNS = """seq, id, conversation_id, ordinal, role, content, attachments,
    assistant_id, run_id, status, incomplete_details, metadata, created_at, completed_at,
    incomplete_at"""
_M_MESSAGE_COLUMNS = ", ".join(f"m.{c.strip()}" for c in _MESSAGE_COLUMNS.split(","))

_INSERT_INITIAL = f"""
    INSERT INTO thread_message (id, conversation_id, ordinal, role, content, attachments,
                                metadata, completed_at)
    SELECT t.id, $1, t.ordinal, t.role, t.content::jsonb, t.attachments::jsonb,
           t.metadata::jsonb, now()
      FROM unnest($2::text[], $3::int[], $4::text[], $5::text[], $6::text[], $7::text[])
           AS t (id, ordinal, role, content, attachments, metadata)
 RETURNING {_MESSAGE_COLUMNS}"""

# The CTEs that append a message ($1 conversation, $2 id, $3 role, $4 content, $5 attachments,
# $6 assistant, $7 run, $8 status, $9 metadata): ``appended`` is the new row, none when the
# thread is full or gone (or, unlocked, holds an active run). ``run_segments`` extends them.
_APPEND_CTES = """
    slot AS (
        UPDATE conversation
           SET message_count = message_count + 1, next_ordinal = next_ordinal + 1
         WHERE id = $1 AND deleted_at IS NULL AND message_count < {cap} {unlocked}
     RETURNING next_ordinal - 1 AS ordinal
    ), appended AS (
        INSERT INTO thread_message (id, conversation_id, ordinal, role, content, attachments,
                                    assistant_id, run_id, status, metadata, completed_at)
        SELECT $2, $1, slot.ordinal, $3, $4::jsonb, $5::jsonb, $6, $7, $8::text, $9::jsonb,
               CASE WHEN $8::text = 'completed' THEN now() END
          FROM slot
     RETURNING {columns}
    )"""
APPEND_ANY_CTES = _APPEND_CTES.format(cap=MAX_MESSAGES, unlocked="", columns=_MESSAGE_COLUMNS)
_APPEND_ANY = f"WITH {APPEND_ANY_CTES} SELECT * FROM appended"
# A client's post: refused while a run holds the thread (as OpenAI refuses it).
_APPEND_UNLOCKED = "WITH {ctes} SELECT * FROM appended".format(
    ctes=_APPEND_CTES.format(
        cap=MAX_MESSAGES,
        unlocked=f"AND NOT {ACTIVE_RUN.format(conv='$1')}",
        columns=_MESSAGE_COLUMNS,
    )
)

# A run's message as it ends (``finished`` is the row it leaves); also in ``run_segments``.
FINISH_SET = """content = {content}::jsonb, status = {status}::text,
               incomplete_details = {details}::jsonb,
               completed_at = CASE WHEN {status}::text = 'completed' THEN now() END,
               incomplete_at = CASE WHEN {status}::text = 'incomplete' THEN now() END"""
_FINISH_MESSAGE = f"""
    WITH m AS (
        UPDATE thread_message
           SET {FINISH_SET.format(content="$2", status="$3", details="$4")}
         WHERE id = $1
     RETURNING {_MESSAGE_COLUMNS}
    )
    SELECT {_M_MESSAGE_COLUMNS}, a.thread_id
      FROM m JOIN api_thread_aliases AS a ON a.conversation_id = m.conversation_id"""

_SET_MESSAGE_METADATA = f"""
    UPDATE thread_message SET metadata = $3::jsonb
     WHERE conversation_id = $1 AND id = $2
 RETURNING {_MESSAGE_COLUMNS}"""

_SELECT_MESSAGE = f"""
    SELECT {_MESSAGE_COLUMNS} FROM thread_message WHERE conversation_id = $1 AND id = $2"""

# The count frees a slot under the cap; next_ordinal never goes back, so order stays stable.
_DELETE_MESSAGE = f"""
    WITH d AS (
        DELETE FROM thread_message
         WHERE conversation_id = $1 AND id = $2 AND NOT {ACTIVE_RUN.format(conv="$1")}
     RETURNING conversation_id
    )
    UPDATE conversation SET message_count = message_count - 1
     WHERE id = (SELECT conversation_id FROM d)
 RETURNING id"""

_LIST_MESSAGES = """
    SELECT {columns}
      FROM thread_message
     WHERE conversation_id = $1 AND ($2::text IS NULL OR run_id = $2)
       AND ordinal > $3::bigint AND ordinal < $4::bigint
     ORDER BY ordinal {direction}
     LIMIT $5"""
_LIST_MESSAGES_ASC = _LIST_MESSAGES.format(columns=_MESSAGE_COLUMNS, direction="ASC")
_LIST_MESSAGES_DESC = _LIST_MESSAGES.format(columns=_MESSAGE_COLUMNS, direction="DESC")

_SELECT_ORDINAL = "SELECT ordinal FROM thread_message WHERE conversation_id = $1 AND id = $2"

# The newest $2 (all when NULL), oldest first.
_PROMPT = f"""
    SELECT {_M_MESSAGE_COLUMNS}, a.thread_id
      FROM (SELECT {_MESSAGE_COLUMNS} FROM thread_message
             WHERE conversation_id = $1
             ORDER BY ordinal DESC
             LIMIT $2) AS m
      JOIN api_thread_aliases AS a ON a.conversation_id = m.conversation_id
     ORDER BY m.ordinal ASC"""


def append_args(conversation_id: str, values: MessageValues) -> tuple[Any, ...]:
    """The parameters $1 to $9 of the append CTEs."""
    return (
        conversation_id,
        values.id,
        values.role,
        json_or_none(values.content),
        json_or_none(values.attachments),
        values.assistant_id,
        values.run_id,
        values.status,
        json_or_none(values.metadata),
    )


def finished(
    row: MessageRow,
    *,
    content: list[dict[str, Any]],
    status: str,
    incomplete_details: dict[str, Any] | None,
    at: datetime,
) -> MessageRow:
    """The row as ``FINISH_SET`` leaves it, in a statement whose now() is ``at``."""
    return dataclasses.replace(
        row,
        content=content,
        status=status,
        incomplete_details=incomplete_details,
        completed_at=at if status == "completed" else None,
        incomplete_at=at if status == "incomplete" else None,
    )


def message_of(record: Record, thread_id: str | None = None) -> MessageRow:
    values = dict(record)
    if thread_id is not None:
        values["thread_id"] = thread_id
    for name in ("content", "attachments", "incomplete_details"):
        values[name] = loads_or_none(values[name])
    values["metadata"] = orjson.loads(values["metadata"])
    return MessageRow(**values)


async def insert_initial_messages(
    conn: Conn, thread: ThreadRow, messages: list[MessageValues]
) -> list[MessageRow]:
    """A new thread's messages, ordinals 0 to n - 1 (its counters were set by insert_thread)."""
    if not messages:
        return []
    records = await conn.fetch(
        _INSERT_INITIAL,
        thread.conversation_id,
        [m.id for m in messages],
        list(range(len(messages))),
        [m.role for m in messages],
        [json_or_none(m.content) for m in messages],
        [json_or_none(m.attachments) for m in messages],
        [json_or_none(m.metadata) for m in messages],
    )
    rows = [message_of(r, thread.thread_id) for r in records]
    return sorted(rows, key=lambda m: m.ordinal)


async def append_message(
    conn: Conn | Database, thread: ThreadRow, values: MessageValues, *, unless_locked: bool
) -> MessageRow | None:
    """The message, with the thread's next ordinal; None when the thread is full or gone
    (or, ``unless_locked``, holds an active run): see select_thread_state."""
    record = await conn.fetchrow(
        _APPEND_UNLOCKED if unless_locked else _APPEND_ANY,
        *append_args(thread.conversation_id, values),
    )
    return message_of(record, thread.thread_id) if record else None


async def finish_message(
    conn: Conn | Database,
    message_id: str,
    *,
    content: list[dict[str, Any]],
    status: str,
    incomplete_details: dict[str, Any] | None,
) -> MessageRow | None:
    record = await conn.fetchrow(
        _FINISH_MESSAGE, message_id, json_or_none(content), status, json_or_none(incomplete_details)
    )
    return message_of(record) if record else None


async def set_message_metadata(
    conn: Conn | Database, thread: ThreadRow, message_id: str, metadata: dict[str, str]
) -> MessageRow | None:
    record = await conn.fetchrow(
        _SET_MESSAGE_METADATA, thread.conversation_id, message_id, json_or_none(metadata)
    )
    return message_of(record, thread.thread_id) if record else None


async def select_message(
    conn: Conn | Database, thread: ThreadRow, message_id: str
) -> MessageRow | None:
    record = await conn.fetchrow(_SELECT_MESSAGE, thread.conversation_id, message_id)
    return message_of(record, thread.thread_id) if record else None


async def delete_message(conn: Conn | Database, thread: ThreadRow, message_id: str) -> bool:
    """Deleted, unless missing or the thread holds an active run."""
    return await conn.fetchval(_DELETE_MESSAGE, thread.conversation_id, message_id) is not None


async def select_messages(
    conn: Conn | Database, thread: ThreadRow, run_id: str | None, win: Window
) -> list[MessageRow]:
    query = _LIST_MESSAGES_ASC if win.ascending else _LIST_MESSAGES_DESC
    records = await conn.fetch(query, thread.conversation_id, run_id, *win.bounds)
    return [message_of(r, thread.thread_id) for r in records]


async def select_message_ordinal(
    conn: Conn | Database, conversation_id: str, message_id: str
) -> int | None:
    ordinal: int | None = await conn.fetchval(_SELECT_ORDINAL, conversation_id, message_id)
    return ordinal


async def select_prompt_messages(
    conn: Conn | Database, conversation_id: str, last: int | None
) -> list[MessageRow]:
    return [message_of(r) for r in await conn.fetch(_PROMPT, conversation_id, last)]
