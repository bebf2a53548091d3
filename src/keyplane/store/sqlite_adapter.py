"""SQLAlchemy's aiosqlite adapter, with one trip to aiosqlite's thread per statement.

aiosqlite runs the ``sqlite3`` connection on a thread of its own, and every call it makes there
is a hand-off: a queue put, the thread woken, a future resolved, the event loop woken. For
each statement SQLAlchemy's adapter (``sqlalchemy.dialects.sqlite.aiosqlite``) makes four:
open a cursor, execute, fetch the rows, close the cursor. On a busy 2-core machine a hand-off
costs more than a small statement (a plain ``GET /v1/keys/{id}`` made about 25 of them), so
the cursor here does all four in one function run on that thread, and keeps the rows, the
description, the row count and the last row id it read there.

Everything else is SQLAlchemy's own: connections, transactions, pooling, error mapping and
server-side cursors (``stream()``) are unchanged. It is installed per engine, as the
``module`` (the DBAPI) of ``store/unit.create_engine``'s SQLite engines, so nothing global
changes for a program that embeds Keyplane and uses aiosqlite itself.
"""

from __future__ import annotations

import collections
import sqlite3
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util import EMPTY_DICT

#: What one trip brings back: description, row count, last row id, rows.
_Outcome = tuple[Any, int, int | None, list[Any]]


def _execute(driver: aiosqlite.Connection, operation: str, parameters: Any, many: bool) -> _Outcome:
    """On aiosqlite's thread: run one statement on a cursor of its own, read everything it
    answers, close the cursor."""
    cursor = driver._conn.cursor()  # ValueError when closed: SQLAlchemy maps it
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else []
        # After the rows: SQLite counts a RETURNING statement's rows as they are stepped.
        return description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()


class OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    """A buffered cursor whose statement is one hand-off (module doc). It holds no aiosqlite
    cursor: each statement opens and closes a ``sqlite3`` cursor on the driver's thread."""

    __slots__ = ("_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: AsyncAdapt_aiosqlite_connection) -> None:
        # Not the base class's __init__: that opens an aiosqlite cursor (a hand-off).
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._rows = collections.deque()
        self._soft_closed_memoized = EMPTY_DICT
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int:
        return self._lastrowid  # type: ignore[return-value]

    @property
    def arraysize(self) -> int:
        return 1

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        return None  # the rows are all read already

    async def _async_soft_close(self) -> None:
        return None  # nothing is open on the driver

    def close(self) -> None:
        self._rows.clear()

    def setinputsizes(self, *inputsizes: Any) -> None:
        return None  # sqlite3's is a no-op too

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        return await self._run(operation, parameters, many=False)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> Any:
        return await self._run(operation, seq_of_parameters, many=True)

    async def _run(self, operation: Any, parameters: Any, *, many: bool) -> Any:
        async with self._adapt_connection._execute_mutex:
            driver = self._connection
            description, rowcount, lastrowid, rows = await driver._execute(
                _execute, driver, operation, parameters, many
            )
        self._description, self._rowcount, self._lastrowid = description, rowcount, lastrowid
        self._rows = collections.deque(rows)
        return self


class _OneTripConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = OneTripCursor  # type: ignore[assignment]

    def rollback(self) -> None:
        # The pool rolls back every connection it gets back, most of them just committed:
        # with no transaction open a rollback does nothing, so it skips the trip. (sqlite3's
        # ``in_transaction`` reads SQLite's own flag; no statement runs on the connection now.)
        raw = self._connection._connection
        if raw is not None and not raw.in_transaction:
            return
        super().rollback()


class OneTripDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """The DBAPI module SQLAlchemy's aiosqlite dialect takes (``create_engine(module=...)``),
    handing out connections whose cursors are :class:`OneTripCursor`."""

    def connect(self, *arg: Any, **kw: Any) -> AsyncAdapt_aiosqlite_connection:
        connection = super().connect(*arg, **kw)
        # The base class names its connection class outright; this one only adds the cursor
        # class (no slots, no state), so the object is retyped rather than rebuilt.
        connection.__class__ = _OneTripConnection
        return connection


def one_trip_dbapi() -> OneTripDBAPI | None:
    """A fresh module object for one engine; ``None`` when the installed SQLAlchemy's adapter
    is not the one this cursor was written against (SQLAlchemy 2.1's, whose cursor runs
    statements through ``_execute_async``; 2.0's executes in ``execute`` itself): the engine
    then keeps SQLAlchemy's own adapter, four trips per statement but correct."""
    if not all(hasattr(AsyncAdapt_aiosqlite_cursor, name) for name in _HOOKS):
        return None
    return OneTripDBAPI(aiosqlite, sqlite3)


#: What :class:`OneTripCursor` overrides and SQLAlchemy's adapter must call.
_HOOKS = ("_execute_async", "_executemany_async", "_async_soft_close")
