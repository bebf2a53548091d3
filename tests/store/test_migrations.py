"""Migrations build exactly the schema that ``tables.py`` describes, on every backend."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection

from keyplane.settings import to_async_url
from keyplane.store.migrate import migrate
from keyplane.store.sql import create_engine
from keyplane.store.tables import metadata
from tests.conftest import Database


async def test_migrated_schema_matches_the_table_definitions(database: Database) -> None:
    engine = create_engine(to_async_url(database.url), database.schema)
    try:
        await migrate(engine)

        def diff(connection: Connection) -> list[Any]:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, metadata))

        async with engine.connect() as conn:
            differences = await conn.run_sync(diff)
    finally:
        await engine.dispose()
    assert differences == []
