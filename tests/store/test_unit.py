"""The shared unit of work and the ``Database`` object: driver errors, pool settings."""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event, text
from sqlalchemy.pool import QueuePool, StaticPool

from keyplane.errors import StorageError
from keyplane.settings import Settings
from keyplane.store import unit
from keyplane.store.database import Database as Db
from keyplane.store.migrate import migrate
from keyplane.store.tables import organizations
from tests.conftest import PG_URL, free_port
from tests.store.conftest import NOW


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


def _unreachable() -> Db:
    # Nothing listens on a port just released (the PostgreSQL server is not asked).
    return Db.from_url(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/test")


async def test_an_unreachable_database_is_a_storage_error() -> None:
    """asyncpg raises a refused connection as a bare ConnectionRefusedError (an OSError),
    which escaped every store method (a 500 instead of /readyz's 503) before the unit of
    work wrapped it."""
    db = _unreachable()
    try:
        with pytest.raises(StorageError) as pinged:
            await db.ping()
        assert isinstance(pinged.value.__cause__, OSError)
        with pytest.raises(StorageError) as read:
            await db.keys.get("org_x", "key_x")
        assert isinstance(read.value.__cause__, OSError)
        with pytest.raises(StorageError) as written:
            await db.keys.touch({"key_x": NOW})
        assert isinstance(written.value.__cause__, OSError)
        with pytest.raises(StorageError):
            await db.vault.lease_batch([], {("org_x", None): ["lease_x"]}, NOW)
    finally:
        await db.close()


async def test_a_failing_body_rolls_back_and_keeps_its_own_error(db: Db) -> None:
    org, _project = await db.tenancy.ensure_default_tenancy(NOW)

    class Refused(Exception):
        pass

    with pytest.raises(Refused):
        async with db.unit.write() as conn:
            await conn.execute(
                organizations.insert().values(id="org_" + "r" * 26, name="r", created_at=NOW)
            )
            raise Refused
    assert [p.org_id for p in await db.tenancy.list_projects("org_" + "r" * 26)] == []
    async with db.unit.read() as conn:
        ids_now = {row.id for row in await conn.execute(organizations.select())}
    assert ids_now == {org.id}


async def test_autocommit_statements_commit_on_their_own(db: Db) -> None:
    async with db.unit.autocommit() as conn:
        await conn.execute(
            organizations.insert().values(id="org_" + "a" * 26, name="a", created_at=NOW)
        )
    async with db.unit.read() as conn:
        names = {row.name for row in await conn.execute(organizations.select())}
    assert "a" in names


def test_the_pool_settings_reach_the_postgresql_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    pg_url = "postgresql://postgres@127.0.0.1:5432/test"
    defaults = Db.from_settings(Settings(database_url=pg_url))  # no connection is opened
    assert isinstance(defaults.engine.pool, QueuePool)
    assert (defaults.engine.pool.size(), defaults.engine.pool._max_overflow) == (10, 20)
    monkeypatch.setenv("KEYPLANE_DATABASE_POOL_SIZE", "3")
    monkeypatch.setenv("KEYPLANE_DATABASE_MAX_OVERFLOW", "7")
    settings = Settings(database_url=pg_url)
    assert (settings.database_pool_size, settings.database_max_overflow) == (3, 7)
    pool = Db.from_settings(settings).engine.pool
    assert isinstance(pool, QueuePool)
    assert (pool.size(), pool._max_overflow) == (3, 7)


def test_sqlite_keeps_its_own_pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'k.db'}"
    default_pool = type(Db.from_settings(Settings(database_url=url)).engine.pool)
    monkeypatch.setenv("KEYPLANE_DATABASE_POOL_SIZE", "3")
    assert type(Db.from_settings(Settings(database_url=url)).engine.pool) is default_pool
    memory = Db.from_settings(Settings(database_url="sqlite://"))
    assert isinstance(memory.engine.pool, StaticPool)


def test_pool_settings_are_bounded() -> None:
    with pytest.raises(ValueError, match="database_pool_size"):
        Settings(database_pool_size=0)
    with pytest.raises(ValueError, match="database_max_overflow"):
        Settings(database_max_overflow=-1)


