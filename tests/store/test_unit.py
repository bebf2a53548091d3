"""The shared unit of work and the ``Database`` object: driver errors, pool settings."""

from __future__ import annotations

import logging
import secrets
import traceback

import pytest
from sqlalchemy import text

from keyplane.errors import StorageError
from keyplane.store.database import Database as Db
from keyplane.store.migrate import migrate


async def test_migrating_twice_is_harmless(db: Db) -> None:
    await migrate(db.engine)
    await db.ping()


async def test_a_database_error_carries_no_sql_parameter(
    db: Db, caplog: pytest.LogCaptureFixture
) -> None:
    """A failed statement's parameters (key digests, metadata, amounts) once reached the logs
    in the driver error's text (``[parameters: ...]``)."""
    marker = f"secret-{secrets.token_hex(8)}"
    with pytest.raises(StorageError) as caught:
        async with db.unit.write() as conn:
            await conn.execute(text("INSERT INTO no_such_table (x) VALUES (:x)"), {"x": marker})
    logging.getLogger("keyplane.test").error("request failed", exc_info=caught.value)
    told = "".join(traceback.format_exception(caught.value)) + caplog.text
    assert "no_such_table" in told  # the error itself is there
    assert marker not in told
