"""The ``ringside`` command's errors, through the real executable: whatever the user got wrong is
one line on stderr and a non-zero status, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.processes import run_cli_unchecked


@pytest.fixture
def env(database_url: str, redis_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "RINGSIDE_DATA_DIR": str(tmp_path),
    }


async def assert_one_line(env: dict[str, str], args: list[str], expected: str) -> None:
    result = await run_cli_unchecked(env, *args)
    assert result.status != 0
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(expected), result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["keys", "list", "dev_nonexistent"], "ringside: no developer 'dev_nonexistent'\n"),
        (
            ["keys", "revoke", "dev_nonexistent", "key_nonexistent"],
            "ringside: no API key 'key_nonexistent' for developer 'dev_nonexistent'\n",
        ),
        (
            ["developers", "create", "--name", " "],
            "ringside: 'name' must be a string of 1 to 200 printable characters\n",
        ),
        (
            ["developers", "create", "--name", "acme", "--tier", "gold"],
            "ringside developers create: argument --tier: invalid choice: 'gold'",
        ),
    ],
    ids=["unknown-developer", "unknown-key", "invalid-name", "invalid-tier"],
)
async def test_a_mistake_is_one_line(env: dict[str, str], args: list[str], expected: str) -> None:
    await assert_one_line(env, args, expected)


async def test_unreachable_database_is_one_line(env: dict[str, str]) -> None:
    env = {**env, "DATABASE_URL": "postgresql://ringside@127.0.0.1:1/x"}
    expected = "ringside: cannot connect to PostgreSQL at 127.0.0.1:1 (DATABASE_URL): "
    await assert_one_line(env, ["keys", "list", "dev_1"], expected)


async def test_unusable_database_url_is_one_line(env: dict[str, str]) -> None:
    await assert_one_line(
        {**env, "DATABASE_URL": "mysql://x/y"}, ["migrate"], "ringside: DATABASE_URL: "
    )


async def test_missing_config_file_is_one_line(env: dict[str, str], tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    expected = f"ringside: cannot read RINGSIDE_CONFIG {missing}: No such file or directory\n"
    await assert_one_line({**env, "RINGSIDE_CONFIG": str(missing)}, ["migrate"], expected)


async def test_bad_toml_is_one_line(env: dict[str, str], tmp_path: Path) -> None:
    config = tmp_path / "ringside.toml"
    config.write_text("[slots]\nfast = [\n")
    expected = f"ringside: RINGSIDE_CONFIG {config} is not valid TOML: "
    await assert_one_line({**env, "RINGSIDE_CONFIG": str(config)}, ["migrate"], expected)


async def test_misconfigured_slot_is_one_line(env: dict[str, str], tmp_path: Path) -> None:
    config = tmp_path / "ringside.toml"
    config.write_text('[slots]\nfast = ["fc:nowhere/model"]\n')
    expected = "ringside: unknown provider 'nowhere'"
    await assert_one_line({**env, "RINGSIDE_CONFIG": str(config)}, ["migrate"], expected)


async def test_missing_catalog_file_is_one_line(env: dict[str, str], tmp_path: Path) -> None:
    missing = tmp_path / "catalog.json"
    expected = f"ringside: cannot read RINGSIDE_CATALOG {missing}: No such file or directory\n"
    await assert_one_line({**env, "RINGSIDE_CATALOG": str(missing)}, ["migrate"], expected)
