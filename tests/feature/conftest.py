"""Feature-service fixtures: every store test runs against SQLite and PostgreSQL.

PostgreSQL isolation: each test gets its own schema on the session's server (the root
conftest's ``postgres_url``), first on the search path, dropped afterwards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
from feature_helpers import libpq_dsn, unique_schema

from freshrank.feature.service import open_store
from freshrank.feature.settings import FeatureSettings
from freshrank.feature.store import FeatureStore


def _drop_schema(url: str, schema: str) -> None:
    with psycopg.connect(libpq_dsn(url), autocommit=True) as connection:
        connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """``database_url`` and ``db_schema`` settings for one backend."""
    if request.param == "sqlite":
        yield {"database_url": f"sqlite+aiosqlite:///{tmp_path / 'features.db'}", "db_schema": ""}
        return
    url: str = request.getfixturevalue("postgres_url")
    schema = unique_schema()
    yield {"database_url": url, "db_schema": schema}
    _drop_schema(url, schema)


@pytest.fixture
def feature_settings(backend: dict[str, str]) -> FeatureSettings:
    # Half-life 1 s of event time so decay is visible in tests that span seconds.
    return FeatureSettings(
        database_url=backend["database_url"],
        db_schema=backend["db_schema"],
        history_len=5,
        half_life_s=1.0,
        port=0,
    )


@pytest.fixture
async def store(feature_settings: FeatureSettings) -> AsyncIterator[FeatureStore]:
    opened = await open_store(feature_settings)
    yield opened
    await opened.close()
