"""SQL for usage events: one append-only row per upstream call."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import astuple, dataclass
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


_COLUMNS = ", ".join(UsageEventRow.__dataclass_fields__)
_PLACEHOLDERS = ", ".join(f"${i}" for i in range(1, len(UsageEventRow.__dataclass_fields__) + 1))

# ON CONFLICT makes a re-flushed batch harmless: a request id is metered at most once.
_INSERT_EVENT = f"""
    INSERT INTO usage_event ({_COLUMNS}) VALUES ({_PLACEHOLDERS})
    ON CONFLICT (request_id) DO NOTHING"""

_SELECT_BY_REQUEST = f"SELECT {_COLUMNS} FROM usage_event WHERE request_id = $1"


async def insert_usage_events(conn: Conn, events: Sequence[UsageEventRow]) -> None:
    await conn.executemany(_INSERT_EVENT, [astuple(e) for e in events])


async def select_usage_event(conn: Conn | Database, request_id: str) -> UsageEventRow | None:
    row = await conn.fetchrow(_SELECT_BY_REQUEST, request_id)
    return UsageEventRow(**dict(row)) if row else None
