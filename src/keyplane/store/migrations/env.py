"""Alembic environment.

Keyplane runs migrations in-process: ``keyplane.store.migrate`` opens an async connection and
hands its sync face to Alembic through ``config.attributes["connection"]``. Running ``alembic``
from a shell works too, with ``KEYPLANE_DATABASE_URL`` set.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from keyplane.store.tables import metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    # Invoked from the alembic command line: build an engine from the settings.
    from keyplane.settings import Settings
    from keyplane.store.unit import create_engine

    async def run_async() -> None:
        settings = Settings()
        engine = create_engine(settings.async_database_url, settings.database_schema)
        async with engine.begin() as conn:
            await conn.run_sync(_run)
        await engine.dispose()

    asyncio.run(run_async())


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run them against a database")
_run_online()
