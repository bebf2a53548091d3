"""The ledger's three ways of writing a group commit held to one another: one trip on SQLite
(``store/usage.SqliteLedger``), asyncpg's connection on PostgreSQL
(``store/postgres_ledger.PostgresLedger``), and the reference, statement by statement through
SQLAlchemy (``SqlUsageStore._record``), on SQLite and on PostgreSQL. The same batches give the
same answers and leave the same rows, on random batches with repeats, conflicting repeats,
several keys and models, period boundaries and totals at the ledger's maximum."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select
from sqlalchemy.dialects import sqlite

from keyplane.domain import ids, money
from keyplane.domain.usage import AlertSpec, Recorded, UsageEntry, bucket_starts
from keyplane.settings import to_async_url
from keyplane.store.database import Database as Db
from keyplane.store.migrate import migrate
from keyplane.store.postgres_ledger import PostgresLedger
from keyplane.store.tables import events, usage_analytics_pending, usage_events, usage_rollups
from keyplane.store.usage import MAX_KEPT_SHAPES, SqliteLedger
from tests.conftest import PG_URL, migrated_postgres_schema
from tests.store.conftest import NOW, key_record, tenancy

_AMOUNTS = st.sampled_from([0, 1, 999, 10**6, money.LEDGER_MAX - 5, money.LEDGER_MAX])
_REPORT = st.fixed_dictionaries(
    {
        "key": st.integers(0, 2),
        "idempotency_key": st.sampled_from(["a", "b", "c", "d", "e"]),
        "fingerprint": st.sampled_from(["f1", "f2"]),
        "model": st.sampled_from([None, "gpt", "claude"]),
        "cost_micros": _AMOUNTS,
        "input_tokens": st.sampled_from([0, 7, money.LEDGER_MAX]),
        # Across a day, a month and a year's end (NOW is 2026-03-01 12:00).
        "at": st.sampled_from([0, 1, -13 * 3600, 306 * 86400 + 11 * 3600 + 3599]),
        # A budget alert on the report's month or day, crossed by small or large amounts.
        "alert": st.sampled_from([None, ("monthly", "month"), ("daily", "day")]),
        "limit": st.sampled_from([1_000, 10**6]),
    }
)
_BATCHES = st.lists(st.lists(_REPORT, min_size=1, max_size=8), min_size=1, max_size=4)


class _StatementByStatement:
    """The reference, in place of either driver ledger (``SqliteLedger``, ``PostgresLedger``)."""

    def __init__(self, db: Db) -> None:
        self._usage = db.usage

    async def record(
        self,
        conn: Any,
        in_lock_order: Sequence[UsageEntry],
        entries: Sequence[UsageEntry],
        *,
        keep_pending: bool,
    ) -> tuple[list[Recorded], list[UsageEntry], None]:
        # No totals: the alerts read theirs statement by statement.
        outcomes, added, _ = await self._usage._record(conn, in_lock_order, entries)
        return outcomes, added, None


async def _open(path: Path) -> Db:
    db = Db.from_url(f"sqlite+aiosqlite:///{path}")
    await migrate(db.engine)
    return db


async def _rows(db: Db, key_ids: list[str]) -> tuple[list[Any], ...]:
    ledger_c, rollups = usage_events.c, usage_rollups.c
    async with db.unit.read() as conn:
        ledger = await conn.execute(
            select(usage_events).where(ledger_c.key_id.in_(key_ids)).order_by(ledger_c.id)
        )
        # Budget alerts, but for their ids and organizations (each database makes its own).
        alerts = await conn.execute(
            select(
                events.c.type,
                events.c.subject_id,
                events.c.dedupe_key,
                events.c.payload,
                events.c.created_at,
            )
            .where(events.c.subject_id.in_(key_ids))
            .order_by(events.c.id)
        )
        sums = await conn.execute(
            select(usage_rollups)
            .where(rollups.key_id.in_(key_ids))
            .order_by(rollups.key_id, rollups.bucket, rollups.bucket_start, rollups.model)
        )
        pending = await conn.execute(
            select(usage_analytics_pending.c.cells).order_by(usage_analytics_pending.c.id)
        )
        return (
            [tuple(row) for row in ledger],
            [tuple(row) for row in sums],
            [row.cells for row in pending],
            [tuple(row) for row in alerts],
        )


async def _compared(
    tmp_path: Path, batches: list[list[dict[str, Any]]], schemas: tuple[str, str] | None = None
) -> tuple[list[Any], ...]:
    """Record ``batches`` with SQLite's one trip and the others, assert the same answers and
    rows, return the rows. The others are the reference on a SQLite file; or, given two
    migrated PostgreSQL schemas (shared by the examples: each has keys of its own),
    ``PostgresLedger`` in the first and the reference in the second."""
    one_trip = await _open(tmp_path / f"one-{ids.new_id('t')}.db")
    if schemas is None:
        reference = await _open(tmp_path / f"ref-{ids.new_id('t')}.db")
        reference.usage._sqlite = _StatementByStatement(reference)  # type: ignore[assignment]
        others = [reference]
    else:
        driver, reference = (Db.from_url(to_async_url(PG_URL), schema) for schema in schemas)
        reference.usage._postgres = _StatementByStatement(reference)  # type: ignore[assignment]
        others = [driver, reference]
        for db in others:
            async with db.unit.write() as conn:  # an earlier example's
                await conn.execute(delete(usage_analytics_pending))
    dbs = [one_trip, *others]
    try:
        key_ids = [ids.new_id("key") for _ in range(3)]
        orgs = {}
        for db in dbs:
            org_id, project_id = await tenancy(db)
            orgs[id(db)] = org_id
            for key_id in key_ids:
                await db.keys.create(key_record(org_id, project_id, id=key_id))
        for batch in batches:
            entries = [_entry(report, key_ids) for report in batch]
            answers = []
            for db in dbs:
                mine = [dataclasses.replace(e, org_id=orgs[id(db)]) for e in entries]
                answers.append(await db.usage.record(mine))
            assert all(answer == answers[0] for answer in answers[1:])
        # The driver ledgers were taken (and the reference was not).
        assert isinstance(one_trip.usage._sqlite, SqliteLedger)
        if schemas is not None:
            assert isinstance(others[0].usage._postgres, PostgresLedger)
        ours = await _rows(one_trip, key_ids)
        # The organization ids differ between the databases, and nothing else.
        org_column = [c.name for c in usage_events.columns].index("org_id")
        for db in others:
            theirs = await _rows(db, key_ids)
            assert [_without(r, org_column) for r in ours[0]] == [
                _without(r, org_column) for r in theirs[0]
            ]
            assert ours[1:] == theirs[1:]
        assert ours[0]  # something was recorded (the check compared rows, not nothing)
        return ours
    finally:
        for db in dbs:
            await db.close()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batches=_BATCHES)
def test_one_trip_and_statement_by_statement_give_the_same_answers_and_rows(
    tmp_path: Path, batches: list[list[dict[str, Any]]]
) -> None:
    asyncio.run(_compared(tmp_path, batches))


@pytest.mark.postgres
def test_postgresql_both_ways_gives_the_same_answers_and_rows_as_the_one_trip(
    tmp_path: Path,
) -> None:
    with migrated_postgres_schema() as driver, migrated_postgres_schema() as reference:

        @settings(
            max_examples=25,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        )
        @given(batches=_BATCHES)
        def check(batches: list[list[dict[str, Any]]]) -> None:
            asyncio.run(_compared(tmp_path, batches, (driver, reference)))

        check()


async def test_alerts_crossed_in_a_batch_are_the_same_both_ways(tmp_path: Path) -> None:
    def report(idempotency_key: str, cost: int, reset: str, bucket: str) -> dict[str, Any]:
        return {
            "key": 0,
            "idempotency_key": idempotency_key,
            "fingerprint": "f1",
            "model": "gpt",
            "cost_micros": cost,
            "input_tokens": 7,
            "at": 0,
            "alert": (reset, bucket),
            "limit": 1_000,
        }

    batches = [
        [report("a", 600, "monthly", "month"), report("b", 350, "daily", "day")],
        [report("c", 600, "monthly", "month"), report("a", 600, "monthly", "month")],
    ]
    rows = await _compared(tmp_path, batches)
    crossed = [(kind, payload["threshold"]) for kind, _, _, payload, _ in rows[3]]
    assert ("budget.threshold_crossed", 0.5) in crossed
    assert ("budget.exhausted", 1.0) in crossed


def _entry(report: dict[str, Any], key_ids: list[str]) -> UsageEntry:
    at = NOW + timedelta(seconds=report["at"])
    alert = None
    if report["alert"] is not None:
        reset, bucket = report["alert"]
        start = bucket_starts(at)[bucket]
        alert = AlertSpec(reset, bucket, start, report["limit"], (5_000, 9_000))
    return UsageEntry(
        id=ids.new_id("use"),
        org_id="",
        key_id=key_ids[report["key"]],
        idempotency_key=report["idempotency_key"],
        fingerprint=report["fingerprint"],
        request_id=None,
        model=report["model"],
        cost_micros=report["cost_micros"],
        input_tokens=report["input_tokens"],
        output_tokens=3,
        latency_ms=None,
        status=None,
        recorded_at=at,
        alert=alert,
    )


def _without(row: tuple[Any, ...], index: int) -> tuple[Any, ...]:
    return row[:index] + row[index + 1 :]


def test_the_compiled_query_shapes_stay_bounded() -> None:
    # A batch's shape (how many keys, how many idempotency keys) is up to the callers: the
    # statements kept for them must not grow without bound.
    ledger = SqliteLedger(sqlite.dialect())
    for keys in range(1, 40):
        for idempotency_keys in range(1, 10):
            statement = ledger._holders_of(keys, idempotency_keys)
            assert statement.sql.count("?") == keys + idempotency_keys
        # The keys, the period start, and the "total" bucket and "" model bound as values.
        assert ledger._totals_of(keys).sql.count("?") == keys + 3
    assert len(ledger._holders) <= MAX_KEPT_SHAPES
    assert len(ledger._totals) <= MAX_KEPT_SHAPES
    # What is kept is what would be compiled afresh.
    assert ledger._holders_of(3, 4).sql == SqliteLedger(sqlite.dialect())._holders_of(3, 4).sql
