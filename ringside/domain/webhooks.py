"""Webhook endpoints (SPEC §8, §10): a developer's URLs, the events each wants, its signing
secret; and the deliveries of events to them, which ``workers/webhooks.py`` sends.

Events are rows of the ``webhook_event`` outbox, written in the transaction of the change they
report; a trigger turns each into one delivery per enabled, subscribed endpoint of that
developer, in that same transaction, so nothing between the change and its deliveries can be
lost. A ping (``POST /v1/webhooks/{id}/test``) is an event for one endpoint.

Every attempt carries ``X-FC-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">``
keyed with the endpoint's whole secret (``whsec_…``, as UTF-8) and ``X-FC-Event-Id``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import replace
from datetime import datetime
from typing import Any

import orjson

from ringside import validation
from ringside.domain import webhook_targets
from ringside.errors import Conflict, InvalidRequest, NotFound
from ringside.ids import new_id
from ringside.pagination import PageRequest, page_of, resolve_window
from ringside.settings import Settings
from ringside.store import webhooks as store
from ringside.store.bridge import Database
from ringside.store.webhooks import AttemptRow, DeliveryRow, EndpointRow
from ringside.timestamps import unix

EVENT_TYPES = frozenset(
    {
        "run.completed",
        "run.failed",
        "customer.budget_exceeded",
        "wallet.low",
        "vector_store.file.completed",
        "vector_store.file.failed",
    }
)
ALL_EVENTS = "*"
PING = "webhook.ping"
SIGNATURE_HEADER = "X-FC-Signature"
EVENT_ID_HEADER = "X-FC-Event-Id"
_FIELDS = ("url", "events", "enabled", "description")


def new_secret() -> str:
    return f"whsec_{secrets.token_urlsafe(32)}"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-FC-Signature`` value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), b"%d." % timestamp + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def event_body(event_id: str, event_type: str, created: datetime, data_json: str) -> bytes:
    """The payload ``{"id", "type", "created", "data"}``; ``data_json`` is embedded verbatim."""
    return b'{"id":%s,"type":%s,"created":%d,"data":%s}' % (
        orjson.dumps(event_id),
        orjson.dumps(event_type),
        int(created.timestamp()),
        data_json.encode(),
    )


def _events(value: Any) -> list[str]:
    if not isinstance(value, list) or not value or len(value) > 32:
        raise InvalidRequest(
            "'events' must be a non-empty list of event types (or [\"*\"]).", param="events"
        )
    chosen: list[str] = []
    for item in value:
        if item != ALL_EVENTS and item not in EVENT_TYPES:
            raise InvalidRequest(
                f"'events': unknown event type {str(item)[:64]!r}; one of "
                f"{', '.join(sorted(EVENT_TYPES))}, or '*'.",
                param="events",
            )
        if item not in chosen:
            chosen.append(item)
    return chosen


def _enabled(value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidRequest("'enabled' must be true or false.", param="enabled")
    return value


async def _url(value: Any, settings: Settings) -> str:
    raw = validation.text(value, "url", max_len=2048, strip_ok=False)
    url = webhook_targets.parse_url(raw)
    if not settings.webhooks_allow_private:
        await webhook_targets.check_target(url, allow_private=False)
    return str(url)


async def parse_fields(body: Any, settings: Settings, *, create: bool) -> dict[str, Any]:
    """The fields a create or PATCH body sets; the URL is resolved and checked (SSRF)."""
    obj = validation.body_object(body, _FIELDS)
    if create:
        for name in ("url", "events"):
            if name not in obj:
                raise InvalidRequest(f"Missing required parameter: {name!r}.", param=name)
    fields: dict[str, Any] = {}
    if "url" in obj:
        fields["url"] = await _url(obj["url"], settings)
    if "events" in obj:
        fields["events"] = _events(obj["events"])
    if "enabled" in obj:
        fields["enabled"] = _enabled(obj["enabled"])
    if "description" in obj:
        fields["description"] = validation.optional_text(
            obj["description"], "description", max_len=512
        )
    return fields


def endpoint_json(row: EndpointRow, *, with_secret: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": row.id,
        "object": "webhook_endpoint",
        "url": row.url,
        "events": list(row.events),
        "enabled": row.enabled,
        "description": row.description,
        "created": int(row.created_at.timestamp()),
    }
    if with_secret:
        body["secret"] = row.secret
    return body


def _attempt_json(a: AttemptRow) -> dict[str, Any]:
    return {
        "attempt": a.attempt,
        "started": unix(a.started_at),
        "finished": unix(a.finished_at),
        "response_status_code": a.status_code,
        "latency_ms": a.latency_ms,
        "error": a.error,
    }


def delivery_json(row: DeliveryRow, attempts: list[AttemptRow]) -> dict[str, Any]:
    waiting = row.state in ("pending", "delivering")
    return {
        "id": row.id,
        "object": "webhook_delivery",
        "webhook_endpoint_id": row.endpoint_id,
        "event_id": row.event_id,
        "event_type": row.event_type,
        "status": row.state,
        "attempt_count": row.attempts,
        "response_status_code": row.last_status,
        "latency_ms": row.last_latency_ms,
        "error": row.last_error,
        "next_attempt_at": unix(row.next_attempt_at) if waiting else None,
        "created": unix(row.created_at),
        "finished": unix(row.finished_at),
        "attempts": [_attempt_json(a) for a in attempts],
    }


def _not_found(endpoint_id: str) -> NotFound:
    return NotFound(f"No webhook endpoint {endpoint_id!r}.")


async def create_endpoint(db: Database, developer_id: str, fields: dict[str, Any]) -> EndpointRow:
    row = EndpointRow(
        seq=0,
        id=new_id("we"),
        developer_id=developer_id,
        url=fields["url"],
        events=fields["events"],
        enabled=fields.get("enabled", True),
        description=fields.get("description"),
        secret=new_secret(),
        created_at=datetime.now(),
    )
    return await store.insert_endpoint(db, row)


async def get_endpoint(db: Database, developer_id: str, endpoint_id: str) -> EndpointRow:
    row = await store.select_endpoint(db, developer_id, endpoint_id)
    if row is None:
        raise _not_found(endpoint_id)
    return row


async def update_endpoint(
    db: Database, developer_id: str, endpoint_id: str, fields: dict[str, Any]
) -> EndpointRow:
    async with db.transaction() as conn:
        row = await store.select_endpoint(conn, developer_id, endpoint_id)
        if row is None:
            raise _not_found(endpoint_id)
        updated = await store.update_endpoint(conn, replace(row, **fields))
    if updated is None:
        raise _not_found(endpoint_id)
    return updated


async def roll_secret(db: Database, developer_id: str, endpoint_id: str) -> EndpointRow:
    """A new secret, effective for the next attempt (attempts in flight keep the old one)."""
    row = await store.roll_secret(db, developer_id, endpoint_id, new_secret())
    if row is None:
        raise _not_found(endpoint_id)
    return row


async def delete_endpoint(db: Database, developer_id: str, endpoint_id: str) -> None:
    if not await store.delete_endpoint(db, developer_id, endpoint_id):
        raise _not_found(endpoint_id)


async def list_endpoints(
    db: Database, developer_id: str, page: PageRequest
) -> tuple[list[EndpointRow], bool]:
    async def key_of(id: str) -> int | None:
        return await store.select_endpoint_seq(db, developer_id, id)

    win = await resolve_window(page, key_of)
    return page_of(await store.select_endpoints(db, developer_id, win), win)


async def send_test(db: Database, developer_id: str, endpoint_id: str) -> dict[str, str]:
    """Queue a signed ``webhook.ping`` for this endpoint only (even a disabled one waits)."""
    await get_endpoint(db, developer_id, endpoint_id)
    event_id, delivery_id = new_id("evt"), new_id("whd")
    await store.insert_ping(
        db,
        event_id=event_id,
        developer_id=developer_id,
        endpoint_id=endpoint_id,
        delivery_id=delivery_id,
    )
    return {"event_id": event_id, "delivery_id": delivery_id}


async def list_deliveries(
    db: Database, developer_id: str, endpoint_id: str, page: PageRequest
) -> tuple[list[dict[str, Any]], bool]:
    await get_endpoint(db, developer_id, endpoint_id)

    async def key_of(id: str) -> int | None:
        return await store.select_delivery_seq(db, endpoint_id, id)

    win = await resolve_window(page, key_of)
    rows, has_more = page_of(await store.select_deliveries(db, endpoint_id, win), win)
    attempts: dict[str, list[AttemptRow]] = {}
    for a in await store.select_attempts(db, [r.id for r in rows]):
        attempts.setdefault(a.delivery_id, []).append(a)
    return [delivery_json(r, attempts.get(r.id, [])) for r in rows], has_more


async def redeliver(
    db: Database, developer_id: str, endpoint_id: str, delivery_id: str
) -> dict[str, Any]:
    """Send a delivery again now, with the same event id, and a fresh 24 h retry window."""
    await get_endpoint(db, developer_id, endpoint_id)
    row, state = await store.redeliver(db, endpoint_id, delivery_id)
    if row is None:
        if state is None:
            raise NotFound(f"No delivery {delivery_id!r} for this webhook endpoint.")
        raise Conflict(
            "The delivery is being attempted right now.", code="webhook_delivery_in_progress"
        )
    return delivery_json(row, await store.select_attempts(db, [row.id]))
