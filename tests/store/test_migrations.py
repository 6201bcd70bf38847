"""Migrations apply in order, once; ``sql/schema.sql`` matches what they produce."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from ringside.store.bridge import Database, PostgresError, open_storage
from ringside.store.migrations import apply_migrations, migration_files
from tests.conftest import ROOT, with_database

_DESCRIBE = [
    """SELECT table_name, column_name, data_type, is_nullable, column_default
         FROM information_schema.columns WHERE table_schema = 'public'
          AND table_name <> 'schema_migration' ORDER BY 1, 2""",
    """SELECT tablename, indexdef FROM pg_indexes WHERE schemaname = 'public'
          AND tablename <> 'schema_migration' ORDER BY 1, 2""",
    """SELECT conrelid::regclass::text, pg_get_constraintdef(oid) FROM pg_constraint
        WHERE connamespace = 'public'::regnamespace
          AND conrelid::regclass::text <> 'schema_migration' ORDER BY 1, 2""",
]


@asynccontextmanager
async def fresh_database(server_url: str, redis_url: str) -> AsyncIterator[Database]:
    name = f"m_{secrets.token_hex(6)}"
    async with open_storage(server_url, redis_url) as (admin, _):
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            async with open_storage(with_database(server_url, name), redis_url) as (db, _):
                yield db
        finally:
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


async def describe(db: Database) -> list[list[tuple[object, ...]]]:
    return [[tuple(r) for r in await db.fetch(q)] for q in _DESCRIBE]


async def test_migrations_apply_once_and_match_the_schema_snapshot(
    server_url: str, redis_url: str
) -> None:
    sql_dir = ROOT / "sql"
    async with fresh_database(server_url, redis_url) as migrated:
        applied = await apply_migrations(migrated, sql_dir)
        assert applied == [p.name for _, p in migration_files(sql_dir)]
        assert await apply_migrations(migrated, sql_dir) == []  # idempotent
        async with fresh_database(server_url, redis_url) as snapshot:
            await snapshot.execute((sql_dir / "schema.sql").read_text())
            assert await describe(snapshot) == await describe(migrated)


async def test_a_failing_migration_changes_nothing(
    server_url: str, redis_url: str, tmp_path: Path
) -> None:
    (tmp_path / "0001_ok.sql").write_text("CREATE TABLE one (id INTEGER);")
    (tmp_path / "0002_broken.sql").write_text("CREATE TABLE two (id INTEGER); SELEC oops;")
    async with fresh_database(server_url, redis_url) as db:
        with pytest.raises(PostgresError, match="syntax error"):
            await apply_migrations(db, tmp_path)
        versions = [r["version"] for r in await db.fetch("SELECT version FROM schema_migration")]
        assert versions == [1]
        assert await db.fetchval("SELECT to_regclass('two')") is None
