"""Analytics rollups: :class:`AnalyticsStore` and its SQL implementation.

``usage_analytics`` sums usage reports per key, grain, bucket and dimension value. The ledger's
transaction (``SqlUsageStore.record``) adds a ``usage_analytics_pending`` row per group commit
(one per ``PENDING_ROW_CELLS`` cells), the batch's reports summed per key, minute, model and
feature (:func:`pending_cells`); :meth:`SqlAnalyticsStore.fold` deletes pending rows and adds
them to the rollups in one transaction, a bounded bite at a time. So a report is counted exactly
once whatever crashes when, and the commit every report waits for writes one row instead of
every rollup row it touches. A background pass folds every second or so, and every read folds
first, so a read sees every report acknowledged before it. ``verify_analytics`` counts verify
outcomes, flushed from memory in batches (``services/analytics.py``). Both tables are written by
upserts that add, so folds and instances add up; on PostgreSQL in key order, so concurrent
writers lock rows in one order.
"""

from __future__ import annotations

import json
import logging
import operator
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

from sqlalchemy import Select, and_, case, delete, func, or_, select, text, union_all
from sqlalchemy.ext.asyncio import AsyncConnection

from keyplane.domain import analytics
from keyplane.domain.analytics import Cell, Countable, Grain, Retention, Sums, Window
from keyplane.store.tables import (
    api_keys,
    usage_analytics,
    usage_analytics_pending,
    usage_events,
    verify_analytics,
)
from keyplane.store.unit import UnitOfWork

log = logging.getLogger(__name__)

#: Rows a pruning statement deletes at most, so one pass never holds a long transaction.
PRUNE_CHUNK = 5000
#: Rows an export reads per query.
EXPORT_CHUNK = 1000
#: Pending rows (group commits) one fold transaction takes at most.
FOLD_CHUNK = 100
#: Characters of pending cells one fold transaction takes, past its first row: decoding and
#: merging them runs on the event loop, so a backlog of wide batches (a group commit holds
#: up to ``KEYPLANE_USAGE_BATCH_MAX`` reports, each its own cell at worst) is folded a few
#: milliseconds at a time: about 500 cells, and one row of ``PENDING_ROW_CELLS`` more at most.
FOLD_BUDGET = 64 * 1024
#: Cells one pending row holds at most (a group commit's cells are split over rows).
PENDING_ROW_CELLS = 256
#: Cardinality cap decisions (key id, day start, dimension, value) remembered, up to this
#: many (a decision never changes afterwards: day rows outlive the day).
_DECIDED_MEMORY = 100_000

#: A usage rollup row's columns: its identity (``analytics.RowKey``), then its measures.
_USAGE_COLUMNS = ("key_id", "grain", "bucket_start", "dimension", "value", *analytics.MEASURES)


def _json_upsert() -> Any:
    """PostgreSQL's batch upsert of usage rollup rows: one JSON array of rows (identity, the
    bucket start in epoch seconds, then the measures), unnested in order (``WITH
    ORDINALITY`` keeps the sorted, lock-ordering row order), adding measures.

    JSON, not one array parameter per column: asyncpg checks every element of an array
    parameter on its own (a fold of 2,000 rows made half a million checks), while the JSON
    is one string, encoded in C here and parsed in C by the server.
    """
    # Built from this module's constant column names only (no input reaches it).
    columns = ", ".join(_USAGE_COLUMNS)
    fields = ["r->>0", "r->>1", "to_timestamp((r->>2)::bigint)", "r->>3", "r->>4"]
    fields += [f"(r->>{5 + index})::bigint" for index in range(len(analytics.MEASURES))]
    sums = ", ".join(f"{m} = usage_analytics.{m} + excluded.{m}" for m in analytics.MEASURES)
    return text(
        f"INSERT INTO usage_analytics ({columns}) SELECT {', '.join(fields)} "  # noqa: S608
        "FROM jsonb_array_elements(CAST(:rows AS jsonb)) WITH ORDINALITY AS t(r, n) ORDER BY n "
        f"ON CONFLICT (key_id, grain, bucket_start, dimension, value) DO UPDATE SET {sums}"
    )


_JSON_UPSERT = _json_upsert()

#: SQLite: a pending row's insert as the driver takes it (the ledger sends it in one trip to
#: aiosqlite's thread with its rollups, ``store/usage.py``).
PENDING_INSERT = "INSERT INTO usage_analytics_pending (cells) VALUES (?)"


