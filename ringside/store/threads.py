"""SQL for threads: internal conversations, reached through their public ``thread_`` alias
(their messages are ``store/messages.py``'s)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from ringside.pagination import Window
from ringside.store.bridge import Conn, Database, Record

MAX_MESSAGES = 5000

# The states that hold a thread's lock (run_active_conversation_idx).
ACTIVE_RUN = """EXISTS (SELECT 1 FROM run AS r
                 WHERE r.conversation_id = {conv}
                   AND r.status IN ('queued', 'in_progress', 'requires_action', 'cancelling'))"""


@dataclass(frozen=True)
class ThreadRow:
    conversation_id: str
    thread_id: str
    developer_id: str
    customer_id: str | None
    tool_resources: dict[str, Any] | None
    metadata: dict[str, str]
    created_at: datetime


@dataclass(frozen=True)
class ThreadState:
    """Why a conditional write on a thread did nothing."""

    live: bool
    message_count: int
    locked: bool


def json_or_none(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def loads_or_none(value: str | None) -> Any:
    return None if value is None else orjson.loads(value)


_THREAD_COLUMNS = """c.id AS conversation_id, a.thread_id, c.developer_id, c.customer_id,
    c.tool_resources, c.metadata, c.created_at"""

_INSERT_THREAD = f"""
    WITH c AS (
        INSERT INTO conversation (id, developer_id, customer_id, tool_resources, metadata,
                                  message_count, next_ordinal)
        VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6, $6)
        RETURNING id, developer_id, customer_id, tool_resources, metadata, created_at
    ), a AS (
        INSERT INTO api_thread_aliases (thread_id, conversation_id)
        SELECT $7, id FROM c
        RETURNING thread_id
    )
    SELECT {_THREAD_COLUMNS} FROM c, a"""

# customer_id ($3) NULL: the developer's own view (every thread); set: a client token's (only
# that customer's threads).
_SELECT_THREAD = f"""
    SELECT {_THREAD_COLUMNS}
      FROM api_thread_aliases AS a
      JOIN conversation AS c ON c.id = a.conversation_id
     WHERE a.thread_id = $1 AND c.developer_id = $2 AND c.deleted_at IS NULL
       AND ($3::text IS NULL OR c.customer_id = $3)"""

_UPDATE_THREAD = f"""
    WITH c AS (
        UPDATE conversation
           SET tool_resources = CASE WHEN $2 THEN $3::jsonb ELSE tool_resources END,
               metadata = CASE WHEN $4 THEN $5::jsonb ELSE metadata END
         WHERE id = $1 AND deleted_at IS NULL
     RETURNING id, developer_id, customer_id, tool_resources, metadata, created_at
    )
    SELECT {_THREAD_COLUMNS}
      FROM c JOIN api_thread_aliases AS a ON a.conversation_id = c.id"""

# Deleting a thread and starting a run on it serialise on the conversation row: the delete
# holds FOR UPDATE while it looks for an active run (in a later statement, so it sees a run
# committed meanwhile); run creation holds FOR KEY SHARE (which message posts, being
# no-key updates, do not wait for) and so finds the thread deleted, or makes the delete wait.
_LOCK_FOR_DELETE = """
    SELECT id FROM conversation WHERE id = $1 AND deleted_at IS NULL FOR UPDATE"""
_LOCK_FOR_RUN = """
    SELECT id FROM conversation WHERE id = $1 AND deleted_at IS NULL FOR KEY SHARE"""

_SOFT_DELETE_THREAD = """
    UPDATE conversation SET deleted_at = now() WHERE id = $1 AND deleted_at IS NULL
 RETURNING id"""

_THREAD_STATE = f"""
    SELECT deleted_at IS NULL AS live, message_count, {ACTIVE_RUN.format(conv="c.id")} AS locked
      FROM conversation AS c
     WHERE c.id = $1"""

# The predicate on metadata ? 'source_thread_id' lets the planner use the partial index.
_LIST_BY_SOURCE = """
    SELECT {columns}
      FROM conversation AS c
      JOIN api_thread_aliases AS a ON a.conversation_id = c.id
     WHERE c.developer_id = $1 AND c.deleted_at IS NULL
       AND c.metadata ? 'source_thread_id' AND c.metadata ->> 'source_thread_id' = $2
       AND ($3::text IS NULL OR c.customer_id = $3)
       AND c.seq > $4 AND c.seq < $5
     ORDER BY c.seq {direction}
     LIMIT $6"""
_LIST_BY_SOURCE_ASC = _LIST_BY_SOURCE.format(columns=_THREAD_COLUMNS, direction="ASC")
_LIST_BY_SOURCE_DESC = _LIST_BY_SOURCE.format(columns=_THREAD_COLUMNS, direction="DESC")

_SELECT_THREAD_SEQ = """
    SELECT c.seq
      FROM api_thread_aliases AS a
      JOIN conversation AS c ON c.id = a.conversation_id
     WHERE a.thread_id = $1 AND c.developer_id = $2"""


def _thread(record: Record) -> ThreadRow:
    values = dict(record)
    values["tool_resources"] = loads_or_none(values["tool_resources"])
    values["metadata"] = orjson.loads(values["metadata"])
    return ThreadRow(**values)


async def insert_thread(
    conn: Conn | Database,
    *,
    conversation_id: str,
    thread_id: str,
    developer_id: str,
    customer_id: str | None,
    tool_resources: dict[str, Any] | None,
    metadata: dict[str, str],
    message_count: int,
) -> ThreadRow:
    """A new conversation and its alias; ``message_count`` messages are inserted next (with
    ordinals 0 to message_count - 1) in the same transaction."""
    record = await conn.fetchrow(
        _INSERT_THREAD,
        conversation_id,
        developer_id,
        customer_id,
        json_or_none(tool_resources),
        json_or_none(metadata),
        message_count,
        thread_id,
    )
    assert record is not None
    return _thread(record)


async def select_thread(
    conn: Conn | Database, developer_id: str, thread_id: str, customer_id: str | None
) -> ThreadRow | None:
    record = await conn.fetchrow(_SELECT_THREAD, thread_id, developer_id, customer_id)
    return _thread(record) if record else None


async def update_thread(
    conn: Conn | Database, conversation_id: str, changes: dict[str, Any]
) -> ThreadRow | None:
    """Replace the fields named in ``changes`` (tool_resources, metadata), in one statement."""
    record = await conn.fetchrow(
        _UPDATE_THREAD,
        conversation_id,
        "tool_resources" in changes,
        json_or_none(changes.get("tool_resources")),
        "metadata" in changes,
        json_or_none(changes.get("metadata") or {}),
    )
    return _thread(record) if record else None


async def lock_thread(conn: Conn, conversation_id: str, *, for_delete: bool) -> bool:
    """Lock the live conversation row (see _LOCK_FOR_DELETE); False when it is gone."""
    query = _LOCK_FOR_DELETE if for_delete else _LOCK_FOR_RUN
    return await conn.fetchval(query, conversation_id) is not None


async def soft_delete_thread(conn: Conn, conversation_id: str) -> bool:
    return await conn.fetchval(_SOFT_DELETE_THREAD, conversation_id) is not None


async def select_thread_state(conn: Conn | Database, conversation_id: str) -> ThreadState:
    record = await conn.fetchrow(_THREAD_STATE, conversation_id)
    assert record is not None
    return ThreadState(record["live"], record["message_count"], record["locked"])


async def select_threads_by_source(
    conn: Conn | Database,
    developer_id: str,
    source_thread_id: str,
    customer_id: str | None,
    win: Window,
) -> list[ThreadRow]:
    query = _LIST_BY_SOURCE_ASC if win.ascending else _LIST_BY_SOURCE_DESC
    records = await conn.fetch(query, developer_id, source_thread_id, customer_id, *win.bounds)
    return [_thread(r) for r in records]


async def select_thread_seq(conn: Conn | Database, developer_id: str, thread_id: str) -> int | None:
    seq: int | None = await conn.fetchval(_SELECT_THREAD_SEQ, thread_id, developer_id)
    return seq
