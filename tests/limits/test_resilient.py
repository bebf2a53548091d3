"""Limits while Redis is unreachable: fallback, open, closed; and back to Redis."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from keyplane.domain import gcra
from keyplane.domain.admission import WindowAsk
from keyplane.domain.decisions import Code
from keyplane.domain.periods import Reset
from keyplane.errors import CountersUnsettledError
from keyplane.limits.base import CounterInstaller
from keyplane.limits.memory import MemoryLimiter
from keyplane.limits.redis import RedisLimiter
from keyplane.limits.resilient import FailureMode, ResilientLimiter
from tests.conftest import free_port, private_redis
from tests.limits.harness import MINUTE_US, NOW, NoSeeder, admission, budget


def _limiter(mode: FailureMode, instances: int = 1) -> tuple[ResilientLimiter, Redis]:
    # Nothing listens on this port: every Redis call fails at once with a connection error.
    redis = Redis(
        host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0)
    )
    limiter = ResilientLimiter(
        RedisLimiter(redis, NoSeeder()),
        MemoryLimiter(NoSeeder()),
        mode=mode,
        instances=instances,
    )
    return limiter, redis


RATE = WindowAsk("m", "rate", gcra.Window(10, MINUTE_US, 10), 1)


async def test_fallback_shares_the_limit_out_among_the_instances() -> None:
    limiter, redis = _limiter("fallback", instances=2)
    try:
        results = [await limiter.admit(admission(f"r{i}", windows=(RATE,)), NOW) for i in range(8)]
    finally:
        await redis.aclose()
    assert [r.refusal for r in results].count(None) == 5  # 10 per minute / 2 instances
    assert limiter.degraded and limiter.fallbacks == 8


@pytest.mark.parametrize(("mode", "expected"), [("open", None), ("closed", Code.RATE_LIMITED)])
async def test_open_and_closed(mode: FailureMode, expected: Code | None) -> None:
    limiter, redis = _limiter(mode)
    try:
        results = [await limiter.admit(admission(f"r{i}", windows=(RATE,)), NOW) for i in range(20)]
    finally:
        await redis.aclose()
    assert {r.refusal for r in results} == {expected}


async def test_spending_reports_still_count_locally_while_redis_is_down() -> None:
    ledger = _Ledger(spent=100_000)
    # Nothing listens on this port: every Redis call fails at once with a connection error.
    limiter, _, redis = _recovering(free_port(), ledger)
    month = budget(1_000_000, 0)
    try:
        await limiter.add_spent("key_1", None, 5, NOW)  # must not raise
        assert limiter.degraded
        # The fallback seeds its own counter from the ledger (100_000 spent)...
        first = await limiter.admit(admission("r1", budgets=(month,)), NOW)
        assert first.refusal is None and first.limits[0].remaining == 900_000
        # ...and a report committed while Redis is down counts in it.
        await limiter.add_spent("key_1", None, 300_000, NOW)
        second = await limiter.admit(admission("r2", budgets=(month,)), NOW)
    finally:
        await redis.aclose()
    assert limiter.degraded and limiter.fallbacks == 2
    assert second.refusal is None and second.limits[0].remaining == 600_000


# -- recovery: against a redis-server of the test's own, started after the limiter gave up --


class _Ledger:
    """The ledger's seeding step: installs what the ledger holds into the limiter that asks."""

    def __init__(self, spent: int) -> None:
        self.spent = spent

    async def seed(
        self, key_id: str, scope: str, reset: Reset, start: datetime, into: CounterInstaller
    ) -> None:
        await into.install_spent(key_id, scope, reset, start, self.spent)


class _HeldForget(RedisLimiter):
    """A real RedisLimiter whose counter sweep waits until the test lets it go."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.release = asyncio.Event()
        self.started = asyncio.Event()

    async def forget_spent(self) -> int:
        self.started.set()
        await self.release.wait()
        return await super().forget_spent()


def _recovering(
    port: int, ledger: _Ledger, shared_type: type[RedisLimiter] = RedisLimiter
) -> tuple[ResilientLimiter, RedisLimiter, Redis]:
    redis = Redis(
        host="127.0.0.1", port=port, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0)
    )
    shared = shared_type(redis, ledger, use_caller_clock=True)
    local = MemoryLimiter(ledger)
    # retry_interval 0: every call may probe, so the test needs no sleeping.
    return ResilientLimiter(shared, local, retry_interval=0), shared, redis


async def test_stale_counters_are_dropped_before_redis_serves_again(tmp_path: Path) -> None:
    port = free_port()
    ledger = _Ledger(spent=0)
    limiter, shared, redis = _recovering(port, ledger)
    try:
        await limiter.add_spent("key_1", None, 50_000_000, NOW)  # Redis is down: missed
        assert limiter.degraded
        ledger.spent = 50_000_000  # the report is in the ledger
        with private_redis(port, tmp_path):
            # A counter that outlived the outage (a partition, not a restart) is stale.
            month = budget(100_000_000, 60_000_000)
            assert await shared.install_spent("key_1", "", month.reset, month.period_start, 0)
            result = await limiter.admit(admission("r1", budgets=(month,)), NOW)
            assert not limiter.degraded and limiter.fallbacks == 0  # Redis answered
            assert result.refusal is Code.BUDGET_EXCEEDED  # 50 spent + 60 > 100
            await redis.aclose()
    finally:
        await redis.aclose()


async def test_while_one_call_probes_others_fall_back_and_reports_wait(tmp_path: Path) -> None:
    port = free_port()
    ledger = _Ledger(spent=0)
    limiter, shared, redis = _recovering(port, ledger, _HeldForget)
    held = cast(_HeldForget, shared)
    month = budget(100_000_000, 10_000_000)
    try:
        await limiter.add_spent("key_1", None, 1, NOW)  # missed: the probe will sweep
        with private_redis(port, tmp_path):
            probe = asyncio.create_task(limiter.admit(admission("probe", budgets=(month,)), NOW))
            await held.started.wait()
            during = await limiter.admit(admission("during", budgets=(month,)), NOW)
            assert during.refusal is None and limiter.fallbacks == 1  # served by the fallback
            report = asyncio.create_task(limiter.add_spent("key_1", None, 5, NOW))
            await asyncio.sleep(0.05)
            assert not report.done()  # waits for the sweep rather than skip Redis
            held.release.set()
            assert (await probe).refusal is None
            await report
            assert not limiter.degraded and limiter.fallbacks == 1
            await redis.aclose()
    finally:
        await redis.aclose()


async def test_a_counter_that_keeps_vanishing_is_answered_by_the_fallback(tmp_path: Path) -> None:
    """Another instance recovering drops counters as this one seeds them: no 5xx for that."""
    port = free_port()
    ledger = _Ledger(spent=0)
    limiter, shared, redis = _recovering(port, ledger)

    class SeedThenLose:
        async def seed(
            self, key_id: str, scope: str, reset: Reset, start: datetime, into: CounterInstaller
        ) -> None:
            await into.install_spent(key_id, scope, reset, start, 0)
            await shared.forget_spent()

    shared._seeder = SeedThenLose()
    try:
        with private_redis(port, tmp_path):
            month = budget(100_000_000, 10_000_000)
            with pytest.raises(CountersUnsettledError):
                await shared.admit(admission("direct", budgets=(month,)), NOW)
            result = await limiter.admit(admission("r1", budgets=(month,)), NOW)
            assert result.refusal is None
            assert limiter.fallbacks == 1 and not limiter.degraded
            await redis.aclose()
    finally:
        await redis.aclose()
