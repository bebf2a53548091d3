"""The ``AnalyticsStore`` contract (``db.analytics``) on SQLite and PostgreSQL: the rollups equal
a brute-force recomputation from the raw ledger, caps, verdict flushes and pruning."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text

from keyplane.domain import analytics, ids
from keyplane.domain.analytics import Grain, Retention
from keyplane.domain.usage import UsageEntry
from keyplane.errors import StorageError
from keyplane.settings import to_async_url
from keyplane.store import analytics as store_analytics
from keyplane.store.analytics import FOLD_CHUNK
from keyplane.store.database import Database as Db
from keyplane.store.migrate import migrate
from keyplane.store.tables import (
    usage_analytics,
    usage_analytics_pending,
    usage_events,
    verify_analytics,
)
from tests.conftest import PG_URL, Database
from tests.store.conftest import NOW, key_record, tenancy

# 23:00 the day before NOW: workloads cross hour and day boundaries.
START = datetime(2026, 2, 28, 23, 0, tzinfo=UTC)
BOUNDS = (10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)

_REPORT_FIELDS = (
    st.sampled_from([None, "gpt-4", "claude", "m" * 128]),
    st.sampled_from([None, "chat", "embeddings"]),
    st.integers(0, 10**9),  # cost
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    st.one_of(st.none(), st.integers(0, 86_400_000)),  # latency
    st.sampled_from([None, 200, 399, 400, 429, 500]),
    st.integers(0, 30),  # idempotency key: repeats are not counted twice
)
_REPORT = st.tuples(
    st.integers(0, 1),  # which key
    st.integers(0, 4 * 3600),  # seconds after START
    *_REPORT_FIELDS,
)


async def _open(database: Database) -> Db:
    db = Db.from_url(to_async_url(database.url), database.schema)
    await migrate(db.engine)
    return db


def _entries(keys: list[str], org_id: str, reports: list[tuple[Any, ...]]) -> list[UsageEntry]:
    entries = []
    for key, offset, model, feature, cost, tin, tout, latency, status, idem in reports:
        entries.append(
            UsageEntry(
                id=ids.new_id("use"),
                org_id=org_id,
                key_id=keys[key],
                idempotency_key=f"idem-{idem}",
                fingerprint="f" * 64,
                request_id=None,
                model=model,
                cost_micros=cost,
                input_tokens=tin,
                output_tokens=tout,
                latency_ms=latency,
                status=status,
                recorded_at=START + timedelta(seconds=offset),
                feature=feature,
            )
        )
    return entries


def _bucket(grain: str, when: datetime) -> datetime:
    # Written apart from the code under test: seconds since the epoch, cut to the grain.
    size = {"minute": 60, "hour": 3600, "day": 86400}[grain]
    epoch = int(when.timestamp())
    return datetime.fromtimestamp(epoch - epoch % size, UTC)


def _brute_force(rows: list[Any]) -> dict[tuple[Any, ...], dict[str, int]]:
    """The rollup rows recomputed from the raw ledger, one report at a time."""
    expected: dict[tuple[Any, ...], dict[str, int]] = {}
    for row in rows:
        for grain in ("minute", "hour", "day"):
            slots = [("", "")]
            if grain != "minute":
                slots += [(d, v) for d, v in (("model", row.model), ("feature", row.feature)) if v]
            for dimension, value in slots:
                slot = (row.key_id, grain, _bucket(grain, row.recorded_at), dimension, value)
                sums = expected.setdefault(slot, Counter())
                sums["requests"] += 1
                sums["errors"] += row.status is not None and row.status >= 400
                sums["cost_micros"] += row.cost_micros
                sums["input_tokens"] += row.input_tokens
                sums["output_tokens"] += row.output_tokens
                if row.latency_ms is not None:
                    sums["latency_count"] += 1
                    sums["latency_sum_ms"] += row.latency_ms
                    index = next(
                        (i for i, bound in enumerate(BOUNDS) if row.latency_ms <= bound),
                        len(BOUNDS),
                    )
                    sums[f"latency_h{index}"] += 1
    return {slot: {m: sums[m] for m in analytics.MEASURES} for slot, sums in expected.items()}


async def _stored(db: Db, keys: list[str]) -> dict[tuple[Any, ...], dict[str, int]]:
    async with db.unit.read() as conn:
        rows = await conn.execute(select(usage_analytics).where(usage_analytics.c.key_id.in_(keys)))
        return {
            (r.key_id, r.grain, r.bucket_start, r.dimension, r.value): {
                m: r._mapping[m] for m in analytics.MEASURES
            }
            for r in rows
        }


async def _ledger(db: Db, keys: list[str]) -> list[Any]:
    async with db.unit.read() as conn:
        return list(await conn.execute(select(usage_events).where(usage_events.c.key_id.in_(keys))))


async def _workload(dbs: list[Db], reports: list[tuple[Any, ...]], batches: int) -> None:
    """Record ``reports`` in ``batches`` concurrent batches spread over ``dbs`` (instances)."""
    org_id, project_id = await tenancy(dbs[0])
    keys = [(await dbs[0].keys.create(key_record(org_id, project_id))).id for _ in range(2)]
    entries = _entries(keys, org_id, reports)
    chunks = [entries[i::batches] for i in range(batches)]
    # Every instance's background fold runs while the batches commit (each pending row must
    # be counted by exactly one of them), then a reader's fold takes what is left.
    await asyncio.gather(
        *(dbs[i % len(dbs)].usage.record(chunk) for i, chunk in enumerate(chunks) if chunk),
        *(db.analytics.fold(wait=False) for db in dbs),
    )
    await dbs[-1].analytics.fold()
    assert await _stored(dbs[0], keys) == _brute_force(await _ledger(dbs[0], keys))


_PROPERTY = settings(
    max_examples=15,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@_PROPERTY
@given(reports=st.lists(_REPORT, min_size=1, max_size=40), batches=st.integers(1, 4))
def test_rollups_equal_a_recomputation_from_the_ledger(
    database: Database, reports: list[tuple[Any, ...]], batches: int
) -> None:
    async def run() -> None:
        db = await _open(database)
        try:
            await _workload([db], reports, batches)
        finally:
            await db.close()

    asyncio.run(run())


@_PROPERTY
@given(reports=st.lists(_REPORT, min_size=1, max_size=40), batches=st.integers(2, 4))
def test_two_instances_on_one_database_add_up(
    database: Database, reports: list[tuple[Any, ...]], batches: int
) -> None:
    async def run() -> None:
        first, second = await _open(database), await _open(database)
        try:
            await _workload([first, second], reports, batches)
        finally:
            await first.close()
            await second.close()

    asyncio.run(run())


async def _key(db: Db) -> tuple[str, str]:
    org_id, project_id = await tenancy(db)
    return org_id, (await db.keys.create(key_record(org_id, project_id))).id


def _report(key_id: str, org_id: str, at: datetime, **fields: Any) -> UsageEntry:
    values: dict[str, Any] = {
        "model": None,
        "cost_micros": 1,
        "input_tokens": 0,
        "output_tokens": 0,
        "latency_ms": None,
        "status": 200,
        **fields,
    }
    return UsageEntry(
        id=ids.new_id("use"),
        org_id=org_id,
        key_id=key_id,
        idempotency_key=secrets.token_hex(8),
        fingerprint="f" * 64,
        request_id=None,
        recorded_at=at,
        **values,
    )


async def test_models_past_the_cap_count_as_other(db: Db) -> None:
    db.analytics.max_values = 3
    org_id, key = await _key(db)
    reports = [_report(key, org_id, NOW, model=f"model-{i}") for i in range(6)]
    await db.usage.record(reports[:2])
    await db.usage.record(reports[2:])
    window = analytics.Window(Grain.DAY, analytics.floor(Grain.DAY, NOW), 1)
    found = await db.analytics.key_analytics(key, window)
    assert sorted(found.models) == ["(other)", "model-0", "model-1", "model-2"]
    assert found.models["(other)"].requests == 3
    assert sum(s.requests for s in found.models.values()) == 6
    # An admitted model keeps its own row later the same day; a new one still folds.
    await db.usage.record(
        [_report(key, org_id, NOW, model="model-1"), _report(key, org_id, NOW, model="new")]
    )
    found = await db.analytics.key_analytics(key, window)
    assert (found.models["model-1"].requests, found.models["(other)"].requests) == (2, 4)
    # The next day starts afresh.
    tomorrow = NOW + timedelta(days=1)
    await db.usage.record([_report(key, org_id, tomorrow, model="model-5")])
    next_day = analytics.Window(Grain.DAY, analytics.floor(Grain.DAY, tomorrow), 1)
    assert sorted((await db.analytics.key_analytics(key, next_day)).models) == ["model-5"]


async def test_verdict_counts_add_up_across_writers_and_grains(db: Db) -> None:
    _, key = await _key(db)
    minute = analytics.floor(Grain.MINUTE, NOW)
    await asyncio.gather(
        db.analytics.add_verdicts({(key, minute, "VALID"): 3, (key, minute, "RATE_LIMITED"): 2}),
        db.analytics.add_verdicts({(key, minute, "VALID"): 4}),
    )
    later = minute + timedelta(minutes=61)
    await db.analytics.add_verdicts({(key, later, "REVOKED"): 1})
    async with db.unit.read() as conn:
        rows = {
            (r.grain, r.bucket_start, r.code): r._mapping["count"]
            for r in await conn.execute(select(verify_analytics))
        }
    hour = analytics.floor(Grain.HOUR, minute)
    day = analytics.floor(Grain.DAY, minute)
    assert rows == {
        ("minute", minute, "VALID"): 7,
        ("minute", minute, "RATE_LIMITED"): 2,
        ("minute", later, "REVOKED"): 1,
        ("hour", hour, "VALID"): 7,
        ("hour", hour, "RATE_LIMITED"): 2,
        ("hour", hour + timedelta(hours=1), "REVOKED"): 1,
        ("day", day, "VALID"): 7,
        ("day", day, "RATE_LIMITED"): 2,
        ("day", day, "REVOKED"): 1,
    }


async def test_pruning_drops_old_grains_and_raw_events_but_keeps_days(db: Db) -> None:
    org_id, key = await _key(db)
    old = NOW - timedelta(days=100)
    await db.usage.record([_report(key, org_id, old), _report(key, org_id, NOW)])
    await db.analytics.add_verdicts({(key, analytics.floor(Grain.MINUTE, old), "VALID"): 1})
    retention = Retention(minute=timedelta(hours=48), hour=timedelta(days=90))
    first = await db.analytics.prune(NOW, retention, timedelta(days=30))
    again = await db.analytics.prune(NOW, retention, timedelta(days=30))
    assert first == {"usage_analytics": 2, "verify_analytics": 2, "usage_events": 1}
    assert again == {"usage_analytics": 0, "verify_analytics": 0, "usage_events": 0}
    async with db.unit.read() as conn:
        kept = {
            (r.grain, r.bucket_start)
            for r in await conn.execute(
                select(usage_analytics).where(usage_analytics.c.key_id == key)
            )
        }
    assert (Grain.DAY.value, analytics.floor(Grain.DAY, old)) in kept
    assert (Grain.HOUR.value, analytics.floor(Grain.HOUR, old)) not in kept
    assert len(await _ledger(db, [key])) == 1


_SPREAD_REPORT = st.tuples(
    st.just(0),
    st.integers(0, 3 * 86400),  # over three days and a bit: whole days and edges
    *_REPORT_FIELDS,
)


@_PROPERTY
@given(
    reports=st.lists(_SPREAD_REPORT, min_size=1, max_size=40),
    first_hour=st.integers(-30, 80),
    hours=st.integers(1, 100),
)
def test_key_analytics_over_hours_equal_the_hour_rows_of_a_recomputation(
    database: Database, reports: list[tuple[Any, ...]], first_hour: int, hours: int
) -> None:
    """Breakdowns read whole days from day rows; they must equal the hours they stand for."""

    async def run() -> None:
        db = await _open(database)
        try:
            org_id, project_id = await tenancy(db)
            key = (await db.keys.create(key_record(org_id, project_id))).id
            await db.usage.record(_entries([key], org_id, reports))
            window = analytics.Window(Grain.HOUR, START + timedelta(hours=first_hour), hours)
            found = await db.analytics.key_analytics(key, window)
            expected: dict[tuple[str, str], Counter[str]] = {}
            for (_, grain, start, dimension, value), sums in _brute_force(
                await _ledger(db, [key])
            ).items():
                if grain == "hour" and window.start <= start < window.end:
                    expected.setdefault((dimension, value), Counter()).update(sums)
            got = {("", ""): sum((Counter(s.values()) for s in found.series.values()), Counter())}
            got.update({("model", name): Counter(s.values()) for name, s in found.models.items()})
            got.update(
                {("feature", name): Counter(s.values()) for name, s in found.features.items()}
            )
            # Counter equality ignores zero counts, as a missing row reads as zeros.
            assert {slot: +sums for slot, sums in got.items()} == {
                slot: +sums for slot, sums in expected.items()
            } | ({} if ("", "") in expected else {("", ""): Counter()})
        finally:
            await db.close()

    asyncio.run(run())


async def test_a_window_of_one_hour_finds_the_rows_of_its_hour(db: Db) -> None:
    # SQLite's rows are written through the driver: their bucket text must be the text
    # SQLAlchemy binds when comparing (a driver-formatted datetime sorted outside the window).
    org_id, key = await _key(db)
    await db.usage.record([_report(key, org_id, START, model="gpt-4")])
    found = await db.analytics.key_analytics(key, analytics.Window(Grain.HOUR, START, 1))
    assert [sums.requests for sums in found.series.values()] == [1]
    assert found.models["gpt-4"].requests == 1


async def _pending(db: Db) -> int:
    async with db.unit.read() as conn:
        return len((await conn.execute(select(usage_analytics_pending.c.id))).all())


async def test_a_group_commit_keeps_one_pending_row_that_a_fold_counts_once(db: Db) -> None:
    org_id, key = await _key(db)
    reports = [_report(key, org_id, NOW, model=f"m{i % 3}", feature="chat") for i in range(7)]
    await db.usage.record(reports)
    # The ledger's transaction wrote one pending row, no rollup row.
    assert await _pending(db) == 1
    assert await _stored(db, [key]) == {}
    assert await db.analytics.fold() == 1
    assert await db.analytics.fold() == 0
    assert await _pending(db) == 0
    assert await _stored(db, [key]) == _brute_force(await _ledger(db, [key]))


async def test_a_wide_group_commit_is_split_over_pending_rows(
    db: Db, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fold takes whole pending rows: a group commit of thousands of cells is kept in rows
    of ``PENDING_ROW_CELLS``, so no one row is a bite past the fold's budget."""
    monkeypatch.setattr(store_analytics, "PENDING_ROW_CELLS", 3)
    org_id, key = await _key(db)
    reports = [_report(key, org_id, NOW, model=f"m{i}") for i in range(7)]
    await db.usage.record(reports)
    assert await _pending(db) == 3  # 3 + 3 + 1 cells
    # All repeats (same idempotency keys, new ids): nothing new, nothing more pending.
    await db.usage.record([dataclasses.replace(r, id=ids.new_id("use")) for r in reports])
    assert await _pending(db) == 3
    assert await db.analytics.fold() == 3
    assert await _stored(db, [key]) == _brute_force(await _ledger(db, [key]))


