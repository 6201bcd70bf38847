"""Opening the services: configuration mistakes fail the start, not a request."""

from __future__ import annotations

from pathlib import Path

import pytest

from ringside.errors import InvalidModelRef
from ringside.runtime import open_services
from ringside.settings import Settings
from tests.conftest import env_settings


async def test_a_slot_naming_an_unknown_model_fails_the_start(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "ringside.toml"
    config.write_text('[slots]\nfast = ["fc:openai/gpt-4o-mini", "fc:openai/no-such-model"]\n')
    settings = env_settings(database_url, redis_url, tmp_path, RINGSIDE_CONFIG=str(config))
    with pytest.raises(InvalidModelRef, match="no-such-model"):
        async with open_services(settings):
            pass


async def test_services_open_migrate_and_close(settings: Settings) -> None:
    async with open_services(settings) as svc:
        assert await svc.db.fetchval("SELECT count(*) FROM schema_migration") >= 1
        assert await svc.cache.ping()
        assert len(svc.catalog) > 100
