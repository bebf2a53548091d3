"""Apply Alembic migrations from code (``keyplane migrate`` and ``keyplane serve``)."""

from __future__ import annotations

import functools
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from keyplane.errors import StorageError

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


@functools.cache
def head_revision() -> str | None:
    """The newest revision shipped with this code (reading the scripts once per process)."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


#: The advisory lock class migrations take on PostgreSQL; the second half is the schema's hash.
MIGRATION_LOCK = 4242001


async def migrate(engine: AsyncEngine, schema: str | None = None, revision: str = "head") -> None:
    """Upgrade the database behind ``engine`` to ``revision`` in one transaction.

    On PostgreSQL a transaction-level advisory lock makes instances that start together take
    turns, so the schema is migrated once, not raced; the lock is per schema, so instances of
    unrelated schemas on one server do not wait for each other. ``schema`` (the engine's
    search_path, from KEYPLANE_DATABASE_SCHEMA) is created first when missing.

    A database already at head is left alone after one read of its version: Alembic's
    upgrade command would load and walk every revision script to find nothing to do, on every
    start of every instance.
    """

    def upgrade(connection: Connection) -> None:
        if connection.dialect.name == "postgresql":
            connection.execute(
                text(
                    "SELECT pg_advisory_xact_lock(:lock,"
                    " hashtext(coalesce(CAST(:schema AS text), current_schema(), '')))"
                ),
                {"lock": MIGRATION_LOCK, "schema": schema},
            )
            if schema is not None:
                # The name is validated by Settings (^[a-z_][a-z0-9_]{0,62}$); quoted anyway.
                connection.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        if revision == "head" and _at(connection) == head_revision():
            return
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    try:
        async with engine.begin() as conn:
            await conn.run_sync(upgrade)
    except SQLAlchemyError as exc:
        raise StorageError(f"migration failed: {exc.__class__.__name__}") from exc
    except OSError as exc:  # a refused connection surfaces from the driver as it is
        raise StorageError(f"cannot reach the database: {exc}") from exc


def _at(connection: Connection) -> str | None:
    """The revision the database is at (None for an empty database)."""
    return MigrationContext.configure(connection).get_current_revision()
