"""Apply Alembic migrations from code (``keyplane migrate`` and ``keyplane serve``)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from keyplane.errors import StorageError

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


async def migrate(engine: AsyncEngine, schema: str | None = None, revision: str = "head") -> None:
    """Upgrade the database behind ``engine`` to ``revision`` in one transaction.

    On PostgreSQL a transaction-level advisory lock makes instances that start together take
    turns, so the schema is migrated once, not raced; ``schema`` (the engine's search_path,
    from KEYPLANE_DATABASE_SCHEMA) is created first when missing.
    """

    def upgrade(connection: Connection) -> None:
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(4242001)")
            if schema is not None:
                # The name is validated by Settings (^[a-z_][a-z0-9_]{0,62}$); quoted anyway.
                connection.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
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
