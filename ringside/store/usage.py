"""SQL for usage events: one append-only row per upstream call."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from ringside.store.bridge import Conn, Database


@dataclass(frozen=True)
class UsageEventRow:
    request_id: str
    developer_id: str
    api_key_id: str
    customer_ref: str | None
    model_requested: str
    model_resolved: str
    provider: str
    upstream_model: str
    stream: bool
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    reasoning_tokens: int
    usage_source: str
    cost_usd: Decimal
    latency_ms: int
    status: str
    http_status: int


_TYPES = {
    "request_id": "text",
    "developer_id": "text",
    "api_key_id": "text",
    "customer_ref": "text",
    "model_requested": "text",
    "model_resolved": "text",
    "provider": "text",
    "upstream_model": "text",
    "stream": "boolean",
    "input_tokens": "integer",
    "cached_input_tokens": "integer",
    "output_tokens": "integer",
    "reasoning_tokens": "integer",
    "usage_source": "text",
    "cost_usd": "numeric",
    "latency_ms": "integer",
    "status": "text",
    "http_status": "integer",
}
_FIELDS = tuple(UsageEventRow.__dataclass_fields__)
_COLUMNS = ", ".join(_FIELDS)
_ARRAYS = ", ".join(f"${i}::{_TYPES[c]}[]" for i, c in enumerate(_FIELDS, start=1))

# One statement (one round trip, its own transaction) per batch: the batch goes in whole or
# not at all. ON CONFLICT makes a re-sent batch harmless: a request id is metered at most once.
_INSERT_EVENTS = f"""
    INSERT INTO usage_event ({_COLUMNS})
    SELECT * FROM unnest({_ARRAYS})
    ON CONFLICT (request_id) DO NOTHING"""

_SELECT_BY_REQUEST = f"SELECT {_COLUMNS} FROM usage_event WHERE request_id = $1"


async def insert_usage_events(conn: Conn | Database, events: Sequence[UsageEventRow]) -> None:
    columns = [[getattr(e, name) for e in events] for name in _FIELDS]
    await conn.execute(_INSERT_EVENTS, *columns)


async def select_usage_event(conn: Conn | Database, request_id: str) -> UsageEventRow | None:
    row = await conn.fetchrow(_SELECT_BY_REQUEST, request_id)
    return UsageEventRow(**dict(row)) if row else None
