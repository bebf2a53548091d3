"""A lean write path to a SQLite file: a whole transaction in one thread hand-off.

Through aiosqlite every statement, BEGIN and COMMIT is a hand-off to the driver's thread and
back (a vault lease made about fifteen, so a single client spent most of its time waking
threads, not writing). The lane holds one plain ``sqlite3`` connection (the same settings:
WAL, ``synchronous=FULL``, busy timeout) on a thread of its own and runs a transaction's
whole body there: BEGIN, the statements, COMMIT, then one wake-up of the event loop.

It takes the unit of work's writer lock, so the process's writers still take turns, and
SQLite's own locks keep other processes exact as before. A commit is on disk before the
caller is answered, as on the ordinary path.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Connection, create_engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from keyplane.errors import ConflictError, StorageError
from keyplane.metrics import DATABASE_ERRORS, STORE_WRITE

T = TypeVar("T")


class SqliteLane:
    """Transactions on one SQLite file, each run whole on the lane's own thread."""

    def __init__(self, path: Path, writer_lock: asyncio.Lock, configure: Callable[..., None]):
        # One connection, used only from the lane's one thread.
        self._engine = create_engine(
            f"sqlite:///{path}",
            poolclass=StaticPool,
            connect_args={"timeout": 30, "check_same_thread": False},
            hide_parameters=True,
        )
        configure(self._engine)
        self._writer_lock = writer_lock
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="keyplane-sqlite-lane")
        self._conn: Connection | None = None

    async def write(self, body: Callable[[Connection], T]) -> T:
        """Run ``body`` in a transaction committed when it returns, rolled back when it
        raises; ConflictError on a constraint violation, StorageError on any other database
        failure, the body's own errors as they are."""
        async with self._writer_lock:
            started = time.perf_counter()
            loop = asyncio.get_running_loop()
            try:
                return await loop.run_in_executor(self._thread, self._transaction, body)
            except IntegrityError as exc:
                raise ConflictError("the change conflicts with existing data") from exc
            except SQLAlchemyError as exc:
                DATABASE_ERRORS.labels("write").inc()
                raise StorageError("database write failed") from exc
            finally:
                STORE_WRITE.observe(time.perf_counter() - started)

    def _transaction(self, body: Callable[[Connection], T]) -> T:
        if self._conn is None:
            self._conn = self._engine.connect()
        try:
            with self._conn.begin():
                return body(self._conn)
        except SQLAlchemyError:
            # Start the next transaction on a fresh connection, whatever state this one is in.
            self._discard()
            raise

    def _discard(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(SQLAlchemyError):
                self._conn.close()
            self._conn = None

    async def close(self) -> None:
        """Close the connection (after any transaction in flight) and end the thread."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._discard)
        self._thread.shutdown(wait=True)
        self._engine.dispose()
