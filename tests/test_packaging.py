"""A built wheel is self-sufficient: it carries the migrations (top-level ``sql/`` in the
repository, ``ringside/sql/`` in the wheel) and ``ringside migrate`` finds them, run from
outside the checkout with nothing but the wheel's files on the path."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import orjson
import pytest
import trio

from ringside.store.bridge import open_storage
from ringside.store.migrations import migration_files
from tests.processes import ROOT, base_env

_WHERE_AM_I = """
import orjson, ringside
from ringside.settings import Settings
print(orjson.dumps({"package": ringside.__file__, "sql_dir": str(Settings.from_env({}).sql_dir)})
      .decode())
"""


@pytest.fixture
async def empty_database_url(database_url: str, redis_url: str) -> str:
    """The test's database with nothing migrated (it comes as a clone of the migrated template)."""
    async with open_storage(database_url, redis_url) as (db, _):
        await db.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    return database_url


async def _python(cwd: Path, env: dict[str, str], *args: str) -> bytes:
    result = await trio.run_process(
        [sys.executable, *args],
        env=base_env(env),
        cwd=cwd,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    return bytes(result.stdout)


async def test_wheel_carries_and_applies_the_migrations(
    tmp_path: Path, empty_database_url: str, redis_url: str
) -> None:
    dist = tmp_path / "dist"
    await _python(tmp_path, {}, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT))
    (wheel,) = dist.glob("ringside-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    migrations = [path.name for _, path in migration_files(ROOT / "sql")]
    assert migrations, "the repository has migrations"
    assert [p.name for _, p in migration_files(site / "ringside" / "sql")] == migrations

    # The current venv supplies the dependencies; PYTHONPATH puts the wheel's ringside ahead of
    # the checkout's editable install, and the cwd is outside the repository.
    env = {
        "PYTHONPATH": str(site),
        "DATABASE_URL": empty_database_url,
        "REDIS_URL": redis_url,
        "RINGSIDE_DATA_DIR": str(tmp_path / "data"),
    }
    where = orjson.loads(await _python(tmp_path, env, "-c", _WHERE_AM_I))
    assert Path(where["package"]).is_relative_to(site)
    assert Path(where["sql_dir"]) == site / "ringside" / "sql"

    migrate = ["-m", "ringside", "migrate"]
    assert orjson.loads(await _python(tmp_path, env, *migrate)) == {"applied": migrations}
    assert orjson.loads(await _python(tmp_path, env, *migrate)) == {"applied": []}
