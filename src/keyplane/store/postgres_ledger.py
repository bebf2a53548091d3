"""The usage ledger's writes on PostgreSQL, sent on asyncpg's connection directly.

``SqlUsageStore._record`` sends each of a group commit's statements through SQLAlchemy, and
under load SQLAlchemy's part (compiling the batch's multi-row ``VALUES``, binding each value
through its column type, building result rows) cost more of the server's CPU than the
statements themselves. :class:`PostgresLedger` runs the same statements, written once with
each column as an array (``unnest``), so each is one fixed text whatever the batch's size,
which asyncpg prepares once per connection. The steps in between are the same pure functions
(``store/ledger_steps.py``), and ``tests/store/test_usage_sqlite.py`` holds the two ways to the
same answers and rows on random batches, as it does ``SqliteLedger``.

The statements run inside the transaction SQLAlchemy has open on the connection
(:func:`asyncpg_in_transaction`), so the group commit still commits or rolls back whole.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC
from typing import Any

import asyncpg
from sqlalchemy import Table
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from keyplane.domain.usage import Recorded, UsageEntry, bucket_starts
from keyplane.errors import ConflictError, StorageError
from keyplane.store.analytics import pending_cells
from keyplane.store.ledger_steps import (
    ROLLUP_COLUMNS,
    ROLLUP_MEASURES,
    Holder,
    Slot,
    classified,
    overflowing_ids,
    rollup_rows,
    without_overflowing,
)
from keyplane.store.tables import usage_events, usage_rollups


async def asyncpg_in_transaction(conn: AsyncConnection) -> asyncpg.Connection:
    """The asyncpg connection under ``conn``, inside the transaction ``conn`` has begun.

    SQLAlchemy's asyncpg adapter sends BEGIN lazily, with its first statement: a statement sent
    on the driver before that would commit on its own. So the adapter's transaction is started
    here if it has not been yet, the way its own first statement starts it; asyncpg's
    ``is_in_transaction`` then confirms it, so a change in the adapter fails loudly here rather
    than write outside the transaction.
    """
    raw = await conn.get_raw_connection()
    adapted: Any = raw.dbapi_connection  # SQLAlchemy's AsyncAdapt_asyncpg_connection
    if adapted._transaction is None:
        async with adapted._execute_mutex:
            await adapted._start_transaction()
    driver = raw.driver_connection
    if not isinstance(driver, asyncpg.Connection) or not driver.is_in_transaction():
        raise StorageError("the usage ledger found no transaction open on its connection")
    return driver


_POSTGRESQL = postgresql.dialect()  # type: ignore[no-untyped-call]


def _array_kind(table: Table, name: str) -> str:
    """The PostgreSQL type of an array of ``table.name``'s values, as the table declares it
    but for a length: a cast to ``VARCHAR(255)`` cuts a longer text short without a word,
    where the column refuses it, as the reference's insert does."""
    declared = table.c[name].type.compile(dialect=_POSTGRESQL)
    return re.sub(r"\(\d+\)", "", declared) + "[]"


def _arrays(table: Table, names: Sequence[str], first: int) -> str:
    """``unnest``'s arguments: one array parameter per column, numbered from ``first``."""
    return ", ".join(
        f"CAST(${first + n} AS {_array_kind(table, name)})" for n, name in enumerate(names)
    )


def add_to_rollups_sql(columns: Sequence[str], cells: str) -> str:
    """The rollup upsert over arrays, ``columns`` being the parameters of ``ROLLUP_COLUMNS``'
    arrays and ``cells`` that of the analytics' pending rows (asyncpg's ``$n`` or SQLAlchemy's
    ``:name``): added to the rollups, the pending rows kept, the totals returned.

    Built from the table's constant column names only (no input reaches it). A data-modifying
    CTE runs whether or not the main statement reads it; ``WITH ORDINALITY`` keeps the sorted
    order, so rows are locked in one order everywhere.
    """
    names = ", ".join(ROLLUP_COLUMNS)
    arrays = ", ".join(
        f"CAST({param} AS {_array_kind(usage_rollups, name)})"
        for param, name in zip(columns, ROLLUP_COLUMNS, strict=True)
    )
    sums = ", ".join(f"{m} = usage_rollups.{m} + excluded.{m}" for m in ROLLUP_MEASURES)
    return (
        "WITH pending AS (INSERT INTO usage_analytics_pending (cells) "  # noqa: S608
        f"SELECT unnest(CAST({cells} AS text[]))) "
        f"INSERT INTO usage_rollups ({names}) SELECT {names} "
        f"FROM unnest({arrays}) WITH ORDINALITY AS r({names}, n) ORDER BY n "
        f"ON CONFLICT (key_id, bucket, bucket_start, model) DO UPDATE SET {sums} "
        "RETURNING key_id, bucket, bucket_start, model, cost_micros"
    )


#: usage_events' columns, in table order: the order of the append's arrays.
LEDGER_COLUMNS = tuple(column.name for column in usage_events.columns)
_LEDGER_NAMES = ", ".join(LEDGER_COLUMNS)