async def test_a_ledger_transaction_that_fails_keeps_nothing_pending(db: Db) -> None:
    org_id, key = await _key(db)

    async def fail(_: Any) -> None:
        raise RuntimeError("the commit never happens")

    with pytest.raises(RuntimeError):
        await db.usage.record([_report(key, org_id, NOW)], fail)
    assert await _pending(db) == 0
    assert await _ledger(db, [key]) == []


async def test_a_fold_that_fails_leaves_its_rows_pending_for_the_next(
    db: Db, monkeypatch: pytest.MonkeyPatch
) -> None:
    org_id, key = await _key(db)
    await db.usage.record([_report(key, org_id, NOW, model="gpt-4")])
    await db.usage.record([_report(key, org_id, NOW, model="claude")])
    real = db.analytics._add_cells

    async def broken(*args: Any) -> None:
        await real(*args)  # the rows are written, then the transaction fails
        raise StorageError("database write failed")

    monkeypatch.setattr(db.analytics, "_add_cells", broken)
    with pytest.raises(StorageError):
        await db.analytics.fold()
    assert await _pending(db) == 2
    assert await _stored(db, [key]) == {}
    monkeypatch.setattr(db.analytics, "_add_cells", real)
    assert await db.analytics.fold() == 2
    assert await _stored(db, [key]) == _brute_force(await _ledger(db, [key]))


