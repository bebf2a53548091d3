"""The usage ledger writer (group commit) and the seeding of live budget counters.

Reports queue up while a transaction is being written; the next transaction takes all of them
(up to ``max_batch``), so under load many reports share one commit and each is acknowledged
only once that commit is done.

Live budget counters (in memory or in Redis) are derived from the ledger. A counter is seeded
by reading the ledger under the lock every report of that key must take to commit, and each
report adds itself to the counters that exist while still holding that lock: so every report
is counted exactly once, by the seed or by the increment (``SqlUsageStore.seed_spent``).
:class:`LedgerSeeder` is that seeding step, handed to the limiters as their
:class:`~keyplane.limits.base.CounterSeeder`; it needs only the store, so limiters and the
ledger writer (which advances the limiter's counters) are built one after the other.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from keyplane.domain import globs
from keyplane.domain.admission import scope_pattern
from keyplane.domain.periods import Reset
from keyplane.domain.usage import BUCKET_OF_RESET, Recorded, UsageEntry
from keyplane.errors import StorageError
from keyplane.limits.base import CounterInstaller, Limiter
from keyplane.metrics import USAGE_BATCH_SIZE, USAGE_REPORTS, USAGE_TRANSACTIONS
from keyplane.store.base import UsageStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Report:
    entry: UsageEntry
    done: asyncio.Future[Recorded]


_STOP = object()


class LedgerSeeder:
    """Seeds live budget counters from the usage ledger (a :class:`CounterSeeder`)."""

    def __init__(self, store: UsageStore) -> None:
        self._store = store
        #: Seeding transactions started, for monitoring.
        self.seeds = 0

    async def seed(
        self,
        key_id: str,
        scope: str,
        reset: Reset,
        period_start: datetime,
        into: CounterInstaller,
    ) -> None:
        """Install the live budget counter of (key, scope) for a period, read from the ledger,
        into the limiter that asked."""

        async def install(costs: dict[str, int]) -> None:
            pattern = scope_pattern(scope)
            if pattern is not None:
                spent = sum(
                    cost
                    for model, cost in costs.items()
                    if model and globs.model_matches(pattern, model)
                )
            else:
                spent = costs.get("", 0)
            await into.install_spent(key_id, scope, reset, period_start, spent)

        self.seeds += 1
        await self._store.seed_spent(key_id, BUCKET_OF_RESET[reset], period_start, install)


class UsageLedger:
    def __init__(self, store: UsageStore, limiter: Limiter, max_batch: int) -> None:
        self._store = store
        self._limiter = limiter
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Report | object] = asyncio.Queue()
        self._closed = False
        self.batches = 0
        self.reports = 0

    async def record(self, entry: UsageEntry) -> Recorded:
        """Write a report to the ledger; return once it is durable."""
        if self._closed:
            raise StorageError("the server is shutting down")
        done: asyncio.Future[Recorded] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Report(entry, done))
        # shield: a client that goes away must not cancel a write others share.
        return await asyncio.shield(done)

    async def run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._write([item for item in batch if isinstance(item, _Report)])
            if _STOP in batch:
                return

    async def close(self) -> None:
        """Refuse new work, finish what is queued."""
        self._closed = True
        self._queue.put_nowait(_STOP)

    async def _count_in_live_counters(self, added: Sequence[UsageEntry]) -> None:
        for entry in added:
            await self._limiter.add_spent(
                entry.key_id, entry.model, entry.cost_micros, entry.recorded_at
            )

    async def _write(self, reports: list[_Report]) -> None:
        if not reports:
            return
        try:
            outcomes = await self._store.record(
                [r.entry for r in reports], self._count_in_live_counters
            )
        except Exception as exc:  # every waiter gets the failure; the writer carries on
            log.warning("usage batch of %d failed: %s", len(reports), type(exc).__name__)
            for report in reports:
                if not report.done.done():
                    report.done.set_exception(exc)
            return
        self.batches += 1
        self.reports += len(reports)
        USAGE_TRANSACTIONS.inc()
        USAGE_REPORTS.inc(len(reports))
        USAGE_BATCH_SIZE.observe(len(reports))
        for report, outcome in zip(reports, outcomes, strict=True):
            if not report.done.done():
                report.done.set_result(outcome)
