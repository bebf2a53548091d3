"""Usage analytics: the verify outcome buffer, the rollup folding and pruning loops, and the
queries.

Usage reports are kept pending for the rollups inside the ledger's transaction
(``store/usage.py``) and folded into them in transactions of their own (``store/analytics.py``),
so they are never counted twice or lost; :class:`RollupFolder` folds in the background, and
every read folds first. Verify outcomes are counted in memory on the hot path (a dict update,
no write) and flushed every ``KEYPLANE_ROLLUP_FLUSH_SECONDS``: a crash loses at most the
outcomes of one flush interval. Every instance flushes its own counts with upserts that add.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from keyplane.domain import analytics
from keyplane.domain.analytics import Grain, Retention, Sums, Window
from keyplane.domain.clock import Clock
from keyplane.domain.tenancy import Principal
from keyplane.errors import KeyplaneError, NotFoundError, ValidationError
from keyplane.services.authz import require_scope
from keyplane.services.directory import KeyDirectory
from keyplane.services.supervisor import uninterrupted
from keyplane.store.analytics import AnalyticsStore, Group, GroupBy, KeyAnalytics, Scope

log = logging.getLogger(__name__)

_MINUTE = timedelta(minutes=1)

#: Most groups a grouped query answers (``limit``), and most filter values per filter.
MAX_GROUPS = 1000
MAX_FILTER_VALUES = 100
ORDERS = ("requests", "errors", "cost", "input_tokens", "output_tokens", "verifications", "refused")


class VerdictRecorder:
    """Counts verify outcomes per (key, minute, code) in memory; flushed in one transaction.

    The hot path counts into the current minute's dict by (key, code) only: flooring each
    verdict's time to its minute (a timezone conversion) and hashing a datetime in every key
    cost twenty times the increment itself. A verdict outside the current minute (the clock
    moved on, or back) first folds the current minute into the pending counts.
    """

    _NO_MINUTE = datetime.min.replace(tzinfo=UTC)

    def __init__(self, store: AnalyticsStore, interval: float) -> None:
        self._store = store
        self._interval = interval
        self._pending: Counter[tuple[str, datetime, str]] = Counter()
        self._minute = self._NO_MINUTE
        self._minute_end = self._NO_MINUTE
        self._current: dict[tuple[str, str], int] = {}
        self._lock = asyncio.Lock()

    def record(self, key_id: str, code: str, now: datetime) -> None:
        """Count one outcome (the hot path: a comparison and a dict update)."""
        if not self._minute <= now < self._minute_end:
            self._fold_current()
            self._minute = analytics.floor(Grain.MINUTE, now)
            self._minute_end = self._minute + _MINUTE
        slot = (key_id, code)
        self._current[slot] = self._current.get(slot, 0) + 1

    def _fold_current(self) -> None:
        minute = self._minute
        for (key_id, code), count in self._current.items():
            self._pending[(key_id, minute, code)] += count
        self._current = {}

    @property
    def pending(self) -> int:
        self._fold_current()
        return len(self._pending)

    async def flush(self) -> None:
        """Write what is counted; on failure keep it for the next flush."""
        async with self._lock:
            self._fold_current()
            if not self._pending:
                return
            batch, self._pending = self._pending, Counter()
            try:
                await self._store.add_verdicts(batch)
            except KeyplaneError as exc:
                log.warning("verify outcome flush failed: %s; will retry", type(exc).__name__)
                self._pending.update(batch)

    async def run(self) -> None:
        """Flush every interval until cancelled (the owner flushes once more at stop)."""
        while True:
            await asyncio.sleep(self._interval)
            await uninterrupted(self.flush())


class RollupFolder:
    """Folds pending usage into the rollups every interval (reads fold too: this keeps the
    pending rows few when nobody reads)."""

    def __init__(self, store: AnalyticsStore, interval: float) -> None:
        self._store = store
        self._interval = interval
        # One fold at a time: the final fold at shutdown waits for one already running.
        self._lock = asyncio.Lock()

    async def fold(self) -> None:
        """Fold what is pending, skipping rows another instance is folding; a failure leaves
        the rows pending for the next pass."""
        async with self._lock:
            try:
                await self._store.fold(wait=False)
            except KeyplaneError as exc:
                log.warning("folding usage rollups failed: %s; will retry", type(exc).__name__)

    async def run(self) -> None:
        """Fold every interval until cancelled (the owner folds once more at stop, which
        waits for a fold still in flight)."""
        while True:
            await uninterrupted(self.fold())
            await asyncio.sleep(self._interval)


class RollupPruner:
    """Deletes rollups past their grain's retention and raw events past theirs; idempotent."""

    def __init__(
        self,
        store: AnalyticsStore,
        clock: Clock,
        retention: Retention,
        events_kept: timedelta | None,
        interval: float,
    ) -> None:
        self._store = store
        self._clock = clock
        self._retention = retention
        self._events_kept = events_kept
        self._interval = interval

    async def prune(self) -> dict[str, int]:
        return await self._store.prune(self._clock.now(), self._retention, self._events_kept)

    async def run(self) -> None:
        while True:
            try:
                await uninterrupted(self.prune())
            except KeyplaneError as exc:
                log.warning("pruning usage rollups failed: %s", type(exc).__name__)
            await asyncio.sleep(self._interval)


