"""Shared limits that survive a Redis outage.

Verify must keep answering when Redis is down (the Redis limiter raises
:class:`~keyplane.errors.LimiterUnavailableError`). :class:`ResilientLimiter` sends everything to
the shared :class:`RedisLimiter` and, when Redis fails, falls back for a while to what the
operator chose (``KEYPLANE_LIMITS_ON_REDIS_FAILURE``):

* ``fallback`` (default): an in-process limiter with every window and concurrency limit divided
  by ``KEYPLANE_EXPECTED_INSTANCES``, so N instances together stay near the global limit; budgets
  come from the database ledger as always;
* ``open``: admit without limits; ``closed``: refuse with RATE_LIMITED.

It tries Redis again after ``retry_interval`` seconds: one caller probes while the others go on
with the fallback, and Redis serves again only once the probe succeeded. Reports committed while
Redis was unreachable could not advance the shared budget counters, so the probe first drops
those counters (they are seeded again from the ledger); no call reaches Redis before that is
done, so none is admitted against a stale counter.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Literal

from keyplane.domain import gcra
from keyplane.domain.admission import Admission, AdmissionResult, Settlement, WindowAsk
from keyplane.domain.decisions import Code
from keyplane.domain.periods import Reset
from keyplane.errors import CountersUnsettledError, LimiterUnavailableError
from keyplane.limits.memory import MemoryLimiter
from keyplane.limits.redis import RedisLimiter

log = logging.getLogger(__name__)

FailureMode = Literal["fallback", "open", "closed"]


class ResilientLimiter:
    def __init__(
        self,
        primary: RedisLimiter,
        local: MemoryLimiter,
        *,
        mode: FailureMode = "fallback",
        instances: int = 1,
        retry_interval: float = 1.0,
        sweep_interval: float = 60.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._primary = primary
        self._local = local
        self._mode = mode
        self._instances = max(1, instances)
        self._retry_interval = retry_interval
        self._monotonic = monotonic
        self._retry_at = 0.0
        self._sweep_interval = sweep_interval
        self._next_sweep = 0.0
        self._down = False
        self._recovering = asyncio.Lock()
        self._missed_spending = False
        #: Verifies answered without Redis, for monitoring.
        self.fallbacks = 0

    @property
    def degraded(self) -> bool:
        return self._down

    @property
    def state_losses(self) -> int:
        """API keys whose long windows and slots Redis was found to have lost."""
        return self._primary.losses

    def _failed(self, exc: LimiterUnavailableError) -> None:
        if not self._down:
            cause = exc.__cause__ or exc
            log.warning(
                "Redis unreachable (%s): limits fall back to %s", type(cause).__name__, self._mode
            )
        self._down = True
        self._retry_at = self._monotonic() + self._retry_interval

    async def _recover(self) -> bool:
        """Whether Redis serves again; at most one caller at a time probes, when it is due."""
        if self._recovering.locked() or self._monotonic() < self._retry_at:
            return False
        async with self._recovering:
            try:
                if self._missed_spending:
                    # Reports were committed that the shared counters never heard of.
                    await self._primary.forget_spent()
                    self._missed_spending = False
                else:
                    await self._primary.ping()
            except LimiterUnavailableError as exc:
                self._failed(exc)
                return False
            self._down = False
        log.warning("Redis reachable again: shared limits resumed")
        return True

    async def _try(self, call: Callable[[], Awaitable[object]]) -> bool:
        if self._down and not await self._recover():
            return False
        try:
            await call()
        except LimiterUnavailableError as exc:
            self._failed(exc)
            return False
        return True

    async def admit(self, admission: Admission, now: datetime) -> AdmissionResult:
        result: list[AdmissionResult] = []

        async def shared() -> None:
            result.append(await self._primary.admit(admission, now))

        try:
            if await self._try(shared):
                return result[0]
        except CountersUnsettledError:
            log.info("budget counters in flux on Redis: this verify uses the fallback")
        self.fallbacks += 1
        if self._mode == "open":
            return AdmissionResult(None, ())
        if self._mode == "closed":
            return AdmissionResult(Code.RATE_LIMITED, (), self._retry_interval)
        return await self._local.admit(self._share_of(admission), now)

    def _share_of(self, admission: Admission) -> Admission:
        """This instance's share of the request's limits, for the in-process fallback."""
        n = self._instances
        if n == 1:
            return admission
        windows = tuple(
            dataclasses.replace(
                ask,
                window=gcra.Window(
                    max(1, ask.window.limit // n),
                    ask.window.period_us,
                    max(1, ask.window.burst // n),
                ),
            )
            for ask in admission.windows
        )
        parallel = admission.max_parallel
        return dataclasses.replace(
            admission,
            windows=windows,
            max_parallel=None if parallel is None else max(1, parallel // n),
        )

    async def settle(self, settlement: Settlement, now: datetime) -> None:
        await self._local.settle(settlement, now)  # what the fallback reserved, if anything
        await self._try(lambda: self._primary.settle(settlement, now))

    async def add_spent(
        self, key_id: str, model: str | None, cost: int, recorded_at: datetime
    ) -> None:
        await self._local.add_spent(key_id, model, cost, recorded_at)
        if self._recovering.locked():
            # A report skipped while the probe drops the counters would be missed by them all:
            # wait for it (milliseconds), then count on Redis.
            async with self._recovering:
                pass
        if not await self._try(lambda: self._primary.add_spent(key_id, model, cost, recorded_at)):
            self._missed_spending = True

    async def install_spent(
        self, key_id: str, scope: str, reset: Reset, period_start: datetime, spent: int
    ) -> bool:
        if self._down:
            return await self._local.install_spent(key_id, scope, reset, period_start, spent)
        installed: list[bool] = []

        async def shared() -> None:
            installed.append(
                await self._primary.install_spent(key_id, scope, reset, period_start, spent)
            )

        if await self._try(shared):
            return installed[0]
        return await self._local.install_spent(key_id, scope, reset, period_start, spent)

    async def reset(self, key_id: str, windows: Sequence[WindowAsk], slots: bool) -> int:
        """Reset on Redis (every instance) and in this process's fallback; a reset Redis
        could not take is an error, not a silent half reset."""
        freed = await self._local.reset(key_id, windows, slots)
        return freed + await self._primary.reset(key_id, windows, slots)

    async def expire(self, now: datetime) -> int:
        released = await self._local.expire(now)
        # While degraded, this is also the probe that notices Redis is back without traffic.
        if not self._down and self._monotonic() < self._next_sweep:
            return released
        # Redis needs no prompt release: admits and settlements release a key's overdue
        # reservations themselves, and TTLs reclaim idle keys. The sweep is housekeeping, so
        # it runs once a minute, not every second (it costs one script call per busy key).
        self._next_sweep = self._monotonic() + self._sweep_interval
        counted: list[int] = []

        async def shared() -> None:
            counted.append(await self._primary.expire(now))

        await self._try(shared)
        return released + sum(counted)
