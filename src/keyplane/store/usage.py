"""The usage ledger and the limiter's durable state: :class:`UsageStore` and its SQL
implementation.

The ledger is ``usage_events`` (one row per report, unique per API key and idempotency key),
its rollups ``usage_rollups`` (per key, bucket, bucket start and model, ``""`` for all
models) and the budget alerts it writes to ``events``. ``limit_windows`` keeps what the
Redis limiter needs to survive the loss of Redis (see ``keyplane/limits/markers.py``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Table, and_, bindparam, delete, insert, or_, select, text, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from keyplane.domain import ids, money
from keyplane.domain.changes import SYSTEM, Journal
from keyplane.domain.usage import (
    CreditAdjustment,
    Recorded,
    UsageEntry,
    alerts_of,
    bucket_starts,
    crossed_thresholds,
)
from keyplane.errors import ConflictError
from keyplane.store.analytics import PENDING_INSERT, SqlAnalyticsStore, pending_cells
from keyplane.store.idempotency import IdempotencyRecord, insert_idempotency
from keyplane.store.ledger_steps import (
    ROLLUP_COLUMNS,
    ROLLUP_MEASURES,
    Holder,
    Slot,
    alert_slots,
    classified,
    ledger_values,
    overflowing_ids,
    rollup_rows,
    without_overflowing,
)
from keyplane.store.postgres_ledger import PostgresLedger, add_to_rollups_sql
from keyplane.store.sqlite_driver import (
    DriverStatement,
    Processor,
    bind_processors,
    row_values,
    run_on_driver,
)
from keyplane.store.tables import (
    api_keys,
    credit_adjustments,
    events,
    limit_windows,
    usage_events,
    usage_rollups,
)
from keyplane.store.unit import UnitOfWork

#: Called inside a usage transaction with its new reports, before it commits.
BeforeCommit = Callable[[Sequence[UsageEntry]], Awaitable[None]]
#: The lowest an all-models rollup may go through credits: a report's overflow check bounds
#: the all-time row from above only, so credits must not leave room below it either.
MIN_ADJUSTED_TOTAL = -money.MAX_MICROS


class UsageStore(Protocol):
    """The usage ledger, its rollups and the limiter's durable windows."""

    async def record(
        self, entries: Sequence[UsageEntry], before_commit: BeforeCommit | None = None
    ) -> list[Recorded]:
        """Append reports to the ledger and its rollups in one transaction (group commit);
        answer each, in order, with what happened to it.

        A report is counted once per (API key, idempotency key), however many times and by
        however many concurrent callers it is sent: a repeat answers as the original
        (``new=False``), or as a conflict when its body differs. A report that would push a
        key's all-time totals past ``money.LEDGER_MAX`` is not recorded (``overflow``).
        Budget thresholds crossed are written as ``budget.threshold_crossed`` events, once
        each, and a budget used up as ``budget.exhausted``; both also go to the journal
        writers (the webhook outbox) in the same transaction. ``before_commit`` sees the new
        reports inside the transaction, while their rollup rows are locked (see
        :meth:`seed_spent`).
        """
        ...

    async def seed_spent(
        self,
        key_id: str,
        bucket: str,
        bucket_start: datetime,
        install: Callable[[dict[str, int]], Awaitable[None]],
    ) -> None:
        """Read a key's spending in one bucket by model (``""`` for all) and ``install`` it
        while no report of that key and bucket can commit (a row lock held until
        ``install`` returns), so each report is counted once: by the seed, or by the
        ``before_commit`` of :meth:`record`."""
        ...

    async def totals(self, key_ids: Sequence[str], now: datetime) -> dict[str, dict[str, int]]:
        """Micro-credits spent per key in the buckets ``now`` falls in (total, day, week,
        month); every asked key is in the answer, 0 where it spent nothing."""
        ...

    async def adjust_credits(
        self,
        adjustment: CreditAdjustment,
        idempotency: IdempotencyRecord | None,
        journal: Journal,
        before_commit: Callable[[], Awaitable[None]],
    ) -> None:
        """Append a credit adjustment and count it in the key's all-models rollups (as a
        spend of ``-amount_micros``) in one transaction, with ``journal`` and the idempotency
        record (ConflictError when that record exists: a concurrent retry).

        The rollup rows are locked as a report's are, and ``before_commit`` runs while they
        are held, so a live counter sees the adjustment exactly once: by its seed or by
        ``before_commit`` (see :meth:`seed_spent`). ConflictError (``CREDITS_OUT_OF_RANGE``)
        when it would take a rollup past ``LEDGER_MAX`` or below ``MIN_ADJUSTED_TOTAL``.
        """
        ...

    async def get_adjustment(self, org_id: str, adjustment_id: str) -> CreditAdjustment | None:
        """One credit adjustment of ``org_id`` (another organization's is never returned)."""
        ...

    async def spent_in(self, key_id: str, bucket: str, bucket_start: datetime) -> int:
        """Micro-credits a key spent (net of credit adjustments) in one bucket, all models."""
        ...

    async def guard_limit_state(
        self, key_id: str, install: Callable[[int | None, Mapping[str, int]], Awaitable[int]]
    ) -> None:
        """Renew a key's limit marker under a row lock: ``install`` gets the last promise
        (``None`` if none) and the kept long windows, and returns the new promise, stored in
        the same transaction if it is later. Concurrent renewals of a key take turns."""
        ...

    async def keep_limit_windows(self, rows: Mapping[tuple[str, str], int]) -> None:
        """Keep, per (key id, window id), the latest instant each long window is full again;
        the greater value wins, also between concurrent writers."""
        ...


