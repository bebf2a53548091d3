"""Several budget windows on one key (``costs``: hourly, daily, monthly, and a model's daily
cost): exact under concurrency, all or nothing across windows, each seeded and reset on its
own, on MemoryLimiter and RedisLimiter, one instance and two."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from keyplane.domain.admission import Admission, BudgetAsk, Settlement, cost_scope
from keyplane.domain.decisions import Code
from keyplane.domain.periods import Reset, next_reset, period_start
from keyplane.limits.redis import RedisLimiter
from tests.limits.conftest import MakeLimits
from tests.limits.harness import (
    NOW,
    Ledger,
    Limits,
    admission,
    delete_prefix,
    memory_limits,
    new_client,
    redis_limits,
    require_redis,
)

# NOW is 2026-03-31 23:59 UTC: the hour, the day and the month all end a minute later.
HOUR, DAY, MONTH = 3_000_000, 5_000_000, 8_000_000


def window(
    reset: Reset, limit: int, cost: int, now: datetime = NOW, model: str | None = None
) -> BudgetAsk:
    """A cost window's ask, as the verifier builds it."""
    return BudgetAsk(
        cost_scope(reset, model),
        limit,
        reset,
        period_start(reset, now),
        next_reset(reset, now),
        cost,
        Code.COST_LIMITED,
        f"costs.{reset.value}",
    )


def three(
    cost: int, now: datetime = NOW, limits: tuple[int, int, int] = (HOUR, DAY, MONTH)
) -> tuple[BudgetAsk, ...]:
    return tuple(
        window(reset, limit, cost, now)
        for reset, limit in zip((Reset.HOURLY, Reset.DAILY, Reset.MONTHLY), limits, strict=True)
    )


def spend(ledger: Ledger, reset: Reset, amount: int, now: datetime = NOW) -> None:
    """What the ledger holds for the key's cost window of ``reset`` in ``now``'s period."""
    ledger.periods[("key_1", cost_scope(reset), reset, period_start(reset, now))] = amount


async def test_three_windows_admit_exactly_the_tightest_under_1000_concurrent(
    make_limits: MakeLimits,
) -> None:
    limits = make_limits()
    results = await asyncio.gather(
        *(limits.admit(admission(f"r{i}", budgets=three(100_000))) for i in range(1000))
    )
    assert sum(r.refusal is None for r in results) == 30  # the hour: 3.0 / 0.1
    refused = [r for r in results if r.refusal is not None]
    assert {r.refusal for r in refused} == {Code.COST_LIMITED}
    # Refused by the hour only: it resets in a minute.
    assert {r.retry_after for r in refused} == {60.0}
    assert limits.ledger.seeds == 3  # one seed per window, however many waited


async def test_the_window_that_binds_refuses_and_says_when_it_resets(
    make_limits: MakeLimits,
) -> None:
    limits = make_limits()
    spend(limits.ledger, Reset.MONTHLY, MONTH - 150_000)
    results = await asyncio.gather(
        *(limits.admit(admission(f"r{i}", budgets=three(100_000))) for i in range(20))
    )
    assert sum(r.refusal is None for r in results) == 1
    refused = next(r for r in results if r.refusal is not None)
    assert refused.refusal is Code.COST_LIMITED and refused.retry_after == 60.0
    by_name = {s.name: s.remaining for s in refused.limits}
    assert by_name == {
        "costs.hourly": HOUR - 100_000,
        "costs.daily": DAY - 100_000,
        "costs.monthly": 50_000,
    }


async def test_a_refusal_by_one_window_consumes_no_other(make_limits: MakeLimits) -> None:
    limits = make_limits()
    spend(limits.ledger, Reset.HOURLY, HOUR)  # the hour is used up
    for i in range(10):
        result = await limits.admit(admission(f"r{i}", budgets=three(1_000_000)))
        assert result.refusal is Code.COST_LIMITED
    # The day and the month have lost nothing to the ten refusals.
    day_and_month = three(1_000_000)[1:]
    result = await limits.admit(admission("ok", budgets=day_and_month))
    assert result.refusal is None
    assert [s.remaining for s in result.limits] == [DAY - 1_000_000, MONTH - 1_000_000]


async def test_each_window_starts_over_at_its_own_boundary(make_limits: MakeLimits) -> None:
    limits = make_limits()
    ledger = limits.ledger
    spend(ledger, Reset.HOURLY, HOUR)
    spend(ledger, Reset.DAILY, 1_000_000)
    spend(ledger, Reset.MONTHLY, 2_000_000)
    assert (await limits.admit(admission("a", budgets=three(1)))).refusal is Code.COST_LIMITED
    # Two minutes later (00:01 on April 1st) a new hour, day and month begin: each is read
    # from the ledger again, for its new period.
    later = NOW + timedelta(minutes=2)
    spend(ledger, Reset.HOURLY, 0, later)
    spend(ledger, Reset.DAILY, 0, later)
    spend(ledger, Reset.MONTHLY, 7_000_000, later)
    result = await limits.admit(
        replace(admission("b", budgets=three(500_000, later)), hold_until=later + timedelta(1)),
        later,
    )
    assert result.refusal is None
    assert [s.remaining for s in result.limits] == [2_500_000, 4_500_000, 500_000]
    result = await limits.admit(
        replace(admission("c", budgets=three(600_000, later)), hold_until=later + timedelta(1)),
        later,
    )
    assert result.refusal is Code.COST_LIMITED
    # The month refuses: it resets on May 1st.
    assert result.retry_after == (datetime(2026, 5, 1, tzinfo=NOW.tzinfo) - later).total_seconds()


