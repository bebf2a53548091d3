"""The unit of work every SQL store shares: the engine, read and write transactions, the
dialect helpers, and the one place where driver errors become Keyplane errors.

Every concept store (``store/keys.py``, ``store/usage.py``, ``store/vault.py``, ...) reaches the
database only through :class:`UnitOfWork`:

- :meth:`UnitOfWork.read` opens a connection for reads (no explicit transaction);
- :meth:`UnitOfWork.write` runs its body in one transaction, committed when the body returns
  and rolled back when it raises;
- :meth:`UnitOfWork.autocommit` runs each statement as its own transaction (PostgreSQL only
  uses it, to save the BEGIN and COMMIT round trips of a single statement).

Driver errors (SQLAlchemy's, and the ``OSError`` that asyncpg raises as it is when the
server cannot be reached) leave these as :class:`~keyplane.errors.StorageError` raised
``from`` the driver error, and a unique or foreign key violation in a write as
:class:`~keyplane.errors.ConflictError`. Errors the body raises itself (a refused mutation,
a callback's failure) pass through unchanged.

SQLite admits one writer at a time. Writers in this process are queued on an asyncio lock
before they begin (instead of failing to upgrade a deferred transaction's read lock while
another writer commits); readers run concurrently under WAL. A write that must hold SQLite's
write lock from its first read (so that other processes sharing the file cannot write in
between) starts with a write; see ``store/vault.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from sqlalchemy import String, Table, case, cast, event, func, literal, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DisconnectionError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql import ColumnElement

from keyplane.domain import validation
from keyplane.domain.changes import Journal
from keyplane.errors import ConflictError, StorageError, ValidationError
from keyplane.metrics import DATABASE_ERRORS, STORE_READ, STORE_WRITE
from keyplane.settings import sqlite_path
from keyplane.store.sqlite_adapter import one_trip_dbapi

#: PostgreSQL's pool when no setting says otherwise (KEYPLANE_DATABASE_POOL_SIZE / _MAX_OVERFLOW).
DEFAULT_POOL_SIZE = 10
DEFAULT_MAX_OVERFLOW = 20
#: A pooled PostgreSQL connection idle longer than this is pinged before it is handed out.
IDLE_PING_SECONDS = 30.0


def create_engine(
    async_url: str,
    schema: str | None = None,
    *,
    pool_size: int = DEFAULT_POOL_SIZE,
    max_overflow: int = DEFAULT_MAX_OVERFLOW,
) -> AsyncEngine:
    """An engine for ``async_url`` with the settings each database needs.

    ``schema`` (PostgreSQL only) puts Keyplane's tables in that schema via ``search_path``.
    ``pool_size`` and ``max_overflow`` size PostgreSQL's connection pool; SQLite keeps its own
    pool (one shared connection in memory, a connection per task on a file).
    """
    if async_url.startswith("sqlite"):
        return _sqlite_engine(async_url)
    connect_args = {} if schema is None else {"server_settings": {"search_path": schema}}
    engine = create_async_engine(
        async_url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        connect_args=connect_args,
        # SQL parameters are key digests, metadata, amounts: never in a log line or an error.
        hide_parameters=True,
    )
    _check_on_checkout(engine)
    return engine


def _check_on_checkout(engine: AsyncEngine) -> None:
    """Hand out no pooled PostgreSQL connection known to be dead, without a round trip for
    the ones in use.

    SQLAlchemy's ``pool_pre_ping`` pings on every checkout: asyncpg's ping is three round
    trips (BEGIN, an empty query, ROLLBACK), which cost a third of a one-statement read's CPU
    (bench/README.md, stop 35). Instead:

    - a connection the server closed (a restart, a failover, an idle timeout on its side) is
      known to asyncpg as soon as the event loop has read its end (``is_closed``): it is
      dropped here, and the pool opens another;
    - a connection idle for more than ``IDLE_PING_SECONDS`` is pinged first, as
      ``pool_pre_ping`` would, because a middlebox may have dropped it without a word.

    What is left is a connection that died while busy, or in the moment before the loop read
    its end: its statement fails (a 503), and SQLAlchemy then drops every connection of the
    pool older than it, as it does for any disconnect.
    """

    @event.listens_for(engine.sync_engine, "checkin")
    def _idle_since(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _still_there(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        if proxy.driver_connection.is_closed():
            raise DisconnectionError("the server closed the connection")
        idle_since = record.info.get("idle_since")
        if idle_since is not None and time.monotonic() - idle_since > IDLE_PING_SECONDS:
            try:
                dbapi_connection.ping()
            except Exception as exc:  # whatever the driver raises, the pool opens another
                raise DisconnectionError("the connection failed its ping") from exc


def _sqlite_engine(async_url: str) -> AsyncEngine:
    path = sqlite_path(async_url)
    # One trip to aiosqlite's thread per statement, not four (store/sqlite_adapter.py).
    dbapi = one_trip_dbapi()
    driver: dict[str, Any] = {} if dbapi is None else {"module": dbapi}
    if path is None:
        engine = create_async_engine(
            async_url,
            poolclass=StaticPool,
            connect_args={"check_same_thread": False},
            hide_parameters=True,
            **driver,
        )
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            async_url, connect_args={"timeout": 30}, hide_parameters=True, **driver
        )

    @event.listens_for(engine.sync_engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the driver so that BEGIN is emitted where
        # SQLAlchemy begins, and reads inside a write transaction see a consistent snapshot.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk before it is acknowledged, even across a power cut
        # (NORMAL would only survive a process crash). Group commit keeps this affordable.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Any) -> None:
        # Not on an autocommit connection: nothing would ever COMMIT that BEGIN.
        if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            conn.exec_driver_sql("BEGIN")

    return engine


#: Writes what a journal recorded (the audit log, the webhook outbox), inside the transaction
#: of the change; an error it raises rolls the change back.
JournalWriter = Callable[[AsyncConnection, Journal], Awaitable[None]]


class UnitOfWork:
    """One engine and its transactions, shared by every concept store of a database."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        #: SQLite (one writer at a time, no row locks) rather than PostgreSQL.
        self.is_sqlite = engine.dialect.name == "sqlite"
        self._write_lock = asyncio.Lock()
        #: Called in order with every non-empty journal a write commits (see ``write``).
        self.journal_writers: list[JournalWriter] = []
        #: Connections being opened, and ones opened for a caller cancelled meanwhile that are
        #: going back to the pool: ``close`` waits for both.
        self._opening: set[asyncio.Future[AsyncConnection]] = set()
        self._closing: set[asyncio.Future[None]] = set()

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads; StorageError when the database fails."""
        started = time.perf_counter()
        conn = await self._connect()
        try:
            yield conn
        except SQLAlchemyError as exc:
            DATABASE_ERRORS.labels("read").inc()
            raise StorageError("database read failed") from exc
        finally:
            await _close(conn)
            STORE_READ.observe(time.perf_counter() - started)

    @contextlib.asynccontextmanager
    async def write(self, journal: Journal | None = None) -> AsyncIterator[AsyncConnection]:
        """A transaction, committed when the body returns, rolled back when it raises.

        When the body has recorded changes in ``journal``, the journal writers write them in
        this transaction after the body and before the commit: the change and its records
        commit together or not at all.

        On SQLite, writers of this process take turns (an asyncio lock, held until the
        commit). ConflictError on a constraint violation, StorageError on any other
        database failure; the body's own errors pass through.
        """
        lock = self._write_lock if self.is_sqlite else contextlib.nullcontext()
        async with lock:
            started = time.perf_counter()
            conn = await self._connect()
            try:
                async with conn.begin():
                    yield conn
                    if journal is not None and journal.changes:
                        for writer in self.journal_writers:
                            await writer(conn, journal)
            except IntegrityError as exc:
                raise ConflictError("the change conflicts with existing data") from exc
            except SQLAlchemyError as exc:
                DATABASE_ERRORS.labels("write").inc()
                raise StorageError("database write failed") from exc
            finally:
                await _close(conn)
                STORE_WRITE.observe(time.perf_counter() - started)

    @contextlib.asynccontextmanager
    async def autocommit(self) -> AsyncIterator[AsyncConnection]:
        """A connection whose every statement commits on its own (no BEGIN / COMMIT)."""
        conn = await self._connect()
        try:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            yield conn
        except SQLAlchemyError as exc:
            DATABASE_ERRORS.labels("write").inc()
            raise StorageError("database write failed") from exc
        finally:
            await _close(conn)

    async def connect(self) -> AsyncConnection:
        """A connection of the pool that the caller closes (a store that keeps connections);
        StorageError when the database cannot be reached."""
        return await self._connect()

    async def _connect(self) -> AsyncConnection:
        opening = asyncio.ensure_future(self._open())
        self._opening.add(opening)
        opening.add_done_callback(self._opening.discard)
        try:
            # Shielded: a caller cancelled while its connection opens (a background loop
            # stopped, a client that hung up) would drop a half-made connection whose driver
            # thread finishes the opening later, maybe after the event loop closed (aiosqlite
            # then fails in its thread: "Event loop is closed"). The opening goes on, and
            # what it opens goes back to the pool; ``close`` waits for it.
            return await asyncio.shield(opening)
        except asyncio.CancelledError:
            opening.add_done_callback(self._give_back)
            raise

    async def _open(self) -> AsyncConnection:
        conn = self.engine.connect()
        try:
            await conn.start()
        except (SQLAlchemyError, OSError) as exc:
            # asyncpg raises a refused or timed-out connection as a bare OSError.
            DATABASE_ERRORS.labels("connect").inc()
            raise StorageError(f"cannot reach the database: {exc.__class__.__name__}") from exc
        return conn

    def _give_back(self, opening: asyncio.Future[AsyncConnection]) -> None:
        if opening.cancelled() or opening.exception() is not None:
            return
        closing = asyncio.ensure_future(_close(opening.result()))
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)

    def insert(self, table: Table) -> Any:
        """An INSERT with this dialect's ON CONFLICT support."""
        return sqlite_insert(table) if self.is_sqlite else postgresql_insert(table)

    @property
    def greatest(self) -> Callable[..., Any]:
        """SQL's two-argument maximum on this dialect (``max`` on SQLite)."""
        return func.max if self.is_sqlite else func.greatest

    async def ping(self) -> None:
        """Raise StorageError when the database cannot answer."""
        async with self.read() as conn:
            await conn.execute(select(1))

    async def close(self) -> None:
        """Close every pooled connection, once the openings still under way have ended and
        what their cancelled callers left has gone back to the pool."""
        while self._opening or self._closing:
            await asyncio.gather(*self._opening, *self._closing, return_exceptions=True)
        await self.engine.dispose()


async def _close(conn: AsyncConnection) -> None:
    with contextlib.suppress(SQLAlchemyError, OSError):
        await conn.close()


def metadata_text(column: Any, path: tuple[str, ...], *, is_sqlite: bool) -> ColumnElement[str]:
    """The text form of a metadata value at ``path``, the same on every database.

    Strings compare as themselves, numbers as their JSON text, booleans as ``true`` /
    ``false`` (SQLite's ``json_extract`` alone would give 1 / 0).
    """
    if not all(validation.METADATA_PATH_SEGMENT.fullmatch(part) for part in path):
        raise ValidationError("invalid metadata path", code="INVALID_FILTER")
    if not is_sqlite:
        text: ColumnElement[str] = column[path].as_string()
        return text
    json_path = "$" + "".join(f'."{part}"' for part in path)
    kind = func.json_type(column, json_path)
    return case(
        (kind == "true", literal("true")),
        (kind == "false", literal("false")),
        else_=cast(func.json_extract(column, json_path), String),
    )