class SqlUsageStore:
    """:class:`UsageStore` over the shared unit of work."""

    def __init__(self, unit: UnitOfWork, analytics: SqlAnalyticsStore | None = None) -> None:
        self._unit = unit
        self._statements: _UsageStatements | None = None
        self._sqlite: SqliteLedger | None = None
        self._postgres = PostgresLedger()
        #: The analytics rollups, kept pending by the ledger's transaction (``None``: not kept).
        self.analytics = analytics

    async def record(
        self, entries: Sequence[UsageEntry], before_commit: BeforeCommit | None = None
    ) -> list[Recorded]:
        """Append reports to the ledger and their rollups, in one transaction (group commit).

        A report whose idempotency key is already in the ledger for its API key is not counted
        again: it answers as the original (same body) or as a conflict (another body). The
        scope is the API key, so another key's report (another tenant's) never matches. Each
        step is one statement for the whole batch, whatever its size. ``before_commit`` is
        given the new reports while their rollup rows are still locked (see
        :meth:`seed_spent`).
        """
        if not entries:
            return []
        async with self._unit.write() as conn:
            # Inserted in (API key, idempotency key) order: batches on other instances that
            # repeat some of these reports take the unique index's row locks in the same
            # order, so they wait for each other instead of deadlocking. The sort is stable:
            # within the batch, the first of two repeats is still the one recorded.
            in_lock_order = sorted(entries, key=lambda e: (e.key_id, e.idempotency_key))
            alert_totals: dict[Slot, int] | None = None
            if self._unit.is_sqlite:
                outcomes, added, alert_totals = await self._sqlite_ledger(conn).record(
                    conn, in_lock_order, entries, keep_pending=self.analytics is not None
                )
            else:
                outcomes, added, alert_totals = await self._postgres.record(
                    conn, in_lock_order, entries, keep_pending=self.analytics is not None
                )
            if added:
                alerting = [entry for entry in added if alerts_of(entry)]
                if alerting:
                    await self._record_alerts(conn, alerting, alert_totals)
                if before_commit is not None:
                    await before_commit(added)
        return outcomes

    async def _record(
        self,
        conn: AsyncConnection,
        in_lock_order: Sequence[UsageEntry],
        entries: Sequence[UsageEntry],
    ) -> tuple[list[Recorded], list[UsageEntry], dict[Slot, int] | None]:
        """The batch's reports appended, checked and added to the rollups, statement by
        statement through SQLAlchemy, on either database: the reference that the driver
        ledgers (:class:`SqliteLedger`, ``PostgresLedger``), which run in production, are
        held to by ``tests/store/test_usage_sqlite.py``. With the all-models totals the
        rollups now hold (PostgreSQL), for the alerts."""
        statements = self._usage_statements()
        appended = await conn.execute(
            statements.append.returning(usage_events.c.id),
            [ledger_values(e) for e in in_lock_order],
        )
        ours = {row.id for row in appended}
        # Which row holds each (API key, idempotency key) now: ours where it went in, else an
        # earlier one, which only a statement of its own sees (as committed now, whoever
        # wrote it). Most batches repeat nothing and need no second statement.
        holders: dict[tuple[str, str], Any] = {
            (e.key_id, e.idempotency_key): e for e in in_lock_order if e.id in ours
        }
        repeats = [e for e in entries if (e.key_id, e.idempotency_key) not in holders]
        if repeats:
            # One statement; the IN lists may pair more than asked, the dict picks.
            rows = await conn.execute(
                select(
                    usage_events.c.key_id,
                    usage_events.c.idempotency_key,
                    usage_events.c.id,
                    usage_events.c.fingerprint,
                    usage_events.c.recorded_at,
                ).where(
                    usage_events.c.key_id.in_(sorted({e.key_id for e in repeats})),
                    usage_events.c.idempotency_key.in_(
                        sorted({e.idempotency_key for e in repeats})
                    ),
                )
            )
            for row in rows:
                holders.setdefault((row.key_id, row.idempotency_key), row)
        outcomes, added = classified(entries, holders)
        if added:
            overflowing = await self._overflowing(conn, added)
            if overflowing:
                # Not recorded at all: out of the ledger, so a retry is judged afresh.
                await conn.execute(
                    delete(usage_events).where(usage_events.c.id.in_(sorted(overflowing)))
                )
                outcomes, added = without_overflowing(outcomes, added, overflowing)
        totals = await self._add_to_rollups(conn, added) if added else None
        return outcomes, added, totals

    async def _overflowing(self, conn: AsyncConnection, added: Sequence[UsageEntry]) -> set[str]:
        """Ids of the reports that would push a key's all-time totals past ``LEDGER_MAX``.

        Why: the rollups are 64-bit integers. Past 2**63 PostgreSQL fails the whole batch
        (``bigint out of range``, every later report of the key included) and SQLite silently
        turns the sum into a float. The all-time, all-models row of a key bounds every other
        rollup row of it, so checking that one row bounds them all. It is locked first (in
        key order, created empty if need be, as ``seed_spent`` does), so concurrent batches on
        other instances cannot both pass the check on the same total.

        One statement: an upsert whose update changes nothing locks each row, created or not,
        and returns it as committed (after waiting for another holder of its lock), in one
        round trip instead of an insert and a ``SELECT ... FOR UPDATE``.
        """
        epoch = bucket_starts(added[0].recorded_at)["total"]
        key_ids = sorted({entry.key_id for entry in added})
        rollups = usage_rollups.c
        upsert = self._unit.insert(usage_rollups).values(
            [
                {
                    "key_id": key_id,
                    "bucket": "total",
                    "bucket_start": epoch,
                    "model": "",
                    "requests": 0,
                    "cost_micros": 0,
                    "input_tokens": 0,
                    "output_tokens": 0,
                }
                for key_id in key_ids  # in key order: the rows are locked in this order
            ]
        )
        rows = await conn.execute(
            upsert.on_conflict_do_update(
                index_elements=["key_id", "bucket", "bucket_start", "model"],
                set_={"requests": rollups.requests},
            ).returning(
                rollups.key_id, rollups.cost_micros, rollups.input_tokens, rollups.output_tokens
            )
        )
        running = {
            row.key_id: [row.cost_micros, row.input_tokens, row.output_tokens] for row in rows
        }
        return overflowing_ids(added, running)

    async def seed_spent(
        self,
        key_id: str,
        bucket: str,
        bucket_start: datetime,
        install: Callable[[dict[str, int]], Awaitable[None]],
    ) -> None:
        """Read a key's spending in one bucket, by model, and ``install`` it, under a lock.

        The lock is the key's all-models rollup row (created empty if need be), which every
        report of that key and bucket updates: while a seed holds it no report can commit,
        and a report that committed first is in what the seed reads. A report passes its
        amount to the live counters before it commits (``before_commit``), so each report is
        counted exactly once, by the seed or by the increment, whatever the interleaving and
        however many instances run.
        """
        async with self._unit.write() as conn:
            await conn.execute(
                self._unit.insert(usage_rollups)
                .values(
                    key_id=key_id,
                    bucket=bucket,
                    bucket_start=bucket_start,
                    model="",
                    requests=0,
                    cost_micros=0,
                    input_tokens=0,
                    output_tokens=0,
                )
                .on_conflict_do_nothing()
            )
            in_bucket = (
                usage_rollups.c.key_id == key_id,
                usage_rollups.c.bucket == bucket,
                usage_rollups.c.bucket_start == bucket_start,
            )
            await conn.execute(
                select(usage_rollups.c.model)
                .where(*in_bucket, usage_rollups.c.model == "")
                .with_for_update()
            )
            rows = await conn.execute(
                select(usage_rollups.c.model, usage_rollups.c.cost_micros).where(*in_bucket)
            )
            await install({row.model: row.cost_micros for row in rows})

    async def adjust_credits(
        self,
        adjustment: CreditAdjustment,
        idempotency: IdempotencyRecord | None,
        journal: Journal,
        before_commit: Callable[[], Awaitable[None]],
    ) -> None:
        """Append a credit adjustment and count it in the all-models rollups, under their
        locks (see the protocol)."""
        key_id, spend = adjustment.key_id, -adjustment.amount_micros
        starts = bucket_starts(adjustment.created_at)
        async with self._unit.write(journal) as conn:
            if idempotency is not None:
                # First, so a concurrent retry fails here, before it has inserted anything.
                await insert_idempotency(conn, idempotency)
            await conn.execute(
                insert(credit_adjustments).values(
                    id=adjustment.id,
                    org_id=adjustment.org_id,
                    key_id=key_id,
                    amount_micros=adjustment.amount_micros,
                    reason=adjustment.reason,
                    created_at=adjustment.created_at,
                )
            )
            # Lock the rows in the order a report's transaction does (the all-time row
            # first, in _overflowing; then every row in sorted order), so the two never
            # deadlock on PostgreSQL.
            rows = sorted(starts.items(), key=lambda item: (item[0] != "total", item[0]))
            current: dict[str, int] = {}
            for bucket, start in rows:
                await conn.execute(
                    self._unit.insert(usage_rollups)
                    .values(
                        key_id=key_id,
                        bucket=bucket,
                        bucket_start=start,
                        model="",
                        requests=0,
                        cost_micros=0,
                        input_tokens=0,
                        output_tokens=0,
                    )
                    .on_conflict_do_nothing()
                )
                current[bucket] = (
                    await conn.execute(
                        select(usage_rollups.c.cost_micros)
                        .where(
                            usage_rollups.c.key_id == key_id,
                            usage_rollups.c.bucket == bucket,
                            usage_rollups.c.bucket_start == start,
                            usage_rollups.c.model == "",
                        )
                        .with_for_update()
                    )
                ).scalar_one()
            if any(
                not MIN_ADJUSTED_TOTAL <= total + spend <= money.LEDGER_MAX
                for total in current.values()
            ):
                raise ConflictError(
                    "this adjustment would take the key's ledger totals out of range",
                    code="CREDITS_OUT_OF_RANGE",
                )
            for bucket, start in rows:
                await conn.execute(
                    update(usage_rollups)
                    .where(
                        usage_rollups.c.key_id == key_id,
                        usage_rollups.c.bucket == bucket,
                        usage_rollups.c.bucket_start == start,
                        usage_rollups.c.model == "",
                    )
                    .values(cost_micros=usage_rollups.c.cost_micros + spend)
                )
            await before_commit()

    async def get_adjustment(self, org_id: str, adjustment_id: str) -> CreditAdjustment | None:
        table = credit_adjustments.c
        async with self._unit.read() as conn:
            row = (
                await conn.execute(
                    select(credit_adjustments).where(
                        table.org_id == org_id, table.id == adjustment_id
                    )
                )
            ).first()
        if row is None:
            return None
        return CreditAdjustment(
            id=row.id,
            org_id=row.org_id,
            key_id=row.key_id,
            amount_micros=row.amount_micros,
            reason=row.reason,
            created_at=row.created_at,
        )

    async def spent_in(self, key_id: str, bucket: str, bucket_start: datetime) -> int:
        async with self._unit.read() as conn:
            spent = (
                await conn.execute(_all_models_spent(key_id, bucket, bucket_start))
            ).scalar_one_or_none()
        return spent or 0

    async def guard_limit_state(
        self, key_id: str, install: Callable[[int | None, Mapping[str, int]], Awaitable[int]]
    ) -> None:
        """Renew a key's limit marker in Redis under a lock, and remember how long it lasts.

        ``install`` gets what the last renewal promised (None if there was none) and the
        key's kept long windows (``keep_limit_windows``), puts the marker in Redis and returns
        until when Redis keeps it. The row stays locked while it
        runs, so instances renewing the same key at once take turns: the second sees the
        first one's promise and its marker, never a promise without its marker (which it would
        take for a lost Redis). Written in the same transaction, so a promise is never older
        than the marker it describes unless this commit fails after ``install`` succeeded.
        """
        marker = (limit_windows.c.key_id == key_id, limit_windows.c.window == "")
        async with self._unit.write() as conn:
            await conn.execute(
                self._unit.insert(limit_windows)
                .values(key_id=key_id, window="", until_us=-1)
                .on_conflict_do_nothing()
            )
            old = (
                await conn.execute(
                    select(limit_windows.c.until_us).where(*marker).with_for_update()
                )
            ).scalar_one()
            kept = await conn.execute(
                select(limit_windows.c.window, limit_windows.c.until_us).where(
                    limit_windows.c.key_id == key_id, limit_windows.c.window != ""
                )
            )
            until = await install(None if old < 0 else old, {r.window: r.until_us for r in kept})
            if until > old:
                await conn.execute(update(limit_windows).where(*marker).values(until_us=until))

    async def keep_limit_windows(self, rows: Mapping[tuple[str, str], int]) -> None:
        """Keep, per (key id, window id), the latest instant each long window is full again.

        Several instances write the same rows: the greater value wins, in the statement.
        """
        if not rows:
            return
        insert = self._unit.insert(limit_windows)
        greatest = self._unit.greatest
        statement = insert.on_conflict_do_update(
            index_elements=[limit_windows.c.key_id, limit_windows.c.window],
            set_={"until_us": greatest(limit_windows.c.until_us, insert.excluded.until_us)},
        )
        values = [
            {"key_id": key_id, "window": window, "until_us": until}
            # Sorted, so concurrent transactions (several instances) lock rows in one order.
            for (key_id, window), until in sorted(rows.items())
        ]
        async with self._unit.write() as conn:
            await conn.execute(statement, values)

    async def _add_to_rollups(
        self, conn: AsyncConnection, added: Sequence[UsageEntry]
    ) -> dict[Slot, int] | None:
        """``added`` counted in the rollups; on PostgreSQL, the all-models totals of the rows
        written, as they now stand (what the alerts check)."""
        rows = rollup_rows(added)
        # Same transaction: a report is pending for the analytics exactly when it is in the
        # ledger, whatever crashes when (folding counts it once).
        cells = [] if self.analytics is None else pending_cells(added)
        if self._unit.is_sqlite:
            await self._add_to_rollups_on_sqlite(conn, rows, cells)
            return None
        # One statement, one round trip: the rows as arrays, the pending row in its CTE, the
        # totals returned.
        values = [tuple(row[name] for name in ROLLUP_COLUMNS) for row in rows]
        columns = map(list, zip(*values, strict=True))
        parameters: dict[str, Any] = dict(zip(_ROLLUP_PARAMS, columns, strict=True))
        parameters["cells"] = cells
        written = await conn.execute(_POSTGRES_ADD_TO_ROLLUP, parameters)
        return {
            (row.key_id, row.bucket, row.bucket_start): row.cost_micros
            for row in written
            if row.model == ""
        }

    async def _add_to_rollups_on_sqlite(
        self, conn: AsyncConnection, rows: Sequence[dict[str, Any]], cells: list[str]
    ) -> None:
        # Both statements in one trip to aiosqlite's thread (store/sqlite_driver.py): under
        # load a group commit holds a handful of reports, and a trip of its own was most of
        # what keeping them for the analytics cost. Values go through the columns' own
        # conversions, so they read back as SQLAlchemy wrote them.
        processors = bind_processors(usage_rollups, conn.dialect)
        await run_on_driver(conn, lambda db: _add_to_sqlite_rollups(db, processors, rows, cells))

    async def _record_alerts(
        self,
        conn: AsyncConnection,
        added: Sequence[UsageEntry],
        totals: Mapping[Slot, int] | None = None,
    ) -> None:
        # The totals now committed in this transaction, for each budget a report may alert on
        # (``totals``: those known already, from the batch's rollup writes).
        running = dict(totals or {})
        missing = alert_slots(added) - running.keys()
        if missing:
            running.update(await _read_alert_totals(conn, missing))
        # Walk the batch backwards from the committed totals, so each report is checked
        # against the spending just before and just after it.
        crossings: list[list[dict[str, Any]]] = []
        for entry in reversed(added):
            alerts = alerts_of(entry)
            if not alerts:
                continue
            # Spending just before and after this report, once per slot (a budget and a cost
            # window may share one, a daily budget and per_day_max).
            spans: dict[tuple[str, str, datetime], tuple[int, int]] = {}
            for alert in alerts:
                slot = (entry.key_id, alert.bucket, alert.bucket_start)
                if slot not in spans:
                    after = running[slot]
                    spans[slot] = (after - entry.cost_micros, after)
                    running[slot] = after - entry.cost_micros
            crossings.append([])
            for alert in alerts:
                before, after = spans[(entry.key_id, alert.bucket, alert.bucket_start)]
                marks = [
                    ("budget.threshold_crossed", bp)
                    for bp in crossed_thresholds(
                        before, after, alert.limit_micros, alert.thresholds_bp
                    )
                ]
                if before < alert.limit_micros <= after:
                    marks.append(("budget.exhausted", 10_000))
                source = "budget" if alert.window is None else f"costs.{alert.window}"
                for kind, bp in marks:
                    payload: dict[str, Any] = {
                        "key_id": entry.key_id,
                        "threshold": bp / 10_000,
                        "reset": alert.reset,
                        "period_start": alert.bucket_start.isoformat().replace("+00:00", "Z"),
                        # Integers in storage; the API shows them as credits.
                        "credit_limit_micros": alert.limit_micros,
                        "spent_micros": after,
                    }
                    if alert.window is not None:
                        payload["window"] = alert.window
                    crossings[-1].append(
                        {
                            "org_id": entry.org_id,
                            "type": kind,
                            "subject_id": entry.key_id,
                            "dedupe_key": (
                                f"{source}:{entry.key_id}:{alert.bucket}:"
                                f"{alert.bucket_start.isoformat()}:{bp}"
                                + (":exhausted" if kind == "budget.exhausted" else "")
                            ),
                            "payload": payload,
                            "created_at": entry.recorded_at,
                        }
                    )
        # Event ids sort by time: give them out in the order the crossings happened.
        ordered = [crossing for group in reversed(crossings) for crossing in group]
        if ordered:
            for crossing, event_id in zip(ordered, ids.new_ids("evt", len(ordered)), strict=True):
                crossing["id"] = event_id
            inserted = {
                row.id
                for row in await conn.execute(
                    self._usage_statements().record_event.returning(events.c.id), ordered
                )
            }
            fresh = [crossing for crossing in ordered if crossing["id"] in inserted]
            if fresh and self._unit.journal_writers:
                await self._notify(conn, fresh)

    async def _notify(self, conn: AsyncConnection, crossings: Sequence[dict[str, Any]]) -> None:
        """Hand new budget alerts to the journal writers (the webhook outbox), in this
        transaction: notifications only (``audited=False``), sent once like the events."""
        keys = {
            row.id: row
            for row in await conn.execute(
                select(
                    api_keys.c.id,
                    api_keys.c.project_id,
                    api_keys.c.name,
                    api_keys.c.owner,
                    api_keys.c.start,
                    api_keys.c.end,
                ).where(api_keys.c.id.in_(sorted({c["subject_id"] for c in crossings})))
            )
        }
        journal = Journal(SYSTEM, crossings[-1]["created_at"])
        for crossing in crossings:
            key = keys.get(crossing["subject_id"])
            payload = dict(crossing["payload"])
            details: dict[str, Any] = {
                "threshold": payload["threshold"],
                "reset": payload["reset"],
                "period_start": payload["period_start"],
                "credit_limit": money.to_text(payload["credit_limit_micros"]),
                "spent": money.to_text(payload["spent_micros"]),
            }
            if "window" in payload:
                details["window"] = payload["window"]
            if key is not None:
                details.update(name=key.name, owner=key.owner, start=key.start, end=key.end)
            journal.record(
                crossing["type"],
                org_id=crossing["org_id"],
                target_type="key",
                target_id=crossing["subject_id"],
                project_id=None if key is None else key.project_id,
                details=details,
                audited=False,
            )
        for writer in self._unit.journal_writers:
            await writer(conn, journal)

    def _sqlite_ledger(self, conn: AsyncConnection) -> SqliteLedger:
        if self._sqlite is None:
            self._sqlite = SqliteLedger(conn.dialect)
        return self._sqlite

    def _usage_statements(self) -> _UsageStatements:
        """The ledger's statements, built once: building an upsert costs more than running it."""
        if self._statements is None:
            self._statements = _UsageStatements.build(self._unit.insert)
        return self._statements

    async def totals(self, key_ids: Sequence[str], now: datetime) -> dict[str, dict[str, int]]:
        """Micro-credits spent per key in the buckets ``now`` falls in (total/day/week/month)."""
        if not key_ids:
            return {}
        starts = bucket_starts(now)
        current = or_(
            *(
                and_(usage_rollups.c.bucket == bucket, usage_rollups.c.bucket_start == start)
                for bucket, start in starts.items()
            )
        )
        query = select(
            usage_rollups.c.key_id, usage_rollups.c.bucket, usage_rollups.c.cost_micros
        ).where(usage_rollups.c.key_id.in_(list(key_ids)), usage_rollups.c.model == "", current)
        totals: dict[str, dict[str, int]] = {key_id: dict.fromkeys(starts, 0) for key_id in key_ids}
        async with self._unit.read() as conn:
            for row in await conn.execute(query):
                totals[row.key_id][row.bucket] = row.cost_micros
        return totals


