"""The limiter contract, and how a limiter gets its budget counters from the ledger.

:class:`Limiter` is the whole interface the services use. One call to :meth:`Limiter.admit`
checks every window, the concurrency slot and every budget of a request and, only if all of
them allow it, consumes them all: all or nothing (see :mod:`keyplane.domain.admission`).

Budgets count micro-credits: *spent* comes from the durable ledger (seeded once per key and
period, then advanced by each committed report), *reserved* is what admitted requests may still
spend. A request is admitted when ``spent + reserved + cost <= limit``, so concurrent verifies
can never take a budget below zero.

A limiter does not know the ledger: it is handed a :class:`CounterSeeder` (in the server, the
ledger's, :class:`keyplane.services.ledger.LedgerSeeder`), which reads what was spent and
installs it through the limiter's own :meth:`CounterInstaller.install_spent`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Hashable, Sequence
from datetime import datetime
from typing import Any, Protocol

from keyplane.domain.admission import Admission, AdmissionResult, Settlement, WindowAsk
from keyplane.domain.periods import Reset


class CounterInstaller(Protocol):
    async def install_spent(
        self, key_id: str, scope: str, reset: Reset, period_start: datetime, spent: int
    ) -> bool:
        """Install a budget counter read from the ledger, unless one for that period exists;
        True when this call installed it."""
        ...


class CounterSeeder(Protocol):
    async def seed(
        self,
        key_id: str,
        scope: str,
        reset: Reset,
        period_start: datetime,
        into: CounterInstaller,
    ) -> None:
        """Read what (key id, scope ("" or a model pattern)) spent in the period (reset, period
        start) and install it with ``into.install_spent``, under the lock reports take to
        commit, so no report is missed or counted twice."""
        ...


class Limiter(CounterInstaller, Protocol):
    async def admit(self, admission: Admission, now: datetime) -> AdmissionResult:
        """Check and (only if everything allows it) consume, in one atomic step."""
        ...

    async def settle(self, settlement: Settlement, now: datetime) -> None:
        """Release the request's reservation and slot; correct token estimates."""
        ...

    async def add_spent(
        self, key_id: str, model: str | None, cost: int, recorded_at: datetime
    ) -> None:
        """Advance the live budget counters that exist by a report the ledger is committing.

        Never creates a counter: a missing one is seeded from the ledger, report included.
        """
        ...

    async def expire(self, now: datetime) -> int:
        """Release reservations and slots past their hold time; return how many."""
        ...

    async def reset(self, key_id: str, windows: Sequence[WindowAsk], slots: bool) -> int:
        """An operator's reset: make ``windows`` full again and, when ``slots``, free every
        concurrency slot the key holds (their reservations keep their budget holds, and
        settle without giving a slot back). One atomic step; returns the slots freed."""
        ...


class SingleFlight:
    """Runs one task per key at a time; every caller for that key awaits the same one.

    Seeding a cold budget counter is a database transaction: a thousand verifies waiting for
    the same counter must start one, not a thousand (they exhausted PostgreSQL's pool).
    """

    def __init__(self) -> None:
        self._running: dict[Hashable, asyncio.Task[None]] = {}

    async def run(self, key: Hashable, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        task = self._running.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(work())
            self._running[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        # shield: a verify that goes away must not cancel the work others wait for.
        await asyncio.shield(task)

    def _finished(self, key: Hashable, task: asyncio.Task[None]) -> None:
        if self._running.get(key) is task:
            del self._running[key]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter that is still there has seen it
