"""The SQLite engine's adapter (``store/sqlite_adapter.py``): each statement is one trip to
aiosqlite's thread, and answers what SQLAlchemy's own adapter answers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy.exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from keyplane.store import sqlite_adapter
from keyplane.store.unit import create_engine


class CountingQueue:
    """aiosqlite's queue to its thread, counting what is put on it (the hand-offs)."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue
        self.puts = 0

    def put_nowait(self, item: Any) -> None:
        self.puts += 1
        self.queue.put_nowait(item)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'adapter.db'}")
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE)"))
    yield engine
    await engine.dispose()


async def _counted(conn: AsyncConnection) -> CountingQueue:
    driver = (await conn.get_raw_connection()).driver_connection
    counting = CountingQueue(driver._tx)  # type: ignore[union-attr]
    driver._tx = counting  # type: ignore[union-attr]
    return counting


async def test_a_statement_is_one_trip_to_the_driver_thread(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 0"))  # the transaction's BEGIN is a statement too
        counting = await _counted(conn)
        rows = (await conn.execute(text("SELECT 1 UNION ALL SELECT 2"))).all()
        assert rows == [(1,), (2,)]
        assert counting.puts == 1  # SQLAlchemy's adapter: cursor, execute, fetch, close
        await conn.execute(text("INSERT INTO t (name) VALUES (:n)"), [{"n": "a"}, {"n": "b"}])
        assert counting.puts == 2  # executemany too


async def test_an_unknown_sqlalchemy_adapter_keeps_its_own_cursor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLAlchemy 2.0's cursor executes in ``execute`` itself: the one-trip cursor would not
    be called, so the engine must keep the stock adapter (slower, correct)."""
    monkeypatch.setattr(sqlite_adapter, "_HOOKS", ("_a_hook_this_sqlalchemy_lacks",))
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'stock.db'}")
    try:
        async with engine.connect() as conn:
            raw = await conn.get_raw_connection()
            assert not isinstance(raw.dbapi_connection, sqlite_adapter._OneTripConnection)
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await engine.dispose()


async def test_a_connection_given_back_after_its_commit_makes_no_trip(
    engine: AsyncEngine,
) -> None:
    conn = await engine.connect()
    await conn.execute(text("INSERT INTO t (name) VALUES ('a')"))
    await conn.commit()
    counting = await _counted(conn)
    await conn.close()  # the pool's reset: a rollback with nothing to roll back
    assert counting.puts == 0
    async with engine.connect() as conn:  # and one given back mid-transaction rolls back
        await conn.execute(text("INSERT INTO t (name) VALUES ('b')"))
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT name FROM t"))).scalars().all() == ["a"]


async def test_it_answers_rows_counts_and_ids_as_the_driver_does(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        inserted = await conn.execute(text("INSERT INTO t (name) VALUES ('a')"))
        assert inserted.lastrowid == 1 and inserted.rowcount == 1
        many = await conn.execute(
            text("INSERT INTO t (name) VALUES (:n)"), [{"n": "b"}, {"n": "c"}]
        )
        assert many.rowcount == 2
        changed = await conn.execute(text("UPDATE t SET name = name || '!' WHERE id > 1"))
        assert changed.rowcount == 2
        returned = await conn.execute(text("DELETE FROM t WHERE id >= 2 RETURNING id, name"))
        assert sorted(returned.all()) == [(2, "b!"), (3, "c!")]
        assert returned.rowcount == 2
        described = await conn.execute(text("SELECT id AS key, name FROM t"))
        assert list(described.keys()) == ["key", "name"]
        assert described.one() == (1, "a")
        assert (await conn.execute(text("SELECT id FROM t WHERE id > 5"))).first() is None


async def test_driver_errors_are_sqlalchemys_and_the_connection_goes_on(
    engine: AsyncEngine,
) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("INSERT INTO t (name) VALUES ('a')"))
        with pytest.raises(sqlalchemy.exc.IntegrityError):
            await conn.execute(text("INSERT INTO t (name) VALUES ('a')"))
        with pytest.raises(sqlalchemy.exc.OperationalError):
            await conn.execute(text("SELECT * FROM missing"))
        await conn.rollback()
        assert (await conn.execute(text("SELECT count(*) FROM t"))).scalar_one() == 0


async def test_streaming_still_works(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO t (name) VALUES (:n)"), [{"n": str(i)} for i in range(50)]
        )
    async with engine.connect() as conn:
        result = await conn.stream(text("SELECT id FROM t ORDER BY id"))
        ids = [row[0] async for row in result]
    assert ids == list(range(1, 51))