def _sqlite_add_to_rollup() -> str:
    upsert = sqlite_insert(usage_rollups).values(dict.fromkeys(ROLLUP_COLUMNS))
    statement = upsert.on_conflict_do_update(
        index_elements=["key_id", "bucket", "bucket_start", "model"],
        set_={name: usage_rollups.c[name] + upsert.excluded[name] for name in ROLLUP_MEASURES},
    )
    compiled = statement.compile(dialect=sqlite.dialect())
    if tuple(compiled.positiontup or ()) != ROLLUP_COLUMNS:
        raise AssertionError("the rollup upsert binds its columns out of table order")
    return str(compiled)


#: SQLite: a batch's budget rollup rows added (an upsert per row, positional, for the driver).
_SQLITE_ADD_TO_ROLLUP = _sqlite_add_to_rollup()
_ROLLUP_PARAMS = tuple(f"c{index}" for index in range(len(ROLLUP_COLUMNS)))


def _postgres_add_to_rollup() -> Any:
    params = [f":{param}" for param in _ROLLUP_PARAMS]
    return text(add_to_rollups_sql(params, ":cells"))


#: PostgreSQL: a batch's budget rollup rows added, over arrays (one execution for the batch's
#: rows), with the analytics' pending rows (``cells``, maybe none) inserted by the same statement.
_POSTGRES_ADD_TO_ROLLUP = _postgres_add_to_rollup()


