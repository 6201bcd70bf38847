"""Forward-only plain-SQL migrations from ``sql/NNNN_*.sql``, applied in order, each once.

A PostgreSQL advisory lock serialises concurrent starters (several Hypercorn workers start at
the same moment), and each file runs in its own transaction together with its bookkeeping row.
"""

from __future__ import annotations

import re
from pathlib import Path

from ringside.store.bridge import Database

_MIGRATION_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_LOCK_ID = 0x52494E47  # "RING"

_CREATE_TABLE = """
    CREATE TABLE IF NOT EXISTS schema_migration (
        version    INTEGER PRIMARY KEY,
        name       TEXT NOT NULL,
        applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )"""
_SELECT_APPLIED = "SELECT version FROM schema_migration"
_INSERT_APPLIED = "INSERT INTO schema_migration (version, name) VALUES ($1, $2)"


def migration_files(sql_dir: Path) -> list[tuple[int, Path]]:
    found = []
    for path in sorted(sql_dir.iterdir()):
        match = _MIGRATION_FILE.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return found


async def apply_migrations(db: Database, sql_dir: Path) -> list[str]:
    """Apply pending migrations; return the names applied (empty when up to date)."""
    applied_now: list[str] = []
    async with db.connection() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
        try:
            await conn.execute(_CREATE_TABLE)
            done = {r["version"] for r in await conn.fetch(_SELECT_APPLIED)}
            for version, path in migration_files(sql_dir):
                if version in done:
                    continue
                await conn.execute("BEGIN")
                try:
                    await conn.execute(path.read_text())
                    await conn.execute(_INSERT_APPLIED, version, path.name)
                except BaseException:
                    await conn.execute("ROLLBACK")
                    raise
                await conn.execute("COMMIT")
                applied_now.append(path.name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
    return applied_now
