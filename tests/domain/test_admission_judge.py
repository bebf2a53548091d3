"""judge's one-pass path for admitted requests gives exactly what judge_reference gives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from keyplane.domain import gcra
from keyplane.domain.admission import (
    Admission,
    BudgetAsk,
    WindowAsk,
    WindowKind,
    admit_at_once,
    check_windows,
    from_micros,
    judge,
    judge_reference,
    micros,
)
from keyplane.domain.decisions import Code
from keyplane.domain.periods import Reset

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@st.composite
def windows(draw: st.DrawFn) -> tuple[WindowAsk, gcra.WindowState]:
    limit = draw(st.integers(1, 50))
    window = gcra.Window(limit, draw(st.sampled_from([1, 60, 86_400])) * gcra.MICROS, limit)
    cost = draw(st.integers(0, 60))
    kind = draw(st.sampled_from(list(WindowKind)))
    name = draw(st.sampled_from(["per_second", "per_minute", "budget", "input_per_minute"]))
    # A stored TAT anywhere from empty to well past full, as a limiter would hold it.
    tat = draw(st.none() | st.integers(0, 3 * window.capacity))
    now_us = micros(NOW)
    if tat is not None:
        tat += now_us * limit - window.capacity
    state, _ = gcra.check(window, tat, now_us, cost)
    return WindowAsk(name, kind, window, cost), state


@st.composite
def budgets(draw: st.DrawFn) -> tuple[BudgetAsk, int | None]:
    limit = draw(st.none() | st.integers(0, 10**6))
    reset_at = draw(st.none() | st.just(NOW + timedelta(days=3)))
    ask = BudgetAsk(
        draw(st.sampled_from(["", "gpt-4*", "\u00a2hourly"])),
        limit,
        Reset.MONTHLY,
        NOW - timedelta(days=1),
        reset_at,
        draw(st.integers(0, 10**6)),
        draw(st.sampled_from([Code.BUDGET_EXCEEDED, Code.COST_LIMITED])),
        draw(st.none() | st.sampled_from(["costs.per_hour_max", "budget"])),
        draw(st.none() | st.integers(0, 100)) if draw(st.integers(0, 4)) == 0 else None,
    )
    return ask, None if limit is None else draw(st.integers(0, limit))


def admission_of(
    asks: list[WindowAsk], budget_asks: list[tuple[BudgetAsk, int | None]], max_parallel: int | None
) -> Admission:
    return Admission(
        "key_1",
        "req_1",
        NOW + timedelta(minutes=1),
        tuple(asks),
        max_parallel,
        tuple(ask for ask, _ in budget_asks),
    )


@given(
    st.lists(windows(), max_size=7),
    st.lists(budgets(), max_size=5),
    st.none() | st.integers(1, 5),
    st.integers(0, 5),
)
@settings(max_examples=500)
def test_judge_agrees_with_the_reference(
    asks: list[tuple[WindowAsk, gcra.WindowState]],
    budget_asks: list[tuple[BudgetAsk, int | None]],
    max_parallel: int | None,
    free_slots: int,
) -> None:
    admission = admission_of([ask for ask, _ in asks], budget_asks, max_parallel)
    states = [state for _, state in asks]
    lefts = [left for _, left in budget_asks if left is not None]
    slots = None if max_parallel is None else free_slots
    assert judge(admission, NOW, slots, states, lefts) == judge_reference(
        admission, NOW, slots, states, lefts
    )


@given(st.integers(-(10**15), 10**20))
def test_from_micros_is_the_epoch_plus_that_many_microseconds(value: int) -> None:
    epoch, latest = datetime(1970, 1, 1, tzinfo=UTC), datetime(9999, 1, 1, tzinfo=UTC)
    expected = latest if value >= micros(latest) else epoch + timedelta(microseconds=value)
    assert from_micros(value) == expected
    if value < micros(latest):
        assert micros(from_micros(value)) == value


@st.composite
def window_asks(draw: st.DrawFn) -> tuple[WindowAsk, int | None]:
    """A window ask and the TAT a limiter holds for it (None: never used), from empty to
    well past full; limits up to 10^12 (token windows) so the scaled times are big ints."""
    limit = draw(st.integers(1, 50) | st.integers(1, 10**12))
    period = draw(st.sampled_from([1, 60, 86_400])) * gcra.MICROS
    window = gcra.Window(limit, period, draw(st.integers(1, limit)))
    ask = WindowAsk(
        draw(st.sampled_from(["per_second", "per_minute", "input_per_minute"])),
        draw(st.sampled_from(list(WindowKind))),
        window,
        draw(st.integers(0, 60)),
        calendar_day=draw(st.integers(0, 9)) == 0,
    )
    now = micros(NOW) * limit
    if draw(st.booleans()):
        # Within two requests of full, either side: where an off-by-one would show.
        edge = now + window.capacity - ask.cost * period
        return ask, edge + draw(st.integers(-2 * period, 2 * period))
    tat = draw(st.none() | st.integers(0, 3 * window.capacity))
    return ask, None if tat is None else tat + now - window.capacity


@given(
    st.lists(window_asks(), max_size=7),
    st.lists(budgets(), max_size=5),
    st.none() | st.integers(1, 5),
    st.sampled_from([0, 0, 0, 1, 999_999]),
)
@settings(max_examples=500)
def test_admit_at_once_agrees_with_check_windows_then_judge(
    asks: list[tuple[WindowAsk, int | None]],
    budget_asks: list[tuple[BudgetAsk, int | None]],
    max_parallel: int | None,
    offset_us: int,
) -> None:
    """The memory limiter's one pass gives the verdict and the TATs the reference gives, and
    is taken for every admitted request it is meant for (else the limiter would lose its
    speed silently); anything else it leaves to the reference."""
    admission = admission_of([ask for ask, _ in asks], budget_asks, max_parallel)
    tats = [tat for _, tat in asks]
    lefts = [left for _, left in budget_asks if left is not None]
    now_us = micros(NOW) + offset_us
    now = from_micros(now_us)
    window_states, advanced = check_windows(admission.windows, tats, now_us)
    expected = judge_reference(admission, now, None, window_states, lefts)
    at_once = admit_at_once(admission, tats, lefts, now_us)
    common = (
        max_parallel is None
        and not any(ask.calendar_day for ask in admission.windows)
        and not any(budget.carry is not None for budget in admission.budgets)
    )
    if common and expected.refusal is None:
        assert at_once is not None
    if at_once is not None:
        result, new_tats = at_once
        assert result == expected
        assert new_tats == advanced
        assert judge(admission, now, None, window_states, lefts) == result