async def test_reads_fold_first_so_they_see_every_acknowledged_report(db: Db) -> None:
    org_id, key = await _key(db)
    await db.usage.record([_report(key, org_id, NOW, model="gpt-4", cost_micros=5)])
    window = analytics.Window(Grain.HOUR, analytics.floor(Grain.HOUR, NOW), 1)
    assert (await db.analytics.usage_of_keys([key], window))[key].cost_micros == 5
    await db.usage.record([_report(key, org_id, NOW, model="gpt-4", cost_micros=7)])
    found = await db.analytics.key_analytics(key, window)
    assert found.models["gpt-4"].cost_micros == 12
    assert await _pending(db) == 0


async def test_a_damaged_pending_row_is_dropped_and_the_rest_fold(
    db: Db, caplog: pytest.LogCaptureFixture
) -> None:
    org_id, key = await _key(db)
    await db.usage.record([_report(key, org_id, NOW)])
    async with db.unit.write() as conn:
        for damaged in ("not json", '[["k", 1, "", ""]]', '[["k", 1, "", "", "x"]]'):
            await conn.execute(usage_analytics_pending.insert(), {"cells": damaged})
    await db.usage.record([_report(key, org_id, NOW)])
    with caplog.at_level(logging.ERROR, logger="keyplane.store.analytics"):
        assert await db.analytics.fold() == 5
    assert sum("unreadable; dropped" in r.getMessage() for r in caplog.records) == 3
    assert await _pending(db) == 0
    assert await _stored(db, [key]) == _brute_force(await _ledger(db, [key]))


