"""Limits after Redis loses its data (a restart or a failover): long windows and slots.

Each test runs a redis-server of its own (``private_redis``) and kills it mid-test: the shared
Redis on 6379 is never restarted. Time is the callers' (``use_caller_clock``), moved by the
``clock`` fixture. The bounds checked here are the ones docs/deployment.md states:

* ``fail_closed``: a window of an hour or more admits nothing more over its limit, slots are
  refused until every slot taken before the loss is over;
* ``reseed``: such a window admits at most what it admitted in the last flush interval before
  the loss (not yet in the database); slots as with ``fail_closed``;
* ``forget``: such a window admits at most one more burst, concurrency at most one more
  ``max_parallel`` until the hold is over;
* windows shorter than an hour start empty in both modes: at most one more burst.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from keyplane.domain import gcra
from keyplane.domain.admission import Admission, AdmissionResult, WindowAsk
from keyplane.domain.clock import ManualClock
from keyplane.domain.decisions import Code
from keyplane.errors import CountersUnsettledError, StorageError
from keyplane.limits.keeper import Guard, Install, MemoryGuard, WindowKeeper
from keyplane.limits.markers import AfterLoss
from keyplane.limits.memory import MemoryLimiter
from keyplane.limits.redis import RedisLimiter
from keyplane.limits.resilient import ResilientLimiter
from keyplane.settings import to_async_url
from keyplane.store.database import Database as Db
from keyplane.store.migrate import migrate
from tests.conftest import Database, free_port, private_redis
from tests.limits.harness import NoSeeder

SECOND_US = gcra.MICROS
HOUR_US = 3600 * SECOND_US
DAY_US = 24 * HOUR_US
HOLD = timedelta(minutes=5)

MONTH = WindowAsk("month", "rate", gcra.Window(100, 30 * DAY_US, 100), 1)
MINUTE = WindowAsk("minute", "rate", gcra.Window(10, 60 * SECOND_US, 10), 1)


class Restartable:
    """A private redis-server and the clients of the limiter instances that share it."""

    def __init__(self, port: int, restart: Callable[[], None]) -> None:
        self.port = port
        self._restart = restart
        self.clients: list[Redis] = []

    def client(self) -> Redis:
        self.clients.append(Redis(host="127.0.0.1", port=self.port))
        return self.clients[-1]

    async def restart(self) -> None:
        self._restart()
        for client in self.clients:
            # The old connections died with the server: the next call opens new ones.
            await client.connection_pool.disconnect()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[tuple[int, Callable[[], None]]]:
    port = free_port()
    with private_redis(port, tmp_path) as restart:
        yield port, restart


@pytest.fixture
async def server(redis_server: tuple[int, Callable[[], None]]) -> AsyncIterator[Restartable]:
    restartable = Restartable(*redis_server)
    yield restartable
    for client in restartable.clients:
        await client.aclose()


def limiter(
    server: Restartable,
    guard: Guard,
    after_loss: AfterLoss = "fail_closed",
    keeper: WindowKeeper | None = None,
) -> RedisLimiter:
    return RedisLimiter(
        server.client(),
        NoSeeder(),
        use_caller_clock=True,
        guard=guard,
        after_loss=after_loss,
        keeper=keeper,
    )


def ask(request_id: str, now: datetime, key_id: str = "key_1", **fields: Any) -> Admission:
    return Admission(key_id=key_id, request_id=request_id, hold_until=now + HOLD, **fields)


async def admitted(
    limiter: RedisLimiter, now: datetime, count: int, prefix: str, **fields: Any
) -> list[AdmissionResult]:
    """``count`` admissions, one after another; the admitted ones keep their slots."""
    return [await limiter.admit(ask(f"{prefix}{i}", now, **fields), now) for i in range(count)]


def passed(results: list[AdmissionResult]) -> int:
    return sum(result.refusal is None for result in results)


async def test_a_used_up_month_window_stays_used_up_after_redis_restarts(
    server: Restartable, clock: ManualClock
) -> None:
    limits = limiter(server, MemoryGuard())
    assert passed(await admitted(limits, clock.now(), 101, "before", windows=(MONTH,))) == 100
    await server.restart()
    clock.advance(1)
    after = await admitted(limits, clock.now(), 100, "after", windows=(MONTH,))
    assert passed(after) == 0  # was 100 before the fix
    assert after[0].refusal is Code.RATE_LIMITED
    # GCRA at 100 per 30 days: the next request may pass one emission interval (7.2 h) on.
    assert after[0].retry_after == pytest.approx(30 * 86_400 / 100, abs=0.01)
    assert limits.losses == 1
    # Failing closed lasts no longer than the window: a whole period on, it is full again.
    clock.advance(30 * 86_400)
    assert passed(await admitted(limits, clock.now(), 101, "later", windows=(MONTH,))) == 100


async def test_forget_admits_at_most_one_more_burst_of_a_long_window(
    server: Restartable, clock: ManualClock
) -> None:
    limits = limiter(server, MemoryGuard(), "forget")
    assert passed(await admitted(limits, clock.now(), 100, "before", windows=(MONTH,))) == 100
    await server.restart()
    clock.advance(1)
    assert passed(await admitted(limits, clock.now(), 150, "after", windows=(MONTH,))) == 100
    assert limits.losses == 1


async def test_concurrency_at_its_limit_stays_full_after_redis_restarts(
    server: Restartable, clock: ManualClock
) -> None:
    limits = limiter(server, MemoryGuard())
    start = clock.now()
    assert passed(await admitted(limits, start, 21, "held", max_parallel=20)) == 20
    await server.restart()
    clock.advance(1)
    after = await admitted(limits, clock.now(), 20, "after", max_parallel=20)
    assert passed(after) == 0  # was 20 before the fix
    assert after[0].refusal is Code.CONCURRENCY_EXCEEDED
    # Refused until the slots held before the loss would all have been released.
    assert after[0].retry_after == pytest.approx(HOLD.total_seconds(), abs=0.01)
    clock.set(clock.now() + HOLD - timedelta(microseconds=1))
    assert passed(await admitted(limits, clock.now(), 1, "nearly", max_parallel=20)) == 0
    clock.advance(1e-6)
    assert passed(await admitted(limits, clock.now(), 21, "later", max_parallel=20)) == 20


async def test_forget_admits_at_most_one_more_concurrency_limit(
    server: Restartable, clock: ManualClock
) -> None:
    limits = limiter(server, MemoryGuard(), "forget")
    assert passed(await admitted(limits, clock.now(), 20, "held", max_parallel=20)) == 20
    await server.restart()
    assert passed(await admitted(limits, clock.now(), 30, "after", max_parallel=20)) == 20


@pytest.mark.parametrize("after_loss", ["fail_closed", "forget"])
async def test_short_windows_admit_at_most_one_more_burst(
    server: Restartable, clock: ManualClock, after_loss: AfterLoss
) -> None:
    limits = limiter(server, MemoryGuard(), after_loss)
    assert passed(await admitted(limits, clock.now(), 11, "before", windows=(MINUTE,))) == 10
    await server.restart()
    # Forgotten, never worse: the window restarts empty, so one burst passes, not more.
    assert passed(await admitted(limits, clock.now(), 30, "after", windows=(MINUTE,))) == 10


@pytest.fixture
async def store(database: Database) -> AsyncIterator[Db]:
    store = Db.from_url(to_async_url(database.url), database.schema)
    await migrate(store.engine)
    yield store
    await store.close()


async def test_an_instance_that_never_saw_the_key_still_finds_the_loss(
    server: Restartable, clock: ManualClock, store: Db
) -> None:
    """Two instances share Redis and the database: the promise is durable, not per process."""
    first = limiter(server, store.usage.guard_limit_state)
    second = limiter(server, store.usage.guard_limit_state)
    fields: dict[str, Any] = {"windows": (MONTH,), "max_parallel": 20}
    assert passed(await admitted(first, clock.now(), 30, "first", **fields)) == 20
    await server.restart()
    clock.advance(1)
    assert passed(await admitted(second, clock.now(), 20, "second", **fields)) == 0
    assert passed(await admitted(first, clock.now(), 20, "again", **fields)) == 0
    assert (first.losses, second.losses) == (0, 1)


async def test_new_keys_racing_on_two_instances_are_not_taken_for_lost_ones(
    server: Restartable, clock: ManualClock, store: Db
) -> None:
    first = limiter(server, store.usage.guard_limit_state)
    second = limiter(server, store.usage.guard_limit_state)
    now = clock.now()
    fields: dict[str, Any] = {"windows": (MONTH,), "max_parallel": 20}
    results = await asyncio.gather(
        *(
            instance.admit(ask(f"r{i}", now, key_id=f"key_{i % 5}", **fields), now)
            for i, instance in enumerate([first, second] * 20)
        )
    )
    assert passed(list(results)) == 40
    assert first.losses == second.losses == 0


async def test_a_key_idle_past_its_marker_is_not_taken_for_a_lost_one(
    server: Restartable, clock: ManualClock
) -> None:
    limits = limiter(server, MemoryGuard())
    assert passed(await admitted(limits, clock.now(), 20, "before", max_parallel=20)) == 20
    # The marker lasts three holds; the slots held are long over by then.
    clock.set(clock.now() + 3 * HOLD + timedelta(seconds=1))
    assert passed(await admitted(limits, clock.now(), 21, "after", max_parallel=20)) == 20
    assert limits.losses == 0


class CountingGuard:
    """A guard that counts renewals and holds the first one until told to go on."""

    def __init__(self) -> None:
        self.inner = MemoryGuard()
        self.calls = 0
        self.release = asyncio.Event()

    async def __call__(self, key_id: str, install: Install) -> None:
        self.calls += 1
        await self.release.wait()
        await self.inner(key_id, install)


async def test_many_verifies_waiting_on_a_lost_key_rebuild_it_once(
    server: Restartable, clock: ManualClock
) -> None:
    guard = CountingGuard()
    guard.release.set()
    limits = limiter(server, guard)
    assert passed(await admitted(limits, clock.now(), 100, "before", windows=(MONTH,))) == 100
    assert guard.calls == 1
    await server.restart()
    guard.release.clear()
    now = clock.now()
    waiting = [
        asyncio.create_task(limits.admit(ask(f"w{i}", now, windows=(MONTH,)), now))
        for i in range(50)
    ]
    while guard.calls < 2:
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.05)  # more verifies find the marker gone (how many does not matter)
    guard.release.set()
    results = await asyncio.gather(*waiting)
    assert guard.calls == 2  # one renewal (one database transaction) for the 50 of them
    assert passed(list(results)) == 0


async def test_the_marker_costs_no_round_trip_of_its_own(
    server: Restartable, clock: ManualClock
) -> None:
    limits = limiter(server, MemoryGuard())
    client = server.clients[-1]
    fields: dict[str, Any] = {"windows": (MONTH, MINUTE), "max_parallel": 5}
    await limits.admit(ask("warm", clock.now(), **fields), clock.now())  # the first renewal
    sent: list[object] = []
    execute = client.execute_command

    async def counted(*args: Any, **options: Any) -> Any:
        sent.append(args[0])
        return await execute(*args, **options)

    client.execute_command = counted  # type: ignore[method-assign]
    for i in range(10):
        clock.advance(10)
        await limits.admit(ask(f"r{i}", clock.now(), **fields), clock.now())
    assert sent == ["EVALSHA"] * 10  # the marker is checked inside the admission script


async def test_a_busy_key_has_its_marker_renewed_off_the_request_path(
    server: Restartable, clock: ManualClock
) -> None:
    guard = CountingGuard()
    guard.release.set()
    limits = limiter(server, guard)
    start = clock.now()
    # Slots only: the marker must outlast one hold (5 min); it is promised for three.
    assert passed(await admitted(limits, start, 1, "first", max_parallel=20)) == 1
    assert guard.calls == 1
    clock.set(start + 2 * HOLD)  # a third of its life left: renewed after this verify
    assert passed(await admitted(limits, clock.now(), 1, "second", max_parallel=20)) == 1
    while guard.calls < 2 or limits._markers.renewing:
        await asyncio.sleep(0.001)
    # The end of the first promise; the renewed one has two holds left, so not even a
    # renewal in the background is due.
    clock.set(start + 3 * HOLD)
    assert passed(await admitted(limits, clock.now(), 1, "third", max_parallel=20)) == 1
    assert guard.calls == 2  # no renewal on this verify's path
    await server.restart()
    assert passed(await admitted(limits, clock.now(), 1, "lost", max_parallel=20)) == 0
    assert limits.losses == 1


async def test_a_database_that_cannot_renew_the_marker_leaves_it_to_the_fallback(
    server: Restartable, clock: ManualClock
) -> None:
    async def broken(key_id: str, install: Install) -> None:
        raise StorageError("database write failed")

    shared = limiter(server, broken)
    resilient = ResilientLimiter(shared, MemoryLimiter(NoSeeder()), mode="closed")
    now = clock.now()
    with pytest.raises(CountersUnsettledError):
        await shared.admit(ask("direct", now, windows=(MONTH,)), now)
    result = await resilient.admit(ask("r1", now, windows=(MONTH,)), now)
    assert result.refusal is Code.RATE_LIMITED and resilient.fallbacks == 1


async def test_reseed_rebuilds_a_long_window_from_what_the_database_kept(
    server: Restartable, clock: ManualClock
) -> None:
    guard = MemoryGuard()
    keeper = WindowKeeper(guard.keep, interval=3600)  # flushed by hand below
    limits = limiter(server, guard, "reseed", keeper)
    assert passed(await admitted(limits, clock.now(), 60, "kept", windows=(MONTH,))) == 60
    await keeper.flush()
    assert passed(await admitted(limits, clock.now(), 40, "unflushed", windows=(MONTH,))) == 40
    await server.restart()
    clock.advance(1)
    # The 60 in the database count; the 40 of the last interval are what a loss can forget.
    assert passed(await admitted(limits, clock.now(), 100, "after", windows=(MONTH,))) == 40
    assert limits.losses == 1


async def test_reseed_from_the_database_on_an_instance_that_never_saw_the_key(
    server: Restartable, clock: ManualClock, store: Db
) -> None:
    keepers = [WindowKeeper(store.usage.keep_limit_windows, interval=3600) for _ in range(2)]
    first, second = (limiter(server, store.usage.guard_limit_state, "reseed", k) for k in keepers)
    assert passed(await admitted(first, clock.now(), 100, "first", windows=(MONTH,))) == 100
    await keepers[0].flush()
    await server.restart()
    clock.set(clock.now() + HOLD)
    after = await admitted(second, clock.now(), 10, "second", windows=(MONTH,))
    assert passed(after) == 0
    assert after[0].refusal is Code.RATE_LIMITED
    assert after[0].retry_after == pytest.approx(30 * 86_400 / 100 - HOLD.total_seconds(), abs=1)
    assert (first.losses, second.losses) == (0, 1)


async def test_the_database_keeps_the_latest_end_of_each_window(store: Db) -> None:
    await store.usage.keep_limit_windows({("key_1", "rate:a"): 500, ("key_1", "rate:b"): 7})
    await store.usage.keep_limit_windows({("key_1", "rate:a"): 300, ("key_2", "rate:a"): 1})
    await store.usage.keep_limit_windows({("key_1", "rate:a"): 900})
    seen: list[tuple[int | None, dict[str, int]]] = []

    async def install(promised: int | None, kept: Mapping[str, int]) -> int:
        seen.append((promised, dict(kept)))
        return 42

    await store.usage.guard_limit_state("key_1", install)
    await store.usage.guard_limit_state("key_1", install)
    assert seen == [(None, {"rate:a": 900, "rate:b": 7}), (42, {"rate:a": 900, "rate:b": 7})]


CALENDAR_DAY = WindowAsk(
    "model:gpt-4*:requests_per_day", "rate", gcra.Window(100, DAY_US, 100), 1, calendar_day=True
)


async def test_a_calendar_day_fails_closed_until_midnight_after_redis_restarts(
    server: Restartable, clock: ManualClock
) -> None:
    limits = limiter(server, MemoryGuard())
    assert passed(await admitted(limits, clock.now(), 30, "before", windows=(CALENDAR_DAY,))) == 30
    await server.restart()
    clock.advance(1)
    after = await admitted(limits, clock.now(), 10, "after", windows=(CALENDAR_DAY,))
    assert passed(after) == 0 and limits.losses == 1
    now = clock.now()
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    # Used up for the rest of the day, not for a day from the loss.
    assert after[0].retry_after == (midnight - now).total_seconds()
    clock.set(midnight)
    assert passed(await admitted(limits, clock.now(), 150, "next", windows=(CALENDAR_DAY,))) == 100
