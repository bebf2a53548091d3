"""Calendar-day windows (seed 004's ``models.cost_limits.max_requests_per_day``): exactly N from
one UTC midnight to the next, none dripping back in between, on memory and Redis, on two Redis
instances, and on Redis's own clock (where the state must outlive its day's debt)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from keyplane.domain import gcra
from keyplane.domain.admission import DAY_US, WindowAsk, check_window, micros
from keyplane.domain.decisions import Code
from tests.limits.conftest import MakeLimits
from tests.limits.harness import Limits, admission, redis_limits

NOON = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
MIDNIGHT = datetime(2026, 12, 5, tzinfo=UTC)


def per_day(limit: int) -> WindowAsk:
    window = gcra.Window(limit, DAY_US, limit)
    return WindowAsk("model:gpt-4*:requests_per_day", "rate", window, 1, calendar_day=True)


async def _admitted(
    limits: list[Limits], ask: WindowAsk, tag: str, count: int, at: datetime
) -> int:
    results = await asyncio.gather(
        *(
            limits[i % len(limits)].admit(admission(f"{tag}{i}", windows=(ask,)), at)
            for i in range(count)
        )
    )
    assert {r.refusal for r in results} <= {None, Code.RATE_LIMITED}
    return sum(r.refusal is None for r in results)


async def test_a_calendar_day_admits_exactly_n_until_utc_midnight(make_limits: MakeLimits) -> None:
    limits = make_limits()
    ask = per_day(10)
    assert await _admitted([limits], ask, "a", 1000, NOON) == 10
    # A rolling day would have dripped 9 back by 23:59:59; a calendar day gives none back.
    last_second = MIDNIGHT - timedelta(seconds=1)
    refused = await limits.admit(admission("late", windows=(ask,)), last_second)
    assert refused.refusal is Code.RATE_LIMITED and refused.retry_after == 1
    [state] = refused.limits
    assert (state.remaining, state.reset_at) == (0, MIDNIGHT)
    assert await _admitted([limits], ask, "b", 1000, MIDNIGHT) == 10
    # The next day's refusal waits a whole day from its midnight.
    first = await limits.admit(admission("c", windows=(ask,)), MIDNIGHT)
    assert first.retry_after == 86_400


async def test_a_day_used_in_part_carries_nothing_over(make_limits: MakeLimits) -> None:
    limits = make_limits()
    ask = per_day(3)
    late = MIDNIGHT - timedelta(minutes=1)
    assert await _admitted([limits], ask, "a", 2, late) == 2
    admitted = await limits.admit(admission("b", windows=(ask,)), late)
    assert admitted.refusal is None and admitted.limits[0].remaining == 0
    assert await _admitted([limits], ask, "c", 5, MIDNIGHT + timedelta(microseconds=1)) == 3


async def test_two_instances_share_one_calendar_day(
    clients: Callable[..., Redis], prefix: str
) -> None:
    instances = [redis_limits(clients(), prefix), redis_limits(clients(), prefix)]
    assert await _admitted(instances, per_day(25), "a", 1000, NOON) == 25
    assert await _admitted(instances, per_day(25), "b", 100, MIDNIGHT - timedelta(0, 1)) == 0
    assert await _admitted(instances, per_day(25), "c", 100, MIDNIGHT) == 25


async def test_on_redis_time_the_count_lasts_the_whole_day(
    clients: Callable[..., Redis], prefix: str
) -> None:
    """On Redis's clock the state is stored at the day's start: its expiry is the next
    midnight, not when that debt would be paid from the day's start (long past)."""
    instances = [
        redis_limits(clients(), prefix, caller_clock=False),
        redis_limits(clients(), prefix, caller_clock=False),
    ]
    now = datetime.now(UTC)
    ask = per_day(1_000_000)  # one request's debt is paid 86 ms after the day's start
    assert await _admitted(instances, ask, "a", 200, now) == 200
    client = clients()
    [key] = [k async for k in client.scan_iter(f"{prefix}*:tat:*:day")]
    remaining_ms = await client.pttl(key)
    day_start = micros(now) - micros(now) % DAY_US
    until_midnight_ms = (day_start + DAY_US - micros(now)) // 1000
    assert until_midnight_ms - 60_000 < remaining_ms <= until_midnight_ms + 60_000
    result = await instances[0].admit(admission("b", windows=(ask,)), now)
    assert result.refusal is None and result.limits[0].remaining == 1_000_000 - 201


@settings(max_examples=200, deadline=None)
@given(
    limit=st.integers(1, 50),
    times=st.lists(st.integers(0, 3 * DAY_US), min_size=1, max_size=80),
)
def test_the_window_is_a_fixed_count_per_utc_day(limit: int, times: list[int]) -> None:
    """check_window on a calendar day against the reference: a plain count per day."""
    ask = per_day(limit)
    start = micros(datetime(2026, 12, 4, tzinfo=UTC))
    tat: int | None = None
    used: dict[int, int] = {}
    for offset in sorted(times):
        now_us = start + offset
        day = now_us // DAY_US
        state, new_tat = check_window(ask, tat, now_us)
        expected = used.get(day, 0) < limit
        assert state.allowed is expected
        assert state.reset_at_us == (day + 1) * DAY_US
        if expected:
            tat = new_tat
            used[day] = used.get(day, 0) + 1
            assert state.remaining == limit - used[day]
        else:
            assert state.retry_after_us == (day + 1) * DAY_US - now_us
