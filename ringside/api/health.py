"""``/healthz`` (the process is alive) and ``/readyz`` (PostgreSQL and Redis answer)."""

from __future__ import annotations

import trio
from quart import Blueprint, Response

from ringside.api.common import json_response, services
from ringside.store.bridge import PostgresError, RedisError

health_bp = Blueprint("health", __name__)


@health_bp.get("/healthz")
async def healthz() -> Response:
    return json_response({"status": "ok"})


@health_bp.get("/readyz")
async def readyz() -> Response:
    svc = services()
    checks: dict[str, str] = {}
    with trio.move_on_after(2):
        try:
            await svc.db.fetchval("SELECT 1")
            checks["postgres"] = "ok"
        except (PostgresError, OSError) as exc:
            checks["postgres"] = f"error: {type(exc).__name__}"
    with trio.move_on_after(2):
        try:
            await svc.cache.ping()
            checks["redis"] = "ok"
        except (OSError, RedisError) as exc:
            checks["redis"] = f"error: {type(exc).__name__}"
    checks.setdefault("postgres", "timeout")
    checks.setdefault("redis", "timeout")
    ready = all(v == "ok" for v in checks.values())
    return json_response(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status=200 if ready else 503,
    )