@dataclass(frozen=True, slots=True)
class _UsageStatements:
    append: Any
    record_event: Any

    @classmethod
    def build(cls, insert_for: Callable[[Table], Any]) -> _UsageStatements:
        return cls(
            append=insert_for(usage_events).on_conflict_do_nothing(),
            record_event=insert_for(events).on_conflict_do_nothing(),
        )


#: The most query shapes ``SqliteLedger`` keeps compiled, per query. A batch's shape is its
#: count of keys and idempotency keys (up to ``KEYPLANE_USAGE_BATCH_MAX`` each, which callers
#: sway): past this many, the kept ones are dropped and compiled again as they come.
MAX_KEPT_SHAPES = 256


def _make_room(kept: dict[Any, DriverStatement]) -> None:
    if len(kept) >= MAX_KEPT_SHAPES:
        kept.clear()


def _all_models_spent(key_id: Any, bucket: Any, start: Any) -> Any:
    """What a key spent in one bucket, all models (its rollup row's cost)."""
    rollups = usage_rollups.c
    return select(rollups.cost_micros).where(
        rollups.key_id == key_id,
        rollups.bucket == bucket,
        rollups.bucket_start == start,
        rollups.model == "",
    )


def _add_to_sqlite_rollups(
    db: sqlite3.Connection,
    processors: Sequence[Processor],
    rows: Sequence[dict[str, Any]],
    cells: list[str],
) -> None:
    """On SQLite's thread: ``rows`` added to the rollups, and the analytics' pending rows
    (``cells``) kept. Values go through the columns' own conversions, so they read back as
    SQLAlchemy wrote them."""
    db.executemany(_SQLITE_ADD_TO_ROLLUP, [row_values(processors, ROLLUP_COLUMNS, r) for r in rows])
    db.executemany(PENDING_INSERT, [(piece,) for piece in cells])