def pending_cells(reports: Sequence[Countable]) -> list[str]:
    """What the ledger's transaction keeps of its new reports for the rollups (the ``cells``
    of its ``usage_analytics_pending`` rows): their cells, as JSON rows of key id, minute
    (epoch seconds), model, feature, then the measures, ``PENDING_ROW_CELLS`` to a row at
    most (a fold takes whole rows: a group commit's thousands of cells would be one bite);
    :meth:`SqlAnalyticsStore.fold` counts them in."""
    cells = [
        [key_id, minute, model, feature, *vector]
        for (key_id, minute, model, feature), vector in analytics.cells_of(reports).items()
    ]
    return [
        json.dumps(cells[start : start + PENDING_ROW_CELLS], separators=(",", ":"))
        for start in range(0, len(cells), PENDING_ROW_CELLS)
    ]


GroupBy = Literal["key", "owner", "project", "model", "code"]
#: What a group can be ordered by: usage measures, or verify outcomes.
USAGE_ORDERS = ("requests", "errors", "cost", "input_tokens", "output_tokens")
VERIFY_ORDERS = ("verifications", "refused")


@dataclass(frozen=True, slots=True)
class Scope:
    """Whose rollups a query reads: an organization, optionally narrowed to projects, keys,
    owners, models and verdict codes."""

    org_id: str
    project_ids: tuple[str, ...] | None = None
    key_ids: tuple[str, ...] = ()
    owners: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    codes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class KeyAnalytics:
    """What a key's analytics read: the series of totals, the breakdowns, verify outcomes."""

    series: dict[datetime, Sums]
    models: dict[str, Sums]
    features: dict[str, Sums]
    verdicts: dict[datetime, dict[str, int]]


@dataclass(frozen=True, slots=True)
class Group:
    """One row of a grouped query."""

    name: str | None
    usage: Sums
    verdicts: dict[str, int]


class AnalyticsStore(Protocol):
    """Analytics rollups: written with the ledger and from the verify outcome buffer."""

    async def add_verdicts(self, counts: Mapping[tuple[str, datetime, str], int]) -> None:
        """Add verify outcome counts per (key id, minute, code) to every grain, in one
        transaction; concurrent writers add up."""
        ...

    async def fold(self, *, wait: bool = True) -> int:
        """Count pending usage into the rollups; answers the pending rows folded. With
        ``wait``, once it returns every report acknowledged before the call is counted."""
        ...

    async def key_analytics(self, key_id: str, window: Window) -> KeyAnalytics:
        """One key's rollups over ``window`` (the caller checked the key's tenancy)."""
        ...

    async def grouped(
        self, scope: Scope, group_by: GroupBy, window: Window, order_by: str, limit: int
    ) -> list[Group]:
        """The top ``limit`` groups of ``scope``'s rollups over ``window`` by ``order_by``
        (descending, then by name); only the organization's keys are ever read."""
        ...

    async def usage_of_keys(self, key_ids: Sequence[str], window: Window) -> dict[str, Sums]:
        """Totals per key over ``window``; every asked key is in the answer."""
        ...

    def export(self, scope: Scope, window: Window) -> AsyncIterator[list[dict[str, Any]]]:
        """The scope's total rows over ``window``, per key and bucket, in chunks (bucket, key
        order): bounded memory whatever the size."""
        ...

    async def prune(
        self, now: datetime, retention: Retention, events_kept: timedelta | None
    ) -> dict[str, int]:
        """Delete rollup rows past their grain's retention and, when ``events_kept`` is set,
        raw usage events older than that; idempotent. Answers the rows deleted per table."""
        ...