async def test_a_fold_past_one_chunk_takes_every_pending_row(db: Db) -> None:
    org_id, key = await _key(db)
    for _ in range(FOLD_CHUNK + 3):
        await db.usage.record([_report(key, org_id, NOW, feature="chat")])
    assert await db.analytics.fold() == FOLD_CHUNK + 3
    assert await _stored(db, [key]) == _brute_force(await _ledger(db, [key]))


async def _pending_sizes(db: Db) -> list[int]:
    pending = usage_analytics_pending.c
    async with db.unit.read() as conn:
        rows = await conn.execute(select(pending.id, pending.cells).order_by(pending.id))
        return [len(cells) for _, cells in rows]


async def test_a_fold_transaction_takes_pending_rows_up_to_its_budget(
    db: Db, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decoding and merging pending cells runs on the event loop: one transaction takes rows
    while the characters before each are under ``FOLD_BUDGET`` (always one row at least)."""
    org_id, key = await _key(db)
    for i in range(6):  # batches of different widths, so the rows differ in size
        await db.usage.record([_report(key, org_id, NOW, model=f"m{i}-{n}") for n in range(i + 1)])
    sizes = await _pending_sizes(db)
    monkeypatch.setattr(store_analytics, "FOLD_BUDGET", sizes[0] + sizes[1] + 1)
    async with db.unit.write() as conn:
        taken = await db.analytics._take_pending(conn, wait=True)
    # The third row starts under the budget, the fourth past it.
    assert [len(cells) for _, cells in taken] == sizes[:3]
    assert await _pending_sizes(db) == sizes[3:]
    monkeypatch.setattr(store_analytics, "FOLD_BUDGET", 1)  # smaller than any row
    async with db.unit.write() as conn:
        taken = await db.analytics._take_pending(conn, wait=True)
    assert [len(cells) for _, cells in taken] == sizes[3:4]


async def test_a_fold_held_back_by_its_budget_goes_on_until_nothing_is_pending(
    db: Db, monkeypatch: pytest.MonkeyPatch
) -> None:
    org_id, key = await _key(db)
    for i in range(5):
        await db.usage.record([_report(key, org_id, NOW, model=f"m{i}", feature="chat")])
    monkeypatch.setattr(store_analytics, "FOLD_BUDGET", 1)  # one row per transaction
    assert await db.analytics.fold(wait=False) == 5
    assert await _pending(db) == 0
    assert await _stored(db, [key]) == _brute_force(await _ledger(db, [key]))


async def test_a_reading_fold_waits_for_rows_another_instance_is_folding(
    postgres_database: Database,
) -> None:
    """PostgreSQL: a reader's fold must not skip pending rows another instance's fold holds
    locked (they are not in the rollups yet), but wait for that fold to commit. (SQLite's
    folds take its one write lock in turn.)"""
    first, second = await _open(postgres_database), await _open(postgres_database)
    try:
        org_id, key = await _key(first)
        await first.usage.record([_report(key, org_id, NOW, model="gpt-4")])
        holding, release = asyncio.Event(), asyncio.Event()
        holder: list[int] = []
        real = first.analytics._add_cells

        async def held(conn: Any, cells: Any) -> None:
            await real(conn, cells)
            holder.append((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())
            holding.set()
            await release.wait()  # the transaction stays open, its rows locked

        first.analytics._add_cells = held  # type: ignore[method-assign]
        background = asyncio.create_task(first.analytics.fold(wait=False))
        await holding.wait()
        # Another instance's background fold skips the locked row and folds nothing ...
        assert await second.analytics.fold(wait=False) == 0
        # ... a reader's fold waits for it (PostgreSQL shows it blocked by the holder).
        reader = asyncio.create_task(second.analytics.fold())
        await _until_blocked_by(holder[0])
        assert not reader.done()
        release.set()
        assert await background == 1
        assert await reader == 0
        assert await _stored(second, [key]) == _brute_force(await _ledger(second, [key]))
    finally:
        await first.close()
        await second.close()


async def _until_blocked_by(pid: int) -> None:
    conn = await asyncpg.connect(PG_URL)
    try:
        for _ in range(1200):
            if await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))", pid
            ):
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the reader's fold never waited for the rows held")
    finally:
        await conn.close()