@dataclass(frozen=True, slots=True)
class Query:
    """A grouped analytics query, as the API parsed it (the service checks the rest)."""

    group_by: GroupBy
    period: str = "24h"
    granularity: str = "hour"
    order_by: str = "requests"
    limit: int = 10
    project_id: str | None = None
    key_ids: tuple[str, ...] = ()
    owners: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    codes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class KeyReport:
    key_id: str
    window: Window
    rollups: KeyAnalytics


class Analytics:
    """Reads the rollups within the caller's reach; every method needs ``usage:read``."""

    def __init__(
        self, store: AnalyticsStore, directory: KeyDirectory, clock: Clock, retention: Retention
    ) -> None:
        self._store = store
        self._directory = directory
        self._clock = clock
        self._retention = retention

    def window(self, period: str, granularity: str) -> Window:
        """The window of ``period`` at ``granularity`` ending now; ValidationError if none."""
        span = analytics.parse_period(period)
        if span is None:
            raise _invalid("period", "a number and a unit, m, h or d (30m, 24h, 7d)")
        try:
            grain = Grain(granularity)
        except ValueError:
            raise _invalid("granularity", "one of minute, hour, day") from None
        found = analytics.window(span, grain, self._clock.now(), self._retention)
        if isinstance(found, str):
            name, _, message = found.partition(": ")
            raise _invalid(name, message)
        return found

    def auto_window(self, period: str) -> Window:
        """``period`` at the finest granularity that covers it (for per-key totals)."""
        span = analytics.parse_period(period)
        if span is None:
            raise _invalid("period", "a number and a unit, m, h or d (30m, 24h, 7d)")
        last = ""
        for grain in (Grain.MINUTE, Grain.HOUR, Grain.DAY):
            found = analytics.window(span, grain, self._clock.now(), self._retention)
            if not isinstance(found, str):
                return found
            last = found
        name, _, message = last.partition(": ")
        raise _invalid(name, message)

    async def key_report(
        self, principal: Principal, key_id: str, period: str, granularity: str
    ) -> KeyReport:
        """One key's analytics over ``period`` (``GET /v1/keys/{id}/analytics``)."""
        require_scope(principal, "usage:read")
        window = self.window(period, granularity)
        entry = await self._directory.by_id(key_id)
        if entry is None or (
            entry.record.org_id != principal.org_id
            or not principal.reaches_project(entry.record.project_id)
        ):
            raise NotFoundError("no such key", code="KEY_NOT_FOUND")
        return KeyReport(key_id, window, await self._store.key_analytics(key_id, window))

    async def grouped(self, principal: Principal, query: Query) -> tuple[Window, list[Group]]:
        """The top groups of the caller's organization (or project) (``GET /v1/analytics``)."""
        require_scope(principal, "usage:read")
        window = self.window(query.period, query.granularity)
        if query.order_by not in ORDERS:
            raise _invalid("order_by", "one of " + ", ".join(ORDERS))
        if not 1 <= query.limit <= MAX_GROUPS:
            raise _invalid("limit", f"between 1 and {MAX_GROUPS}")
        if query.group_by == "code" and query.order_by not in ("verifications", "refused"):
            raise _invalid("order_by", "group_by=code orders by verifications or refused")
        if query.group_by == "model" and query.order_by in ("verifications", "refused"):
            raise _invalid("order_by", "verify outcomes have no model; order by a usage measure")
        for name in ("key_ids", "owners", "models", "codes"):
            if len(getattr(query, name)) > MAX_FILTER_VALUES:
                raise _invalid(name, f"at most {MAX_FILTER_VALUES} values")
        scope = Scope(
            org_id=principal.org_id,
            project_ids=self._projects(principal, query.project_id),
            key_ids=query.key_ids,
            owners=query.owners,
            models=query.models,
            codes=query.codes,
        )
        groups = await self._store.grouped(
            scope, query.group_by, window, query.order_by, query.limit
        )
        return window, groups

    async def usage_of_keys(
        self, principal: Principal, key_ids: Sequence[str], period: str
    ) -> tuple[Window, dict[str, Sums]]:
        """Totals over ``period`` for keys the caller already listed (``include=usage``)."""
        require_scope(principal, "usage:read")
        window = self.auto_window(period)
        return window, await self._store.usage_of_keys(key_ids, window)

    async def export(
        self, principal: Principal, period: str, granularity: str, project_id: str | None
    ) -> tuple[Window, AsyncIterator[list[dict[str, Any]]]]:
        """The rows of the caller's reach, per key and bucket, in chunks."""
        require_scope(principal, "usage:read")
        window = self.window(period, granularity)
        scope = Scope(principal.org_id, self._projects(principal, project_id))
        return window, self._store.export(scope, window)

    @staticmethod
    def _projects(principal: Principal, project_id: str | None) -> tuple[str, ...] | None:
        if project_id is not None and not principal.reaches_project(project_id):
            raise NotFoundError("no such project", code="PROJECT_NOT_FOUND")
        if project_id is not None:
            return (project_id,)
        return None if principal.project_id is None else (principal.project_id,)


def _invalid(name: str, message: str) -> ValidationError:
    return ValidationError(f"{name}: {message}", errors=[{"loc": f"query.{name}", "msg": message}])