class SqlAnalyticsStore:
    """:class:`AnalyticsStore` over the shared unit of work."""

    def __init__(self, unit: UnitOfWork, max_values: int = 100) -> None:
        self._unit = unit
        #: Most distinct models (and features) one key gets rows for per day; the rest are
        #: counted as ``analytics.OTHER``. Instances check it on their own, so concurrent
        #: batches may pass it by a few values, never by more than they write at once.
        self.max_values = max_values
        #: What each (key id, day start, dimension, value) is stored as (itself or OTHER).
        self._decided: dict[analytics.ValueSlot, str] = {}
        self._usage_upsert: Any = None
        self._sqlite_usage_upsert: tuple[str, Callable[[datetime], Any]] | None = None
        self._verdict_upsert: Any = None

    # -- writes --------------------------------------------------------------------------

    async def fold(self, *, wait: bool = True) -> int:
        """Move pending usage into the rollups, up to ``FOLD_CHUNK`` pending rows per
        transaction (deleted and counted together: each once, whatever fails when).

        ``wait`` (the reads): on PostgreSQL, wait for pending rows another fold has locked
        rather than skip them, so once this returns every report acknowledged before the
        call is in the rollups; and first look whether anything is pending at all, so a read
        takes no write lock when nothing is. The background pass skips locked rows instead.
        """
        if wait and not await self._anything_pending():
            return 0
        folded = 0
        while True:
            async with self._unit.write() as conn:
                found = await self._take_pending(conn, wait=wait)
                if found:
                    # In id order, the order the reports were committed in (the order the
                    # cardinality cap admits values in).
                    cells: dict[Cell, list[int]] = {}
                    for row_id, text in found:
                        analytics.merge_cells(cells, _decode(row_id, text))
                    await self._add_cells(conn, cells)
            folded += len(found)
            if len(found) < FOLD_CHUNK and sum(len(text) for _, text in found) < FOLD_BUDGET:
                return folded  # neither bound held rows back: none were left

    async def _take_pending(self, conn: AsyncConnection, *, wait: bool) -> list[Any]:
        """Delete the oldest pending rows, up to ``FOLD_CHUNK`` rows and ``FOLD_BUDGET``
        characters past the first, and answer them (id, cells) in id order."""
        pending = usage_analytics_pending.c
        oldest = (
            select(pending.id, func.length(pending.cells).label("size"))
            .order_by(pending.id)
            .limit(FOLD_CHUNK)
        )
        if not self._unit.is_sqlite:
            # In id order: concurrent folds lock pending rows in one order too. (A row
            # locked here but past the budget stays pending, locked until this commits.)
            oldest = oldest.with_for_update(skip_locked=not wait)
        chunk = oldest.subquery()
        before = func.sum(chunk.c.size).over(order_by=chunk.c.id) - chunk.c.size
        sized = select(chunk.c.id, before.label("before")).subquery()
        within = select(sized.c.id).where(sized.c.before < FOLD_BUDGET)
        # One statement that starts with the write: on SQLite a transaction that reads first
        # cannot take the write lock while another connection holds it.
        taken = delete(usage_analytics_pending).where(pending.id.in_(within.scalar_subquery()))
        return sorted((await conn.execute(taken.returning(pending.id, pending.cells))).all())

    async def _anything_pending(self) -> bool:
        async with self._unit.read() as conn:
            found = await conn.execute(select(usage_analytics_pending.c.id).limit(1))
            return found.first() is not None

    async def _add_cells(self, conn: AsyncConnection, cells: Mapping[Cell, list[int]]) -> None:
        """Add cells to their rollup rows (minute, hour and day; totals, models, features)."""
        if not cells:
            return
        value_of = await self._capped_values(conn, cells)
        rows = analytics.rows_of_cells(cells, value_of)
        if not self._unit.is_sqlite:
            # Sorted: concurrent transactions (several instances) lock rows in one order.
            ordered = [[*slot, *measures] for slot, measures in sorted(rows.items())]
            await conn.execute(_JSON_UPSERT, {"rows": json.dumps(ordered, separators=(",", ":"))})
            return
        # SQLite: the same upsert, handed to the driver as tuples (through SQLAlchemy, binding
        # 24 parameters per row was most of the rollups' CPU), unsorted (one writer at a time
        # locks nothing row by row). The bucket starts go through the column's own bind
        # processor, so the stored text is exactly what every other statement writes and
        # compares.
        sql, to_text = self._sqlite_upsert(conn)
        texts = {
            start: to_text(datetime.fromtimestamp(start, UTC)) for start in {s[2] for s in rows}
        }
        await conn.exec_driver_sql(
            sql,
            [
                (k, grain, texts[start], d, v, *measures)
                for (k, grain, start, d, v), measures in rows.items()
            ],
        )

    async def _capped_values(
        self, conn: AsyncConnection, cells: Mapping[Cell, list[int]]
    ) -> Mapping[analytics.ValueSlot, str]:
        """What each model and feature value of ``cells`` is stored as, per key and day: the
        value, or ``OTHER`` once the key's cap for that day is full. A decision is final (rows
        are never taken back), so this process makes each once."""
        if len(self._decided) > _DECIDED_MEMORY:
            self._decided.clear()
        wanted: list[analytics.ValueSlot] = []
        for key_id, minute, model, feature in cells:
            day = analytics.epoch_day(minute)
            if model and (key_id, day, "model", model) not in self._decided:
                wanted.append((key_id, day, "model", model))
            if feature and (key_id, day, "feature", feature) not in self._decided:
                wanted.append((key_id, day, "feature", feature))
        if wanted:
            # Once each, in first-seen order (the order the cap admits values in).
            await self._decide(conn, list(dict.fromkeys(wanted)))
        return self._decided

    async def _decide(self, conn: AsyncConnection, wanted: list[analytics.ValueSlot]) -> None:
        """Decide ``wanted`` from how many values each key's day holds and which of the
        wanted ones it holds already: not every value it holds (up to ``max_values`` per
        key, day and dimension, read again by each fold that meets a new one)."""
        usage = usage_analytics.c
        days = sorted({slot[1] for slot in wanted})
        in_scope = (
            usage.key_id.in_(sorted({slot[0] for slot in wanted})),
            usage.grain == Grain.DAY.value,
            usage.bucket_start.in_([datetime.fromtimestamp(day, UTC) for day in days]),
            usage.dimension.in_(analytics.DIMENSIONS),
        )
        group = (usage.key_id, usage.bucket_start, usage.dimension)
        counted = select(*group, func.count()).where(*in_scope).group_by(*group)
        values = sorted({slot[3] for slot in wanted} | {analytics.OTHER})
        held_query = select(*group, usage.value).where(*in_scope, usage.value.in_(values))
        held_count: dict[tuple[str, int, str], int] = {}
        for key_id, start, dimension, count in await conn.execute(counted):
            held_count[(key_id, int(start.timestamp()), dimension)] = count
        held: set[analytics.ValueSlot] = set()
        for key_id, start, dimension, value in await conn.execute(held_query):
            held.add((key_id, int(start.timestamp()), dimension, value))
        for slot in wanted:
            key_id, day, dimension, value = slot
            if slot in held:
                self._decided[slot] = value
                continue
            kept = (key_id, day, dimension)
            count = held_count.get(kept, 0)
            if count < self.max_values:
                held.add(slot)
                held_count[kept] = count + 1
                self._decided[slot] = value
                continue
            other = (key_id, day, dimension, analytics.OTHER)
            if other not in held:  # the OTHER row is one of the values too
                held.add(other)
                held_count[kept] = count + 1
            self._decided[slot] = analytics.OTHER

    async def add_verdicts(self, counts: Mapping[tuple[str, datetime, str], int]) -> None:
        """Add verify outcome counts to every grain in one transaction."""
        if not counts:
            return
        rows = [
            {"key_id": key_id, "grain": grain, "bucket_start": start, "code": code, "count": n}
            for (key_id, grain, start, code), n in sorted(analytics.verdict_rows(counts).items())
        ]
        async with self._unit.write() as conn:
            await conn.execute(self._verdict_statement(), rows)

    def _usage_statement(self) -> Any:
        # Built once: building an upsert costs more than running it.
        if self._usage_upsert is None:
            upsert = self._unit.insert(usage_analytics)
            self._usage_upsert = upsert.on_conflict_do_update(
                index_elements=["key_id", "grain", "bucket_start", "dimension", "value"],
                set_={
                    name: usage_analytics.c[name] + upsert.excluded[name]
                    for name in analytics.MEASURES
                },
            )
        return self._usage_upsert

    def _sqlite_upsert(self, conn: AsyncConnection) -> tuple[str, Callable[[datetime], Any]]:
        """The usage upsert compiled for SQLite (positional, ``_USAGE_COLUMNS`` order), and
        the bucket start's bind processor; built once."""
        if self._sqlite_usage_upsert is None:
            compiled = self._usage_statement().compile(dialect=conn.dialect)
            if tuple(compiled.positiontup or ()) != _USAGE_COLUMNS:
                raise AssertionError("the usage upsert's parameters changed order")
            # The dialect's implementation of the type (SQLite's DATETIME text format), as
            # SQLAlchemy's own statements bind it; the bare type would let the driver format.
            column_type = usage_analytics.c.bucket_start.type
            processor = column_type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
            if processor is None:
                raise AssertionError("UTCDateTime has a bind processor")
            self._sqlite_usage_upsert = (str(compiled), processor)
        return self._sqlite_usage_upsert

    def _verdict_statement(self) -> Any:
        if self._verdict_upsert is None:
            upsert = self._unit.insert(verify_analytics)
            self._verdict_upsert = upsert.on_conflict_do_update(
                index_elements=["key_id", "grain", "bucket_start", "code"],
                set_={"count": verify_analytics.c["count"] + upsert.excluded["count"]},
            )
        return self._verdict_upsert

    # -- reads ---------------------------------------------------------------------------

    async def key_analytics(self, key_id: str, window: Window) -> KeyAnalytics:
        """One key's series, model and feature breakdowns and verify outcomes."""
        await self.fold()
        usage = usage_analytics.c
        in_window = and_(
            usage.key_id == key_id,
            usage.grain == window.grain.value,
            usage.bucket_start >= window.start,
            usage.bucket_start < window.end,
        )
        series_query = select(usage.bucket_start, *_measures()).where(
            in_window, usage.dimension == ""
        )
        breakdown_query = _breakdown_query(key_id, window)
        verify = verify_analytics.c
        verdict_query = select(verify.bucket_start, verify.code, verify["count"]).where(
            verify.key_id == key_id,
            verify.grain == window.grain.value,
            verify.bucket_start >= window.start,
            verify.bucket_start < window.end,
        )
        result = KeyAnalytics({}, {}, {}, {})
        async with self._unit.read() as conn:
            for row in await conn.execute(series_query):
                result.series[row[0]] = Sums.of_ints(row, 1)
            for row in await conn.execute(breakdown_query):
                target = result.models if row[0] == "model" else result.features
                target[row[1]] = Sums.of_measures(row[2:])
            for row in await conn.execute(verdict_query):
                result.verdicts.setdefault(row.bucket_start, {})[row.code] = row._mapping["count"]
        return result

    async def grouped(
        self, scope: Scope, group_by: GroupBy, window: Window, order_by: str, limit: int
    ) -> list[Group]:
        """Top groups by ``order_by``: the ordering table is queried with the limit, the
        other one only for the groups that made it."""
        await self.fold()
        by_verdicts = order_by in VERIFY_ORDERS or group_by == "code"
        if by_verdicts:
            ranked = await self._verdict_groups(scope, group_by, window, order_by, limit, None)
            names = [name for name, _ in ranked]
            usage = {}
            if group_by != "code":
                usage = dict(
                    await self._usage_groups(scope, group_by, window, "requests", None, names)
                )
            return [Group(name, usage.get(name, Sums()), verdicts) for name, verdicts in ranked]
        ranked_usage = await self._usage_groups(scope, group_by, window, order_by, limit, None)
        names = [name for name, _ in ranked_usage]
        verdicts = {}
        if group_by != "model":
            verdicts = dict(
                await self._verdict_groups(scope, group_by, window, "verifications", None, names)
            )
        return [Group(name, sums, verdicts.get(name, {})) for name, sums in ranked_usage]

    async def _usage_groups(
        self,
        scope: Scope,
        group_by: GroupBy,
        window: Window,
        order_by: str,
        limit: int | None,
        names: Sequence[str | None] | None,
    ) -> list[tuple[str | None, Sums]]:
        usage = usage_analytics.c
        dimension = "model" if group_by == "model" or scope.models else ""
        column: Any = usage.value if group_by == "model" else _key_column(group_by)
        query = (
            select(column.label("name"), *_summed())
            .select_from(usage_analytics.join(api_keys, api_keys.c.id == usage.key_id))
            .where(
                *_scope_filters(scope),
                usage.grain == window.grain.value,
                usage.bucket_start >= window.start,
                usage.bucket_start < window.end,
                usage.dimension == dimension,
            )
            .group_by(column)
        )
        if scope.models:
            query = query.where(usage.value.in_(scope.models))
        query = _only_names(query, column, names)
        if limit is not None:
            measure = "cost_micros" if order_by == "cost" else order_by
            query = query.order_by(func.sum(usage[measure]).desc(), column).limit(limit)
        async with self._unit.read() as conn:
            return [(row.name, Sums.of(row._mapping)) for row in await conn.execute(query)]

    async def _verdict_groups(
        self,
        scope: Scope,
        group_by: GroupBy,
        window: Window,
        order_by: str,
        limit: int | None,
        names: Sequence[str | None] | None,
    ) -> list[tuple[str | None, dict[str, int]]]:
        verify = verify_analytics.c
        column: Any = verify.code if group_by == "code" else _key_column(group_by)
        filters = [
            *_scope_filters(scope),
            verify.grain == window.grain.value,
            verify.bucket_start >= window.start,
            verify.bucket_start < window.end,
        ]
        if scope.codes:
            filters.append(verify.code.in_(scope.codes))
        joined = verify_analytics.join(api_keys, api_keys.c.id == verify.key_id)
        if limit is not None:
            # Rank first (one row per group), then read the codes of the winners only.
            measure = func.sum(verify["count"])
            if order_by == "refused":
                measure = func.sum(case((verify.code != "VALID", verify["count"]), else_=0))
            ranked = (
                select(column.label("name"))
                .select_from(joined)
                .where(*filters)
                .group_by(column)
                .order_by(measure.desc(), column)
                .limit(limit)
            )
            async with self._unit.read() as conn:
                names = [row.name for row in await conn.execute(ranked)]
            if not names:
                return []
        query = (
            select(column.label("name"), verify.code, func.sum(verify["count"]).label("count"))
            .select_from(joined)
            .where(*filters)
            .group_by(column, verify.code)
        )
        query = _only_names(query, column, names)
        found: dict[str | None, dict[str, int]] = {}
        async with self._unit.read() as conn:
            for row in await conn.execute(query):
                found.setdefault(row.name, {})[row.code] = int(row._mapping["count"])
        if names is None:
            return list(found.items())
        return [(name, found.get(name, {})) for name in names]

    async def usage_of_keys(self, key_ids: Sequence[str], window: Window) -> dict[str, Sums]:
        """Totals per key over ``window``."""
        totals = {key_id: Sums() for key_id in key_ids}
        if not key_ids:
            return totals
        await self.fold()
        usage = usage_analytics.c
        query = (
            select(usage.key_id, *_summed())
            .where(
                usage.key_id.in_(list(key_ids)),
                usage.grain == window.grain.value,
                usage.bucket_start >= window.start,
                usage.bucket_start < window.end,
                usage.dimension == "",
            )
            .group_by(usage.key_id)
        )
        async with self._unit.read() as conn:
            for row in await conn.execute(query):
                totals[row.key_id] = Sums.of(row._mapping)
        return totals

    async def export(self, scope: Scope, window: Window) -> AsyncIterator[list[dict[str, Any]]]:
        """Chunks of total rows, keyset-paginated on (bucket start, key id)."""
        await self.fold()
        usage = usage_analytics.c
        after: tuple[datetime, str] | None = None
        while True:
            query = (
                select(
                    usage.bucket_start,
                    usage.key_id,
                    api_keys.c.project_id,
                    api_keys.c.owner,
                    *_measures(),
                )
                .select_from(usage_analytics.join(api_keys, api_keys.c.id == usage.key_id))
                .where(
                    *_scope_filters(scope),
                    usage.grain == window.grain.value,
                    usage.bucket_start >= window.start,
                    usage.bucket_start < window.end,
                    usage.dimension == "",
                )
                .order_by(usage.bucket_start, usage.key_id)
                .limit(EXPORT_CHUNK)
            )
            if after is not None:
                query = query.where(
                    or_(
                        usage.bucket_start > after[0],
                        and_(usage.bucket_start == after[0], usage.key_id > after[1]),
                    )
                )
            async with self._unit.read() as conn:
                rows = [dict(row._mapping) for row in await conn.execute(query)]
            if not rows:
                return
            yield rows
            if len(rows) < EXPORT_CHUNK:
                return
            after = (rows[-1]["bucket_start"], rows[-1]["key_id"])

    # -- retention -----------------------------------------------------------------------

    async def prune(
        self, now: datetime, retention: Retention, events_kept: timedelta | None
    ) -> dict[str, int]:
        """Delete what is past retention, a chunk per transaction."""
        # Folded first: pending usage would otherwise bring back rows pruned meanwhile.
        await self.fold()
        deleted = {"usage_analytics": 0, "verify_analytics": 0, "usage_events": 0}
        for grain in Grain:
            kept = retention.of(grain)
            if kept is None:
                continue
            cutoff = analytics.floor(grain, now - kept)
            for table, name in (
                (usage_analytics, "usage_analytics"),
                (verify_analytics, "verify_analytics"),
            ):
                # One statement: the (grain, bucket start) index finds the rows, and pruning
                # every few minutes keeps each pass to a few minutes' rows.
                async with self._unit.write() as conn:
                    result = await conn.execute(
                        delete(table).where(
                            table.c.grain == grain.value, table.c.bucket_start < cutoff
                        )
                    )
                deleted[name] += result.rowcount or 0
        if events_kept is not None:
            cutoff = now - events_kept
            while True:
                async with self._unit.write() as conn:
                    ids = (
                        (
                            await conn.execute(
                                select(usage_events.c.id)
                                .where(usage_events.c.recorded_at < cutoff)
                                .limit(PRUNE_CHUNK)
                            )
                        )
                        .scalars()
                        .all()
                    )
                    if ids:
                        await conn.execute(delete(usage_events).where(usage_events.c.id.in_(ids)))
                deleted["usage_events"] += len(ids)
                if len(ids) < PRUNE_CHUNK:
                    break
        return deleted


