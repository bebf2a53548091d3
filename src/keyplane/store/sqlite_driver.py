"""Several SQLite statements in one trip to aiosqlite's thread.

aiosqlite runs every call on a thread of its own and hands the result back through the event
loop: each statement sent through SQLAlchemy is one such trip (a queue put, the thread woken,
a future resolved, the loop woken), which on a busy machine costs more than the statement.
:func:`run_on_driver` sends one function that runs several statements on the driver's
``sqlite3`` connection, inside the transaction SQLAlchemy has open on it.

The function sees raw ``sqlite3``: values go in as the driver takes them (see
:func:`bind_processors` for the column types' own conversions, so rows read back exactly as
through SQLAlchemy), and its errors come out as Keyplane's (``store/unit.py``'s mapping).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

from sqlalchemy import Column, Table
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from keyplane.errors import ConflictError, StorageError

T = TypeVar("T")

#: One column's conversion from a Python value to what sqlite3 stores (None: as it is).
Processor = Callable[[Any], Any] | None


async def run_on_driver(conn: AsyncConnection, work: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``work`` on the sqlite3 connection under ``conn`` (an aiosqlite connection), in
    aiosqlite's thread and ``conn``'s open transaction; ConflictError on a constraint
    violation, StorageError on any other driver error."""
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection  # aiosqlite.Connection
    if driver is None:
        raise StorageError("the SQLite connection is closed")

    def on_thread() -> T:
        # aiosqlite's ``_execute`` is how its own methods reach the thread; the sqlite3
        # connection must only be used there.
        return work(cast("sqlite3.Connection", driver._conn))

    try:
        return cast("T", await driver._execute(on_thread))
    except sqlite3.IntegrityError as exc:
        raise ConflictError("the change conflicts with existing data") from exc
    except sqlite3.Error as exc:
        raise StorageError("database write failed") from exc
    except ValueError as exc:  # aiosqlite: the connection was closed meanwhile
        raise StorageError("the SQLite connection is closed") from exc


def bind_processors(table: Table, dialect: Dialect) -> list[Processor]:
    """Each column's bind conversion on ``dialect`` (timestamps to SQLite's fixed-width text,
    JSON to text), in the table's column order: what SQLAlchemy would send for them."""
    return [_processor(column, dialect) for column in table.columns]


def _processor(column: Column[Any], dialect: Dialect) -> Processor:
    return column.type.dialect_impl(dialect).bind_processor(dialect)


def row_values(
    processors: Sequence[Processor], names: Sequence[str], row: dict[str, Any]
) -> tuple[Any, ...]:
    """``row``'s values in column order, converted as SQLAlchemy would convert them."""
    return tuple(
        row[name] if convert is None else convert(row[name])
        for convert, name in zip(processors, names, strict=True)
    )


class DriverStatement:
    """A SQLAlchemy statement compiled once for ``dialect``, run through the driver.

    The SQL is what SQLAlchemy would send; :meth:`args` lays the values out in the order
    of its ``?`` marks, through each parameter's own type conversion, and values bound in
    the statement itself (``column == "literal"``) are kept. :meth:`rows` turns rows back
    into what SQLAlchemy would have read, with each result column's conversion.
    """

    __slots__ = ("_defaults", "_layout", "_names", "_processors", "_readers", "sql")

    def __init__(self, statement: Any, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql: str = compiled.string
        binds = [compiled.binds[name] for name in compiled.positiontup or ()]
        self._names = tuple(compiled.positiontup or ())
        self._defaults = tuple(bind.value for bind in binds)
        self._processors = tuple(
            bind.type.dialect_impl(dialect).bind_processor(dialect) for bind in binds
        )
        #: (name, default, conversion) per ``?``, in order: what ``args`` walks.
        self._layout = tuple(zip(self._names, self._defaults, self._processors, strict=True))
        self._readers = tuple(
            column.type.dialect_impl(dialect).result_processor(dialect, None)
            for column in getattr(statement, "exported_columns", ())
        )

    def args(self, values: Mapping[str, Any] | None = None) -> tuple[Any, ...]:
        """The positional parameters: ``values`` by name, the statement's own otherwise."""
        given = values or {}
        # A list made in one comprehension, not a generator: a group commit lays out a few
        # hundred values per batch on the event loop's thread.
        return tuple(
            [
                given.get(name, default) if convert is None else convert(given.get(name, default))
                for name, default, convert in self._layout
            ]
        )

    def rows(self, raw: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
        """Rows of this statement as the driver returned them, converted as SQLAlchemy
        converts them (for a statement that selects or returns columns)."""
        readers = self._readers
        return [
            tuple(
                value if read is None else read(value)
                for read, value in zip(readers, row, strict=True)
            )
            for row in raw
        ]
