"""``CurrentPeriods`` answers as ``period_start`` and ``next_reset`` do, whatever the order of
the instants it is asked about (time moving on, or a caller's older ``now``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from keyplane.domain.periods import CurrentPeriods, Reset, next_reset, period_start

START = datetime(2026, 12, 31, 22, 0, tzinfo=UTC)


@settings(max_examples=100, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(list(Reset)), st.integers(-90 * 86_400, 90 * 86_400)),
        max_size=30,
    )
)
def test_current_periods_agree_with_the_period_functions(steps: list[tuple[Reset, int]]) -> None:
    periods = CurrentPeriods()
    for reset, offset in steps:
        now = START + timedelta(seconds=offset)
        assert periods.bounds(reset, now) == (period_start(reset, now), next_reset(reset, now))


def test_the_hour_is_a_period() -> None:
    now = datetime(2026, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
    assert period_start(Reset.HOURLY, now) == datetime(2026, 12, 31, 23, tzinfo=UTC)
    assert next_reset(Reset.HOURLY, now) == datetime(2027, 1, 1, tzinfo=UTC)
