"""``CostWindowAsks``: the cached budget asks of a ``costs`` block are exactly the ones built
afresh, at every instant, across hour, day and month edges and a clock that steps back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from keyplane.domain.admission import BudgetAsk
from keyplane.domain.decisions import Code
from keyplane.domain.periods import CurrentPeriods, next_reset, period_start
from keyplane.domain.policy import parse_policy
from keyplane.services.verify import CostWindowAsks

COSTS = parse_policy(
    {
        "costs": {
            "per_hour_max_micros": 2_000_000,
            "per_day_max_micros": 3_000_000,
            "per_month_max_micros": 9_000_000,
        }
    }
).costs
START = datetime(2026, 1, 31, 22, 59, 59, 999_000, tzinfo=UTC)  # an hour, day, month edge ahead


def fresh(cost: int, now: datetime) -> tuple[BudgetAsk, ...]:
    assert COSTS is not None
    return tuple(
        BudgetAsk(
            window.scope,
            window.limit,
            window.reset,
            period_start(window.reset, now),
            next_reset(window.reset, now),
            cost,
            Code.COST_LIMITED,
            window.label,
        )
        for window in COSTS.windows
    )


@given(
    steps=st.lists(
        st.tuples(st.integers(-7_200_000, 7_200_000), st.sampled_from([0, 100, 5_000])),
        max_size=60,
    )
)
def test_cached_asks_equal_fresh_ones_at_every_instant(steps: list[tuple[int, int]]) -> None:
    assert COSTS is not None
    cache = CostWindowAsks(CurrentPeriods(), max_entries=2)
    now = START
    for step_ms, cost in steps:
        now += timedelta(milliseconds=step_ms)
        assert cache.asks(COSTS, cost, now) == fresh(cost, now)


def test_asks_are_reused_within_the_period_and_remade_past_its_edge() -> None:
    assert COSTS is not None
    cache = CostWindowAsks(CurrentPeriods())
    first = cache.asks(COSTS, 100, START)
    assert cache.asks(COSTS, 100, START + timedelta(microseconds=500)) is first
    after = cache.asks(COSTS, 100, START + timedelta(milliseconds=1))  # 23:00, a new hour
    assert after is not first and after == fresh(100, START + timedelta(milliseconds=1))
