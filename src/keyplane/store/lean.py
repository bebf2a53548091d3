"""The cold read of the verify path: a key by secret hash (or by id) in one prepared statement,
straight through the driver.

``SqlKeyStore.find_by_secret`` / ``find_by_id`` stay the reference: this module answers the
same two questions with the same :class:`~keyplane.store.keys.SecretMatch` (a property test
holds them equal on SQLite and PostgreSQL), for the cache misses of the data plane, where
SQLAlchemy's per-call work (building and compiling the query, a pool checkout with its ping,
result processing, 8 thread hand-offs through aiosqlite) cost several times the read itself.

How it stays lean:

- a few connections of the engine's own pool are checked out once and kept (so they carry
  the engine's settings: SQLite's pragmas, PostgreSQL's ``search_path`` and JSON codecs);
- one SQL text per question, prepared once per connection (asyncpg's ``prepare``; sqlite3's
  statement cache), joining the secret, the key and its plan;
- SQLite: one hand-off to aiosqlite's thread per read (``execute_fetchall``); PostgreSQL:
  one round trip, outside any transaction (each read sees what is committed);
- the row is turned into the record directly, column by column, in the table's order.

A connection that fails is dropped (and the read retried once on a fresh one, so a database
restart costs no verify an error); driver errors leave as :class:`StorageError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

import asyncpg
from sqlalchemy import Select, bindparam, null, select
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.pool import StaticPool

from keyplane.domain.keys import Environment, KeyRecord, KeyStatus
from keyplane.errors import StorageError
from keyplane.metrics import DATABASE_ERRORS, STORE_READ
from keyplane.store.keys import SecretMatch
from keyplane.store.tables import api_key_secrets, api_keys, plans
from keyplane.store.unit import UnitOfWork

#: The columns of ``api_keys`` in the order of :class:`KeyRecord`'s fields.
_KEY_COLUMNS = [api_keys.c["meta" if f.name == "metadata" else f.name] for f in fields(KeyRecord)]
_PLAN_COLUMNS = (plans.c.name, plans.c.policy)
_WITH_PLAN = api_keys.outerjoin(plans, plans.c.id == api_keys.c.plan_id)
#: Rows: the key's columns, then valid_until, sealed_signing_secret, plan name, plan policy.
_BY_SECRET = (
    select(
        *_KEY_COLUMNS,
        api_key_secrets.c.valid_until,
        api_key_secrets.c.sealed_signing_secret,
        *_PLAN_COLUMNS,
    )
    .select_from(
        api_key_secrets.join(api_keys, api_keys.c.id == api_key_secrets.c.key_id).outerjoin(
            plans, plans.c.id == api_keys.c.plan_id
        )
    )
    .where(api_key_secrets.c.hash == bindparam("secret_hash"))
)
_BY_ID = (
    select(*_KEY_COLUMNS, null(), null(), *_PLAN_COLUMNS)
    .select_from(_WITH_PLAN)
    .where(api_keys.c.id == bindparam("key_id"))
)


def _sql(statement: Select[Any], dialect: Dialect) -> str:
    """The statement's text in ``dialect``, its one parameter positional (``?`` / ``$1``)."""
    return str(statement.compile(dialect=dialect))


#: How many connections the reads keep out of the engine's pool (PostgreSQL; SQLite's one
#: writer and WAL readers gain nothing from more than two).
POSTGRES_CONNECTIONS = 4
SQLITE_CONNECTIONS = 2

#: What a broken or refusing driver raises here (asyncpg raises OSError as it is).
_DRIVER_ERRORS = (
    sqlite3.Error,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    SQLAlchemyError,
    OSError,
    ValueError,  # aiosqlite: "Connection closed"
)