async def test_reports_advance_the_windows_they_count_in(make_limits: MakeLimits) -> None:
    limits = make_limits()
    gpt4_day = window(Reset.DAILY, 1_000_000, 0, model="gpt-4*")
    asks = (*three(0), gpt4_day)
    await limits.admit(admission("a", budgets=asks))  # installs the four counters
    await limits.add_spent("key_1", "gpt-4o", 300_000, NOW)
    await limits.add_spent("key_1", "claude-3", 200_000, NOW)
    await limits.add_spent("key_1", None, 100_000, NOW)
    result = await limits.admit(admission("b", budgets=asks))
    assert [s.remaining for s in result.limits] == [
        HOUR - 600_000,
        DAY - 600_000,
        MONTH - 600_000,
        700_000,  # only gpt-4o's report counts for gpt-4*
    ]


async def test_settling_releases_every_windows_reservation(make_limits: MakeLimits) -> None:
    limits = make_limits()
    admitted = await limits.admit(admission("a", budgets=three(HOUR)))
    assert admitted.refusal is None
    assert (await limits.admit(admission("b", budgets=three(1)))).refusal is Code.COST_LIMITED
    await limits.settle(Settlement("key_1", "a", 0, 0))
    result = await limits.admit(admission("c", budgets=three(HOUR)))
    assert result.refusal is None  # nothing was reported spent: all three are free again


async def test_two_instances_share_the_three_windows_exactly(
    prefix: str, clients: Callable[..., Redis]
) -> None:
    ledger = Ledger()  # one ledger behind both instances
    first, second = (
        Limits(RedisLimiter(clients(), ledger, prefix=prefix, use_caller_clock=True), ledger)
        for _ in range(2)
    )
    results = await asyncio.gather(
        *(
            (first if i % 2 else second).admit(admission(f"r{i}", budgets=three(100_000)))
            for i in range(1000)
        )
    )
    assert sum(r.refusal is None for r in results) == 30
    assert {r.refusal for r in results} == {None, Code.COST_LIMITED}


# -- the limiters agree with a simple model ---------------------------------------------------

_RESETS = (Reset.HOURLY, Reset.DAILY, Reset.MONTHLY)
_OPS = st.lists(
    st.one_of(
        # admit a request estimated at this many tenths of a credit
        st.tuples(st.just("admit"), st.integers(0, 12)),
        # a report of this many tenths is committed (the ledger counts it)
        st.tuples(st.just("spend"), st.integers(0, 12)),
        # the n-th admitted request is settled
        st.tuples(st.just("settle"), st.integers(0, 30)),
        # the clock moves on by this many minutes
        st.tuples(st.just("wait"), st.sampled_from([1, 30, 61, 24 * 60, 31 * 24 * 60])),
    ),
    max_size=30,
)


class Model:
    """Each window: spent in its current period (from the ledger) and reserved."""

    def __init__(self, limits: tuple[int, int, int]) -> None:
        self.limits = limits
        self.ledger: list[tuple[datetime, int]] = []  # reports committed
        self.held: dict[str, int] = {}  # admitted and not settled: their estimate

    def spent(self, reset: Reset, now: datetime) -> int:
        start = period_start(reset, now)
        return sum(amount for at, amount in self.ledger if at >= start)

    def admit(self, request_id: str, cost: int, now: datetime) -> bool:
        reserved = sum(self.held.values())
        for reset, limit in zip(_RESETS, self.limits, strict=True):
            left = max(0, limit - self.spent(reset, now) - reserved)
            if cost > left or (cost == 0 and left == 0):
                return False
        self.held[request_id] = cost
        return True


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    ops=_OPS,
    limits=st.tuples(st.integers(0, 30), st.integers(0, 50), st.integers(0, 80)).map(
        lambda tenths: tuple(t * 100_000 for t in tenths)
    ),
)
def test_the_windows_agree_with_a_simple_model(ops: list[tuple[Any, int]], limits: Any) -> None:
    require_redis()
    asyncio.run(_replay(ops, limits))


async def _replay(ops: list[tuple[Any, int]], limits: tuple[int, int, int]) -> None:
    name = f"kpt{secrets.token_hex(6)}"
    client = new_client()
    try:
        backends = [memory_limits(), redis_limits(client, name)]
        for backend in backends:
            backend.ledger.spent = 0
        model = Model(limits)
        now = NOW
        admitted: list[str] = []
        for step, (op, value) in enumerate(ops):
            if op == "admit":
                ask = Admission(
                    key_id="key_1",
                    request_id=f"r{step}",
                    # Held for a year: reservations end by settlement only, as in the model.
                    hold_until=now + timedelta(days=365),
                    budgets=three(value * 100_000, now, limits),
                )
                expected = model.admit(f"r{step}", value * 100_000, now)
                for backend in backends:
                    result = await backend.admit(ask, now)
                    assert (result.refusal is None) == expected, (op, value, backend)
                if expected:
                    admitted.append(f"r{step}")
            elif op == "spend":
                model.ledger.append((now, value * 100_000))
                for backend in backends:
                    _seed_from(backend, model, now)
                    await backend.add_spent("key_1", None, value * 100_000, now)
            elif op == "settle" and admitted:
                request_id = admitted.pop(value % len(admitted))
                model.held.pop(request_id)
                for backend in backends:
                    await backend.settle(Settlement("key_1", request_id, 0, 0), now)
            elif op == "wait":
                now += timedelta(minutes=value)
                for backend in backends:
                    _seed_from(backend, model, now)
    finally:
        await client.aclose()
        await delete_prefix(name)


def _seed_from(backend: Limits, model: Model, now: datetime) -> None:
    """The stand-in ledger answers a seed with what the model's ledger holds."""
    for reset in _RESETS:
        spend(backend.ledger, reset, model.spent(reset, now), now)