# The statements, written from the tables' constant names only. Each takes whole columns as
# arrays, so a batch of any size is the same text, prepared once per connection; rows go in
# (and are locked) in the order given.
#: The batch appended; the ids of the reports that went in (not repeats).
_APPEND = (
    f"INSERT INTO usage_events ({_LEDGER_NAMES}) SELECT {_LEDGER_NAMES} "  # noqa: S608
    f"FROM unnest({_arrays(usage_events, LEDGER_COLUMNS, 1)}) WITH ORDINALITY "
    f"AS r({_LEDGER_NAMES}, n) ORDER BY n ON CONFLICT DO NOTHING RETURNING id"
)
#: The rows holding these (API key, idempotency key) pairs, as committed now.
_HOLDERS = (
    "SELECT key_id, idempotency_key, id, fingerprint, recorded_at FROM usage_events "  # noqa: S608
    "WHERE (key_id, idempotency_key) IN (SELECT * FROM unnest("
    f"{_arrays(usage_events, ('key_id', 'idempotency_key'), 1)}))"
)
#: Each key's all-time row locked (made empty if need be) and returned, in key order: an
#: upsert whose update changes nothing locks the row, created or not, in one round trip.
_TOTALS = (
    "INSERT INTO usage_rollups (key_id, bucket, bucket_start, model, "  # noqa: S608
    f"{', '.join(ROLLUP_MEASURES)}) SELECT k, 'total', CAST($2 AS timestamptz), '', 0, 0, 0, 0 "
    f"FROM unnest({_arrays(usage_rollups, ('key_id',), 1)}) WITH ORDINALITY AS r(k, n) "
    "ORDER BY n ON CONFLICT (key_id, bucket, bucket_start, model) "
    "DO UPDATE SET requests = usage_rollups.requests "
    "RETURNING key_id, cost_micros, input_tokens, output_tokens"
)
#: Reports taken back out of the ledger (they would overflow).
_FORGET = "DELETE FROM usage_events WHERE id = ANY(CAST($1 AS varchar[]))"
_ADD_TO_ROLLUPS = add_to_rollups_sql(
    [f"${n + 1}" for n in range(len(ROLLUP_COLUMNS))], f"${len(ROLLUP_COLUMNS) + 1}"
)


#: What asyncpg raises for a failed statement or a broken connection (OSError as it is).
_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)


class PostgresLedger:
    """:meth:`SqlUsageStore.record`'s writes on PostgreSQL, on asyncpg (see the module doc)."""

    async def record(
        self,
        conn: AsyncConnection,
        in_lock_order: Sequence[UsageEntry],
        entries: Sequence[UsageEntry],
        *,
        keep_pending: bool,
    ) -> tuple[list[Recorded], list[UsageEntry], dict[Slot, int]]:
        """Outcomes, new reports, and the all-models totals of the rollup rows the batch
        wrote (the alerts' totals; a slot not among them is read by the caller)."""
        try:
            db = await asyncpg_in_transaction(conn)
            return await self._record(db, in_lock_order, entries, keep_pending=keep_pending)
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise ConflictError("the change conflicts with existing data") from exc
        except Exception as exc:
            # asyncpg's own errors, and SQLAlchemy's adapter's when its BEGIN fails.
            if isinstance(exc, (*_DRIVER_ERRORS, conn.dialect.loaded_dbapi.Error)):
                raise StorageError("database write failed") from exc
            raise

    async def _record(
        self,
        db: asyncpg.Connection,
        in_lock_order: Sequence[UsageEntry],
        entries: Sequence[UsageEntry],
        *,
        keep_pending: bool,
    ) -> tuple[list[Recorded], list[UsageEntry], dict[Slot, int]]:
        ours = {row[0] for row in await db.fetch(_APPEND, *_ledger_arrays(in_lock_order))}
        # Which row holds each (API key, idempotency key) now: ours where it went in, else an
        # earlier one, which only a statement of its own sees (as committed now, whoever wrote
        # it). Most batches repeat nothing and need no second statement.
        holders: dict[tuple[str, str], Any] = {
            (e.key_id, e.idempotency_key): e for e in in_lock_order if e.id in ours
        }
        repeats = sorted({(e.key_id, e.idempotency_key) for e in entries} - holders.keys())
        if repeats:
            key_ids, idempotency_keys = (list(column) for column in zip(*repeats, strict=True))
            for key_id, key, event_id, fingerprint, at in await db.fetch(
                _HOLDERS, key_ids, idempotency_keys
            ):
                holders[(key_id, key)] = Holder(event_id, fingerprint, at.astimezone(UTC))
        outcomes, added = classified(entries, holders)
        if not added:
            return outcomes, added, {}
        epoch = bucket_starts(added[0].recorded_at)["total"]
        key_ids = sorted({entry.key_id for entry in added})  # the rows are locked in key order
        running = {
            key_id: [cost, tokens_in, tokens_out]
            for key_id, cost, tokens_in, tokens_out in await db.fetch(_TOTALS, key_ids, epoch)
        }
        overflowing = overflowing_ids(added, running)
        if overflowing:
            # Not recorded at all: out of the ledger, so a retry is judged afresh.
            await db.execute(_FORGET, sorted(overflowing))
            outcomes, added = without_overflowing(outcomes, added, overflowing)
            if not added:
                return outcomes, added, {}
        rows = rollup_rows(added)
        columns = [[row[name] for row in rows] for name in ROLLUP_COLUMNS]
        cells = pending_cells(added) if keep_pending else []
        written = await db.fetch(_ADD_TO_ROLLUPS, *columns, cells)
        totals = {
            (key_id, bucket, start.astimezone(UTC)): cost
            for key_id, bucket, start, model, cost in written
            if model == ""
        }
        return outcomes, added, totals


def _ledger_arrays(entries: Sequence[UsageEntry]) -> list[list[Any]]:
    """The append's arrays: each of ``LEDGER_COLUMNS`` over ``entries``, in order."""
    for entry in entries:
        if entry.recorded_at.tzinfo is None:  # as the UTC column type refuses one
            raise ValueError("naive datetime given to a UTC column")
    return [[getattr(entry, name) for entry in entries] for name in LEDGER_COLUMNS]