def test_reads_cancelled_while_connecting_leave_nothing_behind_the_closed_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A background loop stopped while its connection opened dropped the half-made
    connection: aiosqlite's thread finished the opening after the event loop had closed and
    failed there ("Event loop is closed"). Now ``close`` waits for the opening and closes it.
    """
    failures: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: failures.append(args.exc_value))
    before = {t for t in threading.enumerate() if t.is_alive()}

    async def scenario() -> None:
        db = Db.from_url(f"sqlite+aiosqlite:///{tmp_path / 'k.db'}")
        await migrate(db.engine)
        await db.engine.dispose()  # every read below opens a new connection

        async def read_one() -> None:
            async with db.unit.read() as conn:
                await conn.execute(text("SELECT 1"))

        reads = [asyncio.ensure_future(read_one()) for _ in range(8)]
        await asyncio.sleep(0)  # each read is now opening its connection
        for read in reads:
            read.cancel()
        await asyncio.gather(*reads, return_exceptions=True)
        await db.close()

    for _ in range(6):  # the race is lost about half the time: six rounds all but make it
        asyncio.run(scenario())  # returns with its loop closed
    deadline = time.monotonic() + 10
    while {t for t in threading.enumerate() if t.is_alive()} - before:
        assert time.monotonic() < deadline, "driver threads still running"
        time.sleep(0.02)
    assert failures == []


def _returned(db: Db) -> list[Any]:
    """The DBAPI connections given back to ``db``'s pool, from now on, latest last."""
    returned: list[Any] = []
    event.listen(db.engine.sync_engine, "checkin", lambda dbapi, _record: returned.append(dbapi))
    return returned


async def _terminated_backend(db: Db) -> int:
    """The pid of the pool's one idle PostgreSQL connection, which the server has now ended
    (by another connection than the pool's)."""
    async with db.unit.read() as conn:
        pid = await conn.scalar(text("SELECT pg_backend_pid()"))
    other = await asyncpg.connect(PG_URL)
    try:
        await other.execute("SELECT pg_terminate_backend($1)", pid)
        for _ in range(500):  # until the backend has exited (bounded: about 5 s at most)
            if not await other.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid
            ):
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the backend did not exit")
    finally:
        await other.close()
    return int(pid)


@pytest.mark.postgres
async def test_a_connection_the_server_closed_is_replaced_without_an_error(
    postgres_db: Db,
) -> None:
    # No ping on a busy pool's checkout (it was three round trips): a connection that asyncpg
    # knows is closed is dropped at checkout, and the pool opens another.
    db = postgres_db
    returned = _returned(db)
    pid = await _terminated_backend(db)
    for _ in range(500):  # until the event loop has read the connection's end (bounded)
        if returned[-1]._connection.is_closed():
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("asyncpg never saw the connection end")
    async with db.unit.read() as conn:
        assert await conn.scalar(text("SELECT pg_backend_pid()")) != pid


@pytest.mark.postgres
async def test_a_connection_idle_past_the_threshold_is_pinged_first(
    postgres_db: Db, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server ended it, and the ping at checkout finds out, whether or not asyncpg had.
    monkeypatch.setattr(unit, "IDLE_PING_SECONDS", 0.0)
    db = postgres_db
    pinged: list[int] = []
    returned = _returned(db)
    async with db.unit.read() as conn:  # a live connection, idle in the pool once back
        live = await conn.scalar(text("SELECT pg_backend_pid()"))
    [connection] = returned
    adapter = type(connection)
    ping = adapter.ping

    def counted(self: Any) -> None:
        pinged.append(live if self is connection else -1)
        ping(self)

    monkeypatch.setattr(adapter, "ping", counted)
    async with db.unit.read() as conn:
        assert await conn.scalar(text("SELECT pg_backend_pid()")) == live
    assert pinged == [live]  # pinged before it was handed out
    pid = await _terminated_backend(db)
    async with db.unit.read() as conn:
        assert await conn.scalar(text("SELECT pg_backend_pid()")) != pid