def _breakdown_query(key_id: str, window: Window) -> Select[Any]:
    """A key's model and feature rows over ``window``, summed per (dimension, value)."""
    usage = usage_analytics.c
    # Whole days from day rows, the edges from hour rows (analytics.covering): 30 days of
    # hours read ~25 rows per value instead of 720. One index range per part (an OR of the
    # parts would make SQLite walk all the key's rows).
    parts = union_all(
        *(
            select(usage.dimension, usage.value, *_measures()).where(
                usage.key_id == key_id,
                usage.grain == grain.value,
                usage.dimension.in_(analytics.DIMENSIONS),
                usage.bucket_start >= start,
                usage.bucket_start < end,
            )
            for grain, start, end in analytics.covering(window)
        )
    ).subquery()
    return select(
        parts.c.dimension,
        parts.c.value,
        *(func.sum(parts.c[name]).label(name) for name in analytics.MEASURES),
    ).group_by(parts.c.dimension, parts.c.value)


def _measures() -> list[Any]:
    return [usage_analytics.c[name] for name in analytics.MEASURES]


def _summed() -> list[Any]:
    return [func.sum(usage_analytics.c[name]).label(name) for name in analytics.MEASURES]


def _key_column(group_by: GroupBy) -> Any:
    return {"key": api_keys.c.id, "owner": api_keys.c.owner, "project": api_keys.c.project_id}[
        group_by
    ]