class LeanKeyReads:
    """``find_by_secret`` and ``find_by_id`` of :class:`~keyplane.store.keys.KeyStore`,
    through the driver. Safe for concurrent use; :meth:`close` returns the connections."""

    def __init__(self, unit: UnitOfWork) -> None:
        self._unit = unit
        self._sqlite = unit.is_sqlite
        self._limit = SQLITE_CONNECTIONS if self._sqlite else POSTGRES_CONNECTIONS
        self._idle: list[_Lease] = []
        self._slots = asyncio.Semaphore(self._limit)
        self._closed = False
        # An in-memory SQLite database is its one shared connection: never throw that away.
        self._disposable = not isinstance(unit.engine.pool, StaticPool)

    async def find_by_secret(self, secret_hash: str) -> SecretMatch | None:
        row = await self._fetch(_Lease.by_secret, secret_hash)
        if row is None:
            return None
        return SecretMatch(
            self._record(row),
            self._time(row[26]),
            row[28],
            self._json(row[29]),
            row[27],
            secret_hash,
        )

    async def find_by_id(self, key_id: str) -> SecretMatch | None:
        row = await self._fetch(_Lease.by_id, key_id)
        if row is None:
            return None
        return SecretMatch(self._record(row), None, row[28], self._json(row[29]))

    async def close(self) -> None:
        """Give every kept connection back; later reads fail with StorageError."""
        self._closed = True
        idle, self._idle = self._idle, []
        for lease in idle:
            await lease.close()

    async def _fetch(
        self, read: Callable[[_Lease, str], Any], argument: str
    ) -> Sequence[Any] | None:
        started = time.perf_counter()
        try:
            # At most ``limit`` reads at once, so an idle connection or room for one is there.
            async with self._slots:
                return await self._read(read, argument)
        finally:
            STORE_READ.observe(time.perf_counter() - started)

    async def _read(
        self, read: Callable[[_Lease, str], Any], argument: str
    ) -> Sequence[Any] | None:
        for attempt in (1, 2):
            lease = self._idle.pop() if self._idle and attempt == 1 else await self._open()
            try:
                row = await read(lease, argument)
            except _DRIVER_ERRORS as exc:
                await self._drop(lease)
                # A kept connection may have died with its server: one retry, on a new one.
                if attempt == 2 or not lease.reused:
                    DATABASE_ERRORS.labels("read").inc()
                    raise StorageError("database read failed") from exc
                continue
            except BaseException:
                # Cancelled mid-read: the connection's state is unknown.
                await asyncio.shield(self._drop(lease))
                raise
            lease.reused = True
            if self._closed:
                await lease.close()
            else:
                self._idle.append(lease)
            return row  # type: ignore[no-any-return]
        raise AssertionError("unreachable")  # pragma: no cover

    async def _open(self) -> _Lease:
        if self._closed:
            raise StorageError("the database is closed")
        # Cancelled while the connection opens, the unit gives it back to the pool itself.
        conn = await self._unit.connect()
        try:
            return await _Lease.open(conn, self._sqlite)
        except _DRIVER_ERRORS as exc:
            # Preparing failed (no such table: a database not migrated yet).
            DATABASE_ERRORS.labels("read").inc()
            raise StorageError("database read failed") from exc

    async def _drop(self, lease: _Lease) -> None:
        await lease.close(invalidate=self._disposable)

    def _record(self, row: Sequence[Any]) -> KeyRecord:
        time_of, json_of = self._time, self._json
        return KeyRecord(
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            row[5],
            row[6],
            Environment(row[7]),
            time_of(row[8]),  # type: ignore[arg-type]
            time_of(row[9]),  # type: ignore[arg-type]
            KeyStatus(row[10]),
            row[11],
            row[12],
            row[13],
            tuple(json_of(row[14])),
            json_of(row[15]),
            tuple(json_of(row[16])),
            time_of(row[17]),
            row[18],
            time_of(row[19]),
            row[20],
            time_of(row[21]),
            time_of(row[22]),
            row[23],
            json_of(row[24]),
            row[25],
        )

    def _time(self, value: Any) -> datetime | None:
        """As ``UTCDateTime`` reads it: aware UTC (SQLite keeps naive UTC text)."""
        if value is None:
            return None
        if self._sqlite:
            return datetime.fromisoformat(value).replace(tzinfo=UTC)
        return value.astimezone(UTC)  # type: ignore[no-any-return]

    def _json(self, value: Any) -> Any:
        """As the JSON column reads it (PostgreSQL's connections decode JSONB already)."""
        if value is None or not self._sqlite:
            return value
        return json.loads(value)


class _Lease:
    """One connection kept out of the engine's pool, with its two statements."""

    def __init__(self, conn: AsyncConnection, driver: Any, sqlite: bool) -> None:
        self.conn = conn
        self.driver = driver
        self.sqlite = sqlite
        #: Has served a read before (a failure then may be a connection that went stale).
        self.reused = False
        #: SQLite: the SQL text (sqlite3 caches its prepared statement per connection);
        #: PostgreSQL: asyncpg's prepared statement.
        self._by_secret: Any = None
        self._by_id: Any = None

    @classmethod
    async def open(cls, conn: AsyncConnection, sqlite: bool) -> _Lease:
        try:
            raw = await conn.get_raw_connection()
            lease = cls(conn, raw.driver_connection, sqlite)
            by_secret, by_id = _sql(_BY_SECRET, conn.dialect), _sql(_BY_ID, conn.dialect)
            if sqlite:
                lease._by_secret, lease._by_id = by_secret, by_id
            else:
                lease._by_secret = await lease.driver.prepare(by_secret)
                lease._by_id = await lease.driver.prepare(by_id)
        except BaseException:
            await asyncio.shield(_close(conn, invalidate=True))
            raise
        return lease

    async def by_secret(self, secret_hash: str) -> Sequence[Any] | None:
        if self.sqlite:
            return _first(await self.driver.execute_fetchall(self._by_secret, (secret_hash,)))
        return await self._by_secret.fetchrow(secret_hash)  # type: ignore[no-any-return]

    async def by_id(self, key_id: str) -> Sequence[Any] | None:
        if self.sqlite:
            return _first(await self.driver.execute_fetchall(self._by_id, (key_id,)))
        return await self._by_id.fetchrow(key_id)  # type: ignore[no-any-return]

    async def close(self, *, invalidate: bool = False) -> None:
        await _close(self.conn, invalidate=invalidate)


def _first(rows: Sequence[Any]) -> Sequence[Any] | None:
    return rows[0] if rows else None


async def _close(conn: AsyncConnection, *, invalidate: bool) -> None:
    with contextlib.suppress(*_DRIVER_ERRORS):
        if invalidate:
            # Not back into the pool: its state (a read cut off, a dead socket) is unknown.
            await conn.invalidate()
        await conn.close()