async def _read_alert_totals(conn: AsyncConnection, slots: Iterable[Slot]) -> dict[Slot, int]:
    """The totals of these alert slots, one statement per slot."""
    return {slot: (await conn.execute(_all_models_spent(*slot))).scalar_one() for slot in slots}


class SqliteLedger:
    """:meth:`SqlUsageStore.record`'s writes on SQLite in one trip to aiosqlite's thread.

    The same statements as ``SqlUsageStore._record`` (append, find the holders, make and read
    the all-time totals, take out what overflows, add to the rollups and keep the analytics'
    pending rows), and the totals ``_record_alerts`` checks the batch's alerts against,
    compiled once by SQLAlchemy (``DriverStatement``) and run as one function on the driver's
    connection, with the same pure steps in between (``classified``, ``overflowing_ids``,
    ``without_overflowing``, ``rollup_rows``, ``alert_slots``). Each statement sent through
    SQLAlchemy is a trip to SQLite's thread and back, and the trips, not the statements, were
    most of a group commit's CPU. ``tests/store/test_usage_sqlite.py`` holds both ways to the
    same outcomes and the same rows on random batches.
    """

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        self._append = DriverStatement(
            sqlite_insert(usage_events).on_conflict_do_nothing(), dialect
        )
        self._ensure_total = DriverStatement(
            sqlite_insert(usage_rollups).on_conflict_do_nothing(), dialect
        )
        self._forget = DriverStatement(
            delete(usage_events).where(usage_events.c.id == bindparam("id")), dialect
        )
        self._slot_total = DriverStatement(
            _all_models_spent(bindparam("key_id"), bindparam("bucket"), bindparam("bucket_start")),
            dialect,
        )
        self._rollup_processors = bind_processors(usage_rollups, dialect)
        self._holders: dict[tuple[int, int], DriverStatement] = {}
        self._totals: dict[int, DriverStatement] = {}

    async def record(
        self,
        conn: AsyncConnection,
        in_lock_order: Sequence[UsageEntry],
        entries: Sequence[UsageEntry],
        *,
        keep_pending: bool,
    ) -> tuple[list[Recorded], list[UsageEntry], dict[Slot, int]]:
        """Outcomes, new reports, and the totals their alerts are checked against."""
        append = self._append
        appended = [append.args(ledger_values(entry)) for entry in in_lock_order]
        key_ids = sorted({entry.key_id for entry in entries})
        idempotency_keys = sorted({entry.idempotency_key for entry in entries})
        holders = self._holders_of(len(key_ids), len(idempotency_keys))
        asked = holders.args(
            {f"k{n}": key_id for n, key_id in enumerate(key_ids)}
            | {f"i{n}": key for n, key in enumerate(idempotency_keys)}
        )

        def on_thread(
            db: sqlite3.Connection,
        ) -> tuple[list[Recorded], list[UsageEntry], dict[Slot, int]]:
            db.executemany(append.sql, appended)
            found = holders.rows(db.execute(holders.sql, asked).fetchall())
            by_key = {(row[0], row[1]): Holder(row[2], row[3], row[4]) for row in found}
            outcomes, added = classified(entries, by_key)
            if not added:
                return outcomes, added, {}
            overflowing = self._overflowing(db, added)
            if overflowing:
                # Not recorded at all: out of the ledger, so a retry is judged afresh.
                forget = self._forget
                db.executemany(forget.sql, [forget.args({"id": i}) for i in sorted(overflowing)])
                outcomes, added = without_overflowing(outcomes, added, overflowing)
            if added:
                cells = pending_cells(added) if keep_pending else []
                _add_to_sqlite_rollups(db, self._rollup_processors, rollup_rows(added), cells)
            return outcomes, added, self._alert_totals(db, added)

        return await run_on_driver(conn, on_thread)

    def _alert_totals(self, db: sqlite3.Connection, added: Sequence[UsageEntry]) -> dict[Slot, int]:
        # As SqlUsageStore._record_alerts reads them, once the batch is in the rollups.
        read = self._slot_total
        totals: dict[Slot, int] = {}
        for slot in alert_slots(added):
            key_id, bucket, start = slot
            asked = read.args({"key_id": key_id, "bucket": bucket, "bucket_start": start})
            [[total]] = read.rows(db.execute(read.sql, asked).fetchall())
            totals[slot] = total
        return totals

    def _overflowing(self, db: sqlite3.Connection, added: Sequence[UsageEntry]) -> set[str]:
        # As SqlUsageStore._overflowing: each key's all-time row made if need be, then read
        # (SQLite's write transaction holds the whole database: no row lock to take).
        epoch = bucket_starts(added[0].recorded_at)["total"]
        key_ids = sorted({entry.key_id for entry in added})
        ensure = self._ensure_total
        empty = {"bucket": "total", "bucket_start": epoch, "model": ""}
        empty |= dict.fromkeys(ROLLUP_MEASURES, 0)
        db.executemany(ensure.sql, [ensure.args(empty | {"key_id": k}) for k in key_ids])
        totals = self._totals_of(len(key_ids))
        asked = totals.args({"epoch": epoch} | {f"k{n}": k for n, k in enumerate(key_ids)})
        found = totals.rows(db.execute(totals.sql, asked).fetchall())
        return overflowing_ids(added, {row[0]: [row[1], row[2], row[3]] for row in found})

    def _holders_of(self, keys: int, idempotency_keys: int) -> DriverStatement:
        """The holders' query for this many keys and idempotency keys (a group commit holds at
        most ``max_batch`` reports, so there are few shapes)."""
        shape = (keys, idempotency_keys)
        statement = self._holders.get(shape)
        if statement is None:
            _make_room(self._holders)
            columns = usage_events.c
            query = select(
                columns.key_id,
                columns.idempotency_key,
                columns.id,
                columns.fingerprint,
                columns.recorded_at,
            ).where(
                columns.key_id.in_([bindparam(f"k{n}") for n in range(keys)]),
                columns.idempotency_key.in_([bindparam(f"i{n}") for n in range(idempotency_keys)]),
            )
            statement = self._holders[shape] = DriverStatement(query, self._dialect)
        return statement

    def _totals_of(self, keys: int) -> DriverStatement:
        statement = self._totals.get(keys)
        if statement is None:
            _make_room(self._totals)
            columns = usage_rollups.c
            query = select(
                columns.key_id, columns.cost_micros, columns.input_tokens, columns.output_tokens
            ).where(
                columns.key_id.in_([bindparam(f"k{n}") for n in range(keys)]),
                columns.bucket == "total",
                columns.bucket_start == bindparam("epoch"),
                columns.model == "",
            )
            statement = self._totals[keys] = DriverStatement(query, self._dialect)
        return statement
