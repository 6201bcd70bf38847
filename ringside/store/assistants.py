"""SQL for assistants. Deleting is soft (runs keep naming the assistant they ran); every query
here except the cursor lookup sees only live ones."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from ringside.pagination import Window
from ringside.store.bridge import Conn, Database, Record


@dataclass(frozen=True)
class AssistantRow:
    seq: int
    id: str
    developer_id: str
    name: str | None
    description: str | None
    instructions: str | None
    model: str
    tools: list[dict[str, Any]]
    tool_resources: dict[str, Any] | None
    temperature: float | None
    top_p: float | None
    # None is "auto" (OpenAI's default); otherwise "auto" or a {"type": ...} object.
    response_format: Any | None
    metadata: dict[str, str]
    created_at: datetime


@dataclass(frozen=True)
class AssistantFields:
    """What a developer sets on an assistant."""

    model: str
    name: str | None = None
    description: str | None = None
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_resources: dict[str, Any] | None = None
    temperature: float | None = None
    top_p: float | None = None
    response_format: Any | None = None
    metadata: dict[str, str] | None = None


_COLUMNS = """seq, id, developer_id, name, description, instructions, model, tools,
    tool_resources, temperature, top_p, response_format, metadata, created_at"""
_JSON_COLUMNS = ("tools", "tool_resources", "response_format", "metadata")

_INSERT = f"""
    INSERT INTO assistant (id, developer_id, model, name, description, instructions, tools,
                           tool_resources, temperature, top_p, response_format, metadata)
    VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb, $9, $10, $11::jsonb, $12::jsonb)
 RETURNING {_COLUMNS}"""

_SELECT = f"""
    SELECT {_COLUMNS}
      FROM assistant
     WHERE developer_id = $1 AND id = $2 AND deleted_at IS NULL"""
_SELECT_FOR_UPDATE = f"{_SELECT} FOR UPDATE"

_UPDATE = f"""
    UPDATE assistant
       SET model = $3, name = $4, description = $5, instructions = $6, tools = $7::jsonb,
           tool_resources = $8::jsonb, temperature = $9, top_p = $10,
           response_format = $11::jsonb, metadata = $12::jsonb
     WHERE developer_id = $1 AND id = $2 AND deleted_at IS NULL
 RETURNING {_COLUMNS}"""

_SOFT_DELETE = """
    UPDATE assistant SET deleted_at = now()
     WHERE developer_id = $1 AND id = $2 AND deleted_at IS NULL
 RETURNING id"""

_LIST = """
    SELECT {columns}
      FROM assistant
     WHERE developer_id = $1 AND deleted_at IS NULL
       AND seq > $2 AND seq < $3
     ORDER BY seq {direction}
     LIMIT $4"""
_LIST_ASC = _LIST.format(columns=_COLUMNS, direction="ASC")
_LIST_DESC = _LIST.format(columns=_COLUMNS, direction="DESC")

# Deleted assistants stay valid cursors: a page read while one is deleted still continues.
_SELECT_SEQ = "SELECT seq FROM assistant WHERE developer_id = $1 AND id = $2"


def _dumps(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _row(record: Record) -> AssistantRow:
    values = dict(record)
    for name in _JSON_COLUMNS:
        if values[name] is not None:
            values[name] = orjson.loads(values[name])
    return AssistantRow(**values)


def _args(fields: AssistantFields) -> tuple[Any, ...]:
    return (
        fields.model,
        fields.name,
        fields.description,
        fields.instructions,
        _dumps(fields.tools or []),
        _dumps(fields.tool_resources),
        fields.temperature,
        fields.top_p,
        _dumps(fields.response_format),
        _dumps(fields.metadata or {}),
    )


async def insert_assistant(
    conn: Conn | Database, *, id: str, developer_id: str, fields: AssistantFields
) -> AssistantRow:
    record = await conn.fetchrow(_INSERT, id, developer_id, *_args(fields))
    assert record is not None
    return _row(record)


async def select_assistant(
    conn: Conn | Database, developer_id: str, assistant_id: str, *, for_update: bool = False
) -> AssistantRow | None:
    query = _SELECT_FOR_UPDATE if for_update else _SELECT
    record = await conn.fetchrow(query, developer_id, assistant_id)
    return _row(record) if record else None


async def update_assistant(
    conn: Conn | Database, developer_id: str, assistant_id: str, fields: AssistantFields
) -> AssistantRow | None:
    record = await conn.fetchrow(_UPDATE, developer_id, assistant_id, *_args(fields))
    return _row(record) if record else None


async def soft_delete_assistant(
    conn: Conn | Database, developer_id: str, assistant_id: str
) -> bool:
    return await conn.fetchval(_SOFT_DELETE, developer_id, assistant_id) is not None


async def select_assistants(
    conn: Conn | Database, developer_id: str, win: Window
) -> list[AssistantRow]:
    query = _LIST_ASC if win.ascending else _LIST_DESC
    return [_row(r) for r in await conn.fetch(query, developer_id, *win.bounds)]


async def select_assistant_seq(
    conn: Conn | Database, developer_id: str, assistant_id: str
) -> int | None:
    seq: int | None = await conn.fetchval(_SELECT_SEQ, developer_id, assistant_id)
    return seq
