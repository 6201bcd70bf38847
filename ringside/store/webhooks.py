"""SQL for webhook endpoints, deliveries and their attempts (``sql/0003_webhooks.sql``).

Deliveries are created by the fan-out trigger on ``webhook_event`` (or, for a ping, by
:func:`insert_ping`); the worker claims due ones with ``FOR UPDATE SKIP LOCKED``. A claim
moves ``next_attempt_at`` forward by the lease and bumps ``attempts``, which fences the
claim: a worker whose lease ran out cannot record over a newer claim's result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from ringside.pagination import Window
from ringside.store.bridge import Conn, Database, Record


@dataclass(frozen=True)
class EndpointRow:
    seq: int
    id: str
    developer_id: str
    url: str
    events: list[str]
    enabled: bool
    description: str | None
    secret: str
    created_at: datetime


@dataclass(frozen=True)
class DeliveryRow:
    seq: int
    id: str
    endpoint_id: str
    event_id: str
    event_type: str
    state: str
    attempts: int
    next_attempt_at: datetime
    last_status: int | None
    last_latency_ms: int | None
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class AttemptRow:
    delivery_id: str
    attempt: int
    started_at: datetime
    finished_at: datetime | None
    status_code: int | None
    latency_ms: int | None
    error: str | None


@dataclass(frozen=True)
class ClaimedDelivery:
    """One claimed attempt, with what it takes to send it."""

    id: str
    attempt: int
    retry_age_s: float
    url: str
    secret: str
    event_id: str
    event_type: str
    event_created_at: datetime
    data: str  # the event's data, JSON text


_EP_COLUMNS = "seq, id, developer_id, url, events, enabled, description, secret, created_at"

_INSERT_ENDPOINT = f"""
    INSERT INTO webhook_endpoint (id, developer_id, url, events, enabled, description, secret)
    VALUES ($1, $2, $3, $4, $5, $6, $7)
 RETURNING {_EP_COLUMNS}"""

_SELECT_ENDPOINT = f"""
    SELECT {_EP_COLUMNS} FROM webhook_endpoint
     WHERE developer_id = $1 AND id = $2 AND deleted_at IS NULL"""

_UPDATE_ENDPOINT = f"""
    UPDATE webhook_endpoint SET url = $3, events = $4, enabled = $5, description = $6
     WHERE developer_id = $1 AND id = $2 AND deleted_at IS NULL
 RETURNING {_EP_COLUMNS}"""

_ROLL_SECRET = f"""
    UPDATE webhook_endpoint SET secret = $3
     WHERE developer_id = $1 AND id = $2 AND deleted_at IS NULL
 RETURNING {_EP_COLUMNS}"""

# Deleting stops what is still queued for the endpoint; its delivery log stays.
_DELETE_ENDPOINT = """
    WITH gone AS (
        UPDATE webhook_endpoint SET deleted_at = now(), enabled = false
         WHERE developer_id = $1 AND id = $2 AND deleted_at IS NULL
     RETURNING id
    ), stopped AS (
        UPDATE webhook_delivery AS d
           SET state = 'failed', last_error = 'endpoint deleted', finished_at = now()
          FROM gone
         WHERE d.endpoint_id = gone.id AND d.state IN ('pending', 'delivering')
    )
    SELECT id FROM gone"""

_LIST_ENDPOINTS = """
    SELECT {columns} FROM webhook_endpoint
     WHERE developer_id = $1 AND deleted_at IS NULL AND seq > $2 AND seq < $3
     ORDER BY seq {direction}
     LIMIT $4"""
_LIST_ENDPOINTS_ASC = _LIST_ENDPOINTS.format(columns=_EP_COLUMNS, direction="ASC")
_LIST_ENDPOINTS_DESC = _LIST_ENDPOINTS.format(columns=_EP_COLUMNS, direction="DESC")

_SELECT_ENDPOINT_SEQ = "SELECT seq FROM webhook_endpoint WHERE developer_id = $1 AND id = $2"

_INSERT_PING = """
    WITH event AS (
        INSERT INTO webhook_event (id, developer_id, type, data)
        VALUES ($1, $2, 'webhook.ping', jsonb_build_object('webhook_endpoint_id', $3::text))
     RETURNING id
    )
    INSERT INTO webhook_delivery (id, endpoint_id, event_id)
    SELECT $4, $3, id FROM event
 RETURNING id"""

_D_COLUMNS = """d.seq, d.id, d.endpoint_id, d.event_id, ev.type AS event_type, d.state,
    d.attempts, d.next_attempt_at, d.last_status, d.last_latency_ms, d.last_error, d.created_at,
    d.finished_at"""

_LIST_DELIVERIES = """
    SELECT {columns}
      FROM webhook_delivery AS d JOIN webhook_event AS ev ON ev.id = d.event_id
     WHERE d.endpoint_id = $1 AND d.seq > $2 AND d.seq < $3
     ORDER BY d.seq {direction}
     LIMIT $4"""
_LIST_DELIVERIES_ASC = _LIST_DELIVERIES.format(columns=_D_COLUMNS, direction="ASC")
_LIST_DELIVERIES_DESC = _LIST_DELIVERIES.format(columns=_D_COLUMNS, direction="DESC")

_SELECT_DELIVERY_SEQ = "SELECT seq FROM webhook_delivery WHERE endpoint_id = $1 AND id = $2"

_SELECT_ATTEMPTS = """
    SELECT delivery_id, attempt, started_at, finished_at, status_code, latency_ms, error
      FROM webhook_attempt
     WHERE delivery_id = ANY ($1::text [])
     ORDER BY delivery_id, attempt"""

# A redelivery starts a fresh retry window; an attempt in flight is left to finish.
_REDELIVER = f"""
    WITH d AS (
        UPDATE webhook_delivery
           SET state = 'pending', next_attempt_at = now(), retry_from = now(), finished_at = NULL
         WHERE endpoint_id = $1 AND id = $2 AND state <> 'delivering'
     RETURNING *
    )
    SELECT {_D_COLUMNS} FROM d JOIN webhook_event AS ev ON ev.id = d.event_id"""

_DELIVERY_EXISTS = "SELECT state FROM webhook_delivery WHERE endpoint_id = $1 AND id = $2"

# Deliveries to a disabled endpoint wait (until it is enabled or their retry window ends).
_CLAIM = """
    WITH due AS (
        SELECT d.id
          FROM webhook_delivery AS d JOIN webhook_endpoint AS e ON e.id = d.endpoint_id
         WHERE d.state IN ('pending', 'delivering') AND d.next_attempt_at <= now()
           AND e.enabled
         ORDER BY d.next_attempt_at
         LIMIT $1
           FOR UPDATE OF d SKIP LOCKED
    ), claimed AS (
        UPDATE webhook_delivery AS d
           SET state = 'delivering', attempts = d.attempts + 1,
               next_attempt_at = now() + make_interval(secs => $2)
          FROM due
         WHERE d.id = due.id
     RETURNING d.id, d.attempts, d.endpoint_id, d.event_id, d.retry_from
    ), logged AS (
        INSERT INTO webhook_attempt (delivery_id, attempt, worker)
        SELECT id, attempts, $3 FROM claimed
    )
    SELECT c.id, c.attempts AS attempt,
           extract(EPOCH FROM now() - c.retry_from)::float8 AS retry_age_s,
           e.url, e.secret, ev.id AS event_id, ev.type AS event_type,
           ev.created_at AS event_created_at, ev.data::text AS data
      FROM claimed AS c
      JOIN webhook_endpoint AS e ON e.id = c.endpoint_id
      JOIN webhook_event AS ev ON ev.id = c.event_id"""

# One statement records a batch of finished attempts: each row's attempt log, and its delivery
# unless the claim was lost (the lease ran out and another claim bumped ``attempts``).
_RECORD = """
    WITH r AS (
        SELECT *
          FROM unnest($1::text [], $2::int [], $3::text [], $4::float8 [], $5::int [],
                      $6::int [], $7::text [])
            AS r (id, attempt, state, retry_in_s, status_code, latency_ms, error)
    ), logged AS (
        UPDATE webhook_attempt AS a
           SET finished_at = now(), status_code = r.status_code, latency_ms = r.latency_ms,
               error = r.error
          FROM r
         WHERE a.delivery_id = r.id AND a.attempt = r.attempt
    )
    UPDATE webhook_delivery AS d
       SET state = r.state,
           next_attempt_at = CASE WHEN r.state = 'pending'
                                  THEN now() + make_interval(secs => r.retry_in_s)
                                  ELSE now() END,
           finished_at = CASE WHEN r.state = 'pending' THEN NULL ELSE now() END,
           last_status = r.status_code, last_latency_ms = r.latency_ms, last_error = r.error
      FROM r
     WHERE d.id = r.id AND d.attempts = r.attempt AND d.state = 'delivering'"""

# Claims a stopping worker will not attempt: due again at once, as if never claimed.
_RELEASE = """
    WITH released AS (
        UPDATE webhook_delivery AS d
           SET state = 'pending', attempts = d.attempts - 1, next_attempt_at = now()
          FROM unnest($1::text [], $2::int []) AS r (id, attempt)
         WHERE d.id = r.id AND d.attempts = r.attempt AND d.state = 'delivering'
     RETURNING d.id, r.attempt
    )
    DELETE FROM webhook_attempt AS a
     USING released
     WHERE a.delivery_id = released.id AND a.attempt = released.attempt"""


@dataclass(frozen=True)
class AttemptResult:
    """How an attempt ended, and what comes next (``retry_in_s`` when ``state`` is pending)."""

    delivery_id: str
    attempt: int
    state: str
    retry_in_s: float
    status_code: int | None
    latency_ms: int | None
    error: str | None


def _endpoint(record: Record) -> EndpointRow:
    return EndpointRow(**dict(record))


def _delivery(record: Record) -> DeliveryRow:
    return DeliveryRow(**dict(record))


async def insert_endpoint(conn: Conn | Database, row: EndpointRow) -> EndpointRow:
    record = await conn.fetchrow(
        _INSERT_ENDPOINT,
        row.id,
        row.developer_id,
        row.url,
        row.events,
        row.enabled,
        row.description,
        row.secret,
    )
    assert record is not None
    return _endpoint(record)


async def select_endpoint(
    conn: Conn | Database, developer_id: str, endpoint_id: str
) -> EndpointRow | None:
    record = await conn.fetchrow(_SELECT_ENDPOINT, developer_id, endpoint_id)
    return _endpoint(record) if record else None


async def update_endpoint(conn: Conn | Database, row: EndpointRow) -> EndpointRow | None:
    record = await conn.fetchrow(
        _UPDATE_ENDPOINT, row.developer_id, row.id, row.url, row.events, row.enabled,
        row.description,
    )  # fmt: skip
    return _endpoint(record) if record else None


async def roll_secret(
    conn: Conn | Database, developer_id: str, endpoint_id: str, secret: str
) -> EndpointRow | None:
    record = await conn.fetchrow(_ROLL_SECRET, developer_id, endpoint_id, secret)
    return _endpoint(record) if record else None


async def delete_endpoint(conn: Conn | Database, developer_id: str, endpoint_id: str) -> bool:
    return await conn.fetchval(_DELETE_ENDPOINT, developer_id, endpoint_id) is not None


async def select_endpoints(
    conn: Conn | Database, developer_id: str, win: Window
) -> list[EndpointRow]:
    query = _LIST_ENDPOINTS_ASC if win.ascending else _LIST_ENDPOINTS_DESC
    return [_endpoint(r) for r in await conn.fetch(query, developer_id, *win.bounds)]


async def select_endpoint_seq(
    conn: Conn | Database, developer_id: str, endpoint_id: str
) -> int | None:
    seq: int | None = await conn.fetchval(_SELECT_ENDPOINT_SEQ, developer_id, endpoint_id)
    return seq


async def insert_ping(
    conn: Conn | Database, *, event_id: str, developer_id: str, endpoint_id: str, delivery_id: str
) -> None:
    await conn.fetchval(_INSERT_PING, event_id, developer_id, endpoint_id, delivery_id)


async def select_deliveries(
    conn: Conn | Database, endpoint_id: str, win: Window
) -> list[DeliveryRow]:
    query = _LIST_DELIVERIES_ASC if win.ascending else _LIST_DELIVERIES_DESC
    return [_delivery(r) for r in await conn.fetch(query, endpoint_id, *win.bounds)]


async def select_delivery_seq(
    conn: Conn | Database, endpoint_id: str, delivery_id: str
) -> int | None:
    seq: int | None = await conn.fetchval(_SELECT_DELIVERY_SEQ, endpoint_id, delivery_id)
    return seq


async def select_attempts(conn: Conn | Database, delivery_ids: Sequence[str]) -> list[AttemptRow]:
    return [AttemptRow(**dict(r)) for r in await conn.fetch(_SELECT_ATTEMPTS, list(delivery_ids))]


async def redeliver(
    conn: Conn | Database, endpoint_id: str, delivery_id: str
) -> tuple[DeliveryRow | None, str | None]:
    """The delivery, queued again; or None and its state (None: no such delivery)."""
    record = await conn.fetchrow(_REDELIVER, endpoint_id, delivery_id)
    if record is not None:
        return _delivery(record), None
    state: str | None = await conn.fetchval(_DELIVERY_EXISTS, endpoint_id, delivery_id)
    return None, state


async def claim_due(
    conn: Conn | Database, *, batch: int, lease_s: float, worker: str
) -> list[ClaimedDelivery]:
    return [ClaimedDelivery(**dict(r)) for r in await conn.fetch(_CLAIM, batch, lease_s, worker)]


async def record_attempts(conn: Conn | Database, results: Sequence[AttemptResult]) -> None:
    # Sorted: rows are locked in id order, whoever else touches them.
    rows = sorted(results, key=lambda r: r.delivery_id)
    await conn.execute(
        _RECORD,
        [r.delivery_id for r in rows],
        [r.attempt for r in rows],
        [r.state for r in rows],
        [r.retry_in_s for r in rows],
        [r.status_code for r in rows],
        [r.latency_ms for r in rows],
        [r.error for r in rows],
    )


async def release_claims(conn: Conn | Database, claims: Sequence[ClaimedDelivery]) -> None:
    rows = sorted(claims, key=lambda c: c.id)
    await conn.execute(_RELEASE, [c.id for c in rows], [c.attempt for c in rows])
