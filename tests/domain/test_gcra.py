"""GCRA: exact counts, bursts, all-or-nothing across windows, and corrections."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from keyplane.domain import gcra

MINUTE_US = 60 * gcra.MICROS


def _admit_many(window: gcra.Window, now_us: int, attempts: int) -> int:
    tat = None
    allowed = 0
    for _ in range(attempts):
        ok, _states, [tat] = gcra.check_all([window], [tat], now_us, [1])
        allowed += ok
    return allowed


@given(
    limit=st.integers(1, 5000),
    period=st.sampled_from([1, 7, 60, 3600, 86_400, 30 * 86_400]),
    extra=st.integers(0, 50),
)
def test_a_burst_at_one_instant_admits_exactly_the_burst(
    limit: int, period: int, extra: int
) -> None:
    window = gcra.Window(limit, period * gcra.MICROS, limit)
    assert _admit_many(window, 1_700_000_000 * gcra.MICROS, limit + extra) == limit


def test_burst_smaller_than_limit_admits_burst_then_paces() -> None:
    window = gcra.Window(limit=60, period_us=MINUTE_US, burst=5)  # one per second, 5 at once
    now = 1_000 * gcra.MICROS
    tat = None
    for _ in range(5):
        state, tat = gcra.check(window, tat, now, 1)
        assert state.allowed
    state, same = gcra.check(window, tat, now, 1)
    assert not state.allowed and same == tat
    assert state.retry_after_us == gcra.MICROS  # the next one is due in exactly one second
    state, _ = gcra.check(window, tat, now + gcra.MICROS, 1)
    assert state.allowed


def test_window_refills_one_unit_per_emission_interval() -> None:
    window = gcra.Window(50, MINUTE_US, 50)  # one unit back every 1.2 s
    now = 5 * MINUTE_US
    tat = None
    for _ in range(50):
        _, tat = gcra.check(window, tat, now, 1)
    state, _ = gcra.check(window, tat, now + 1_200_000 - 1, 1)
    assert not state.allowed and state.retry_after_us == 1
    state, _ = gcra.check(window, tat, now + 1_200_000, 1)
    assert state.allowed and state.remaining == 0
    state, _ = gcra.check(window, tat, now + MINUTE_US, 1)
    assert state.allowed and state.remaining == 49  # a full period later, all back
    assert state.reset_at_us == now + MINUTE_US + 1_200_000


def test_remaining_and_reset_reported() -> None:
    window = gcra.Window(10, MINUTE_US, 10)
    state, tat = gcra.check(window, None, 0, 3)
    assert state.allowed and state.remaining == 7
    assert state.reset_at_us == 3 * 6 * gcra.MICROS  # three emission intervals of 6 s
    assert tat == 3 * MINUTE_US


def test_all_or_nothing_across_windows() -> None:
    per_second = gcra.Window(2, gcra.MICROS, 2)
    per_minute = gcra.Window(100, MINUTE_US, 100)
    tats: list[int | None] = [None, None]
    now = 10 * MINUTE_US
    for _ in range(2):
        ok, _, tats = gcra.check_all([per_second, per_minute], tats, now, [1, 1])
        assert ok
    ok, states, after = gcra.check_all([per_second, per_minute], tats, now, [1, 1])
    assert not ok
    assert after == tats  # the per-minute window was not charged for the refused request
    assert [s.allowed for s in states] == [False, True]


def test_a_cost_beyond_the_burst_never_passes() -> None:
    window = gcra.Window(100, MINUTE_US, 100)
    state, _ = gcra.check(window, None, 0, 101)
    assert not state.allowed and state.retry_after_us is None


def test_adjust_charges_overruns_and_refunds_never_before_now() -> None:
    window = gcra.Window(100, MINUTE_US, 100)
    now = 100 * MINUTE_US
    _, tat = gcra.check(window, None, now, 50)
    overdrawn = gcra.adjust(window, tat, now, 100)  # actual was 150, past the burst
    state, _ = gcra.check(window, overdrawn, now, 0)
    assert not state.allowed  # even a free request waits until the overrun has drained
    refunded = gcra.adjust(window, tat, now, -1000)
    assert refunded == now * window.limit
