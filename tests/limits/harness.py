"""What the limits tests share: fixed instants, admission builders, a stand-in ledger, and
one async interface over MemoryLimiter and RedisLimiter (the contract suite's backends).

Redis runs at ``redis://127.0.0.1:6379/0`` (override with ``KEYPLANE_TEST_REDIS_URL``), each
test under its own random key prefix, deleted afterwards. Redis tests are skipped when Redis is
unreachable, except with ``CI=true``, where they fail instead.
"""

from __future__ import annotations

import asyncio
import os
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from redis.asyncio import BlockingConnectionPool, Redis

from keyplane.domain import gcra
from keyplane.domain.admission import Admission, AdmissionResult, BudgetAsk, Settlement
from keyplane.domain.periods import Reset, next_reset, period_start
from keyplane.limits.base import CounterInstaller
from keyplane.limits.memory import MemoryLimiter
from keyplane.limits.redis import RedisLimiter
from tests.conftest import IN_CI

NOW = datetime(2026, 3, 31, 23, 59, 0, tzinfo=UTC)
MINUTE_US = 60 * gcra.MICROS
REDIS_URL = "redis://127.0.0.1:6379/0"


def budget(limit: int, cost: int, reset: Reset = Reset.MONTHLY, now: datetime = NOW) -> BudgetAsk:
    return BudgetAsk("", limit, reset, period_start(reset, now), next_reset(reset, now), cost)


def admission(request_id: str, **fields: object) -> Admission:
    return Admission(
        key_id="key_1", request_id=request_id, hold_until=NOW + timedelta(minutes=5), **fields
    )  # type: ignore[arg-type]


class NoSeeder:
    """For limiters that are never asked for a budget."""

    async def seed(
        self, key_id: str, scope: str, reset: Reset, start: datetime, into: CounterInstaller
    ) -> None:
        raise AssertionError("no budget here")


@dataclass
class Ledger:
    """Stands in for the ledger: what each (key, scope, period) has spent, seeded on demand
    into the limiter that asks (a CounterSeeder)."""

    spent: int = 0
    periods: dict[tuple[str, str, Reset, datetime], int] = field(default_factory=dict)
    seeds: int = 0

    async def seed(
        self, key_id: str, scope: str, reset: Reset, start: datetime, into: CounterInstaller
    ) -> None:
        self.seeds += 1
        await asyncio.sleep(0)
        spent = self.periods.get((key_id, scope, reset, start), self.spent)
        await into.install_spent(key_id, scope, reset, start, spent)


@dataclass
class Limits:
    """MemoryLimiter or RedisLimiter behind one async interface."""

    limiter: MemoryLimiter | RedisLimiter
    ledger: Ledger

    async def admit(self, ask: Admission, now: datetime = NOW) -> AdmissionResult:
        return await self.limiter.admit(ask, now)

    async def settle(self, settlement: Settlement, now: datetime = NOW) -> None:
        await self.limiter.settle(settlement, now)

    async def add_spent(self, key_id: str, model: str | None, cost: int, at: datetime) -> None:
        await self.limiter.add_spent(key_id, model, cost, at)

    async def expire(self, now: datetime) -> int:
        return await self.limiter.expire(now)


def memory_limits(spent: int = 0) -> Limits:
    ledger = Ledger(spent)
    return Limits(MemoryLimiter(ledger), ledger)


#: The Redis limiters the running test made (``renewals_settled`` waits for their work).
_MADE: list[RedisLimiter] = []


def redis_limits(
    client: Redis, prefix: str, spent: int = 0, *, caller_clock: bool = True, **options: Any
) -> Limits:
    ledger = Ledger(spent)
    limiter = RedisLimiter(client, ledger, prefix=prefix, use_caller_clock=caller_clock, **options)
    _MADE.append(limiter)
    return Limits(limiter, ledger)


async def renewals_settled() -> None:
    """Wait for the marker renewals the test's limiters started off a request's path (a third
    of a marker's life gone), then forget the limiters: one still running when the test
    closes its clients would open a connection again, left for a later test to find."""
    for limiter in _MADE:
        while limiter._markers.renewing:
            await asyncio.wait(list(limiter._markers.renewing.values()))
    _MADE.clear()


def redis_url() -> str:
    return os.environ.get("KEYPLANE_TEST_REDIS_URL", REDIS_URL)


def require_redis() -> None:
    """Skip without Redis; with CI=true fail instead, as PostgreSQL does in conftest."""
    parts = urlsplit(redis_url())
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    try:
        with socket.create_connection((host, port), timeout=1):
            return
    except OSError:
        pass
    message = f"Redis is not reachable on {host}:{port}"
    if IN_CI:
        pytest.fail(message + " (CI=true: failing instead of skipping)")
    pytest.skip(message)


def new_client(**pool: Any) -> Redis:
    """A client with its own connections, as a separate server instance would have."""
    return Redis.from_pool(BlockingConnectionPool.from_url(redis_url(), max_connections=32, **pool))


async def delete_prefix(prefix: str) -> None:
    client = new_client()
    try:
        names = [name async for name in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if names:
            await client.unlink(*names)
    finally:
        await client.aclose()