def _scope_filters(scope: Scope) -> list[Any]:
    filters: list[Any] = [api_keys.c.org_id == scope.org_id]
    if scope.project_ids is not None:
        filters.append(api_keys.c.project_id.in_(scope.project_ids))
    if scope.key_ids:
        filters.append(api_keys.c.id.in_(scope.key_ids))
    if scope.owners:
        filters.append(api_keys.c.owner.in_(scope.owners))
    return filters


def _only_names(query: Select[Any], column: Any, names: Sequence[str | None] | None) -> Select[Any]:
    if names is None:
        return query
    present = [name for name in names if name is not None]
    condition = column.in_(present)
    if None in names:
        condition = or_(condition, column.is_(None))
    return query.where(condition)


def _decode(row_id: int, text: str) -> dict[tuple[str, int, str, str], list[int]]:
    """A pending row's cells, the minute still in epoch seconds; none (logged) when the row is
    not what :func:`pending_cells` wrote, so one damaged row never holds every later fold."""
    cells: dict[tuple[str, int, str, str], list[int]] = {}
    try:
        for key_id, minute, model, feature, *vector in json.loads(text):
            # Checked whole before any of it is counted (in C: a fold reads thousands).
            if len(vector) != len(analytics.MEASURES) or set(map(type, vector)) != {int}:
                raise ValueError("measures")
            if {type(key_id), type(model), type(feature)} != {str} or type(minute) is not int:
                raise ValueError("cell")
            if not _EPOCH_RANGE[0] <= minute <= _EPOCH_RANGE[1] or minute % 60:
                raise ValueError("minute")
            cell = (key_id, minute, model, feature)
            summed = cells.get(cell)
            cells[cell] = vector if summed is None else list(map(operator.add, summed, vector))
    except (ValueError, TypeError):
        log.error("pending usage rollup row %d is unreadable; dropped", row_id)
        return {}
    return cells


#: The minutes a pending cell may name (what ``datetime.fromtimestamp`` takes, in UTC).
_EPOCH_RANGE = (0, int(datetime(9999, 12, 31, tzinfo=UTC).timestamp()))
