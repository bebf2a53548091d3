"""The test suite's pool of migrated PostgreSQL schemas hands out empty schemas at head."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from keyplane.store.migrate import head_revision
from tests.conftest import PG_URL, migrated_postgres_schema

# The SQL below is built from the pool's own schema names, never from input.
# ruff: noqa: S608

pytestmark = pytest.mark.postgres


async def fetch(query: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(PG_URL)
    try:
        return await conn.fetch(query)
    finally:
        await conn.close()


def test_a_schema_comes_back_empty_and_at_head() -> None:
    with migrated_postgres_schema() as schema:
        asyncio.run(
            fetch(
                f"INSERT INTO {schema}.organizations (id, name, created_at)"
                " VALUES ('org_pool', 'pool', now())"
            )
        )
    with migrated_postgres_schema() as again:
        assert again == schema  # the same schema, reused
        rows = asyncio.run(fetch(f"SELECT id FROM {again}.organizations"))
        version = asyncio.run(fetch(f"SELECT version_num FROM {again}.alembic_version"))
    assert rows == []
    assert [row[0] for row in version] == [head_revision()]


@pytest.mark.parametrize(
    "change",
    [
        "CREATE FUNCTION {s}.fail() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NULL; END$$",
        "ALTER TABLE {s}.organizations DROP COLUMN name",
        "CREATE INDEX organizations_by_name ON {s}.organizations (name)",
        "UPDATE {s}.alembic_version SET version_num = '0004'",
    ],
)
def test_a_schema_whose_shape_a_test_changed_is_dropped_not_reused(change: str) -> None:
    with migrated_postgres_schema() as schema:
        asyncio.run(fetch(change.format(s=schema)))
    left = asyncio.run(fetch(f"SELECT 1 FROM pg_namespace WHERE nspname = '{schema}'"))
    assert left == []
    with migrated_postgres_schema() as fresh:
        assert fresh != schema
