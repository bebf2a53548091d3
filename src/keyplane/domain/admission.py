"""What one verify asks of the limits, and the verdict on it: pure admission types.

An :class:`Admission` names every rate and token window, the concurrency slot and every budget
of one request; a limiter (:mod:`keyplane.limits`) checks them all and consumes them all or
none. :func:`judge` turns the state of those limits into the verdict, the same for every
limiter, so the in-memory and the Redis implementation answer alike to the microsecond.

Kinds are enums (``StrEnum``: they compare equal to, and render as, the strings the API and
the Redis key names have always used).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import NamedTuple

from keyplane.domain import gcra, globs
from keyplane.domain.decisions import Code
from keyplane.domain.frozen import fast_init
from keyplane.domain.periods import Reset

#: The longest a verify may wait, queued, for a concurrency slot (``wait_ms``).
MAX_WAIT_MS = 30_000

#: A budget's reset period (daily, weekly, monthly at UTC boundaries, or never).
BudgetReset = Reset


class WindowKind(StrEnum):
    """What a window counts: requests, or tokens."""

    RATE = "rate"
    TOKENS = "tokens"


class TokenCount(StrEnum):
    """Which tokens a token window counts."""

    INPUT = "input"
    OUTPUT = "output"
    TOTAL = "total"


class Dimension(StrEnum):
    """The kind of a limit reported back (``LimitState.kind``); budget amounts are micros."""

    RATE = "rate"
    TOKENS = "tokens"
    CONCURRENCY = "concurrency"
    BUDGET = "budget"


@fast_init
@dataclass(frozen=True, slots=True)
class WindowAsk:
    """A rate or token window and what this request costs in it."""

    name: str
    kind: WindowKind
    window: gcra.Window
    cost: int
    #: Which tokens a token window counts; None for rate windows.
    counts: TokenCount | None = None
    #: Counts per UTC calendar day (seed 004's ``max_requests_per_day``) rather than over a
    #: rolling period: see :func:`window_now_us`.
    calendar_day: bool = False


#: A UTC day in microseconds (Unix time has no leap seconds, so every day is this long).
DAY_US = 86_400 * 1_000_000


def window_now_us(ask: WindowAsk, now_us: int) -> int:
    """The instant a window is checked at: ``now``, or for a calendar-day window the start of
    now's UTC day.

    A GCRA window of ``limit`` per day with a burst of ``limit``, checked at the start of the
    day, admits exactly ``limit`` requests that day (all at one instant: nothing drips back)
    and is full again at the next midnight (a day's worth of refill pays any day's use), so
    the same limiters count calendar days exactly, with no state of their own.
    """
    return now_us - now_us % DAY_US if ask.calendar_day else now_us


def check_window(
    ask: WindowAsk, tat: int | None, now_us: int
) -> tuple[gcra.WindowState, int | None]:
    """:func:`gcra.check` of one window at :func:`window_now_us`; a calendar-day window is
    full again, and a refused request may retry, at the next UTC midnight."""
    at = window_now_us(ask, now_us)
    state, new_tat = gcra.check(ask.window, tat, at, ask.cost)
    if not ask.calendar_day:
        return state, new_tat
    midnight = at + DAY_US
    retry = None if state.retry_after_us is None else midnight - now_us
    return gcra.WindowState(state.allowed, state.remaining, midnight, retry), new_tat


def check_windows(
    asks: Sequence[WindowAsk], tats: Sequence[int | None], now_us: int
) -> tuple[list[gcra.WindowState], list[int | None]]:
    """Every window checked (:func:`check_window`); the TATs to store advance only when all of
    them allow the request (as :func:`gcra.check_all`)."""
    states: list[gcra.WindowState] = []
    advanced: list[int | None] = []
    for ask, tat in zip(asks, tats, strict=True):
        # Rolling windows (nearly all) straight to gcra: this runs on every verify.
        if ask.calendar_day:
            state, new_tat = check_window(ask, tat, now_us)
        else:
            state, new_tat = gcra.check(ask.window, tat, now_us, ask.cost)
        states.append(state)
        advanced.append(new_tat)
    allowed = all(state.allowed for state in states)
    return states, (advanced if allowed else list(tats))


#: Starts the scope of a ``costs`` window's counter. Model patterns are printable ASCII, so
#: no per-model budget's scope can start with it.
COST_SCOPE_MARK = "\u00a2"  # the cent sign


def cost_scope(reset: Reset, model_pattern: str | None = None) -> str:
    """The counter scope of a cost window: ``"¢hourly"`` counts every model's spending,
    ``"¢daily:gpt-4*"`` only that of the models matching the pattern."""
    scope = f"{COST_SCOPE_MARK}{reset.value}"
    return scope if model_pattern is None else f"{scope}:{model_pattern}"


def scope_pattern(scope: str) -> str | None:
    """The model pattern a budget counter of ``scope`` counts, or None for every model."""
    if scope.startswith(COST_SCOPE_MARK):
        _, colon, pattern = scope.partition(":")
        return pattern if colon else None
    return scope or None


def scope_counts(scope: str, model: str | None) -> bool:
    """Whether spending on ``model`` counts in a budget counter of ``scope``."""
    pattern = scope_pattern(scope)
    return pattern is None or (model is not None and globs.model_matches(pattern, model))


@fast_init
@dataclass(frozen=True, slots=True)
class BudgetAsk:
    #: "" for the key's budget, a model pattern for a per-model budget, or a cost window's
    #: scope (:func:`cost_scope`).
    scope: str
    limit: int | None
    reset: Reset
    period_start: datetime
    reset_at: datetime | None
    cost: int
    #: The code of a refusal by this budget.
    refusal: Code = Code.BUDGET_EXCEEDED
    #: Its name in the verdict's limits; None: "budget" or "budget:<pattern>".
    name: str | None = None
    #: Of ``limit``, what carried over from the previous period (``domain/rollover.py``);
    #: None for a budget without rollover.
    carry: int | None = None

    @property
    def limit_name(self) -> str:
        """Its name in the verdict's limits: ``name``, else "budget" or "budget:<scope>"."""
        return self.name or ("budget" if self.scope == "" else f"budget:{self.scope}")

    def fits(self, left: int) -> bool:
        """Whether this request's cost fits in ``left``; with no estimate (cost 0), a request
        still needs something left to spend."""
        return self.cost <= left and (self.cost > 0 or left > 0)


@fast_init
@dataclass(frozen=True, slots=True)
class Admission:
    """Everything one verify asks of the limits."""

    key_id: str
    request_id: str
    hold_until: datetime
    windows: tuple[WindowAsk, ...] = ()
    #: The concurrency limit, when the request takes a slot.
    max_parallel: int | None = None
    budgets: tuple[BudgetAsk, ...] = ()
    tokens_in: int = 0
    tokens_out: int = 0


class LimitState(NamedTuple):
    """One limit's state in a verdict. A named tuple, not a slotted dataclass: a loaded verify
    makes one per window and budget, and a tuple is the cheapest immutable record Python
    builds (about half the cost). Read by name only, never unpacked or indexed."""

    name: str
    kind: Dimension
    limit: int
    remaining: int
    reset_at: datetime | None
    #: Budgets with rollover: what of ``limit`` (the period's effective limit) carried over.
    carry: int | None = None


@fast_init
@dataclass(frozen=True, slots=True)
class AdmissionResult:
    refusal: Code | None
    limits: tuple[LimitState, ...]
    #: Seconds until the request could pass, when refused and known.
    retry_after: float | None = None


@fast_init
@dataclass(frozen=True, slots=True)
class Settlement:
    """A committed usage report, as the limits see it."""

    key_id: str
    request_id: str | None
    input_tokens: int
    output_tokens: int
    #: The key's token windows now, so an estimate can be corrected.
    token_windows: tuple[WindowAsk, ...] = ()


_DIMENSION_OF = {WindowKind.RATE: Dimension.RATE, WindowKind.TOKENS: Dimension.TOKENS}

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST_US = (datetime(9999, 1, 1, tzinfo=UTC) - EPOCH) // timedelta(microseconds=1)


def micros(when: datetime) -> int:
    """Microseconds since the Unix epoch, exactly (no float on the way)."""
    delta = when - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime:
    """The instant ``value`` microseconds after the epoch, at most the year 9999."""
    # An absurd overrun (10^12 tokens reported against 1 per minute) can push a window's
    # reset past the last representable datetime; "the year 9999" says the same.
    seconds, micro = divmod(min(value, _LATEST_US), 1_000_000)
    # Whole seconds and the rest: timedelta normalises a huge microsecond count slowly, and
    # a loaded verify makes one of these per window.
    return EPOCH + timedelta(0, seconds, micro)


def token_delta(counts: TokenCount | str | None, tokens_in: int, tokens_out: int) -> int:
    """What a request's tokens cost in a window counting ``counts`` (rate windows: total)."""
    if counts == TokenCount.INPUT:
        return tokens_in
    if counts == TokenCount.OUTPUT:
        return tokens_out
    return tokens_in + tokens_out


def judge(
    admission: Admission,
    now: datetime,
    free_slots: int | None,
    window_states: Sequence[gcra.WindowState],
    budget_left: Sequence[int],
) -> AdmissionResult:
    """The verdict on an admission from the state of its limits, the same for every limiter
    (see :func:`judge_reference`, whose result this always is).

    Nearly every request is admitted: that case is answered in one pass with no refusal
    bookkeeping; anything refused goes to the reference.
    """
    if (admission.max_parallel is not None and free_slots is not None) or any(
        budget.carry is not None for budget in admission.budgets
    ):
        # Slots and carries (rollover) are rarer: only the reference reports them.
        return judge_reference(admission, now, free_slots, window_states, budget_left)
    states: list[LimitState] = []
    append = states.append
    for ask, state in zip(admission.windows, window_states, strict=True):
        if not state.allowed:
            return judge_reference(admission, now, free_slots, window_states, budget_left)
        append(
            LimitState(
                ask.name,
                _DIMENSION_OF[ask.kind],
                ask.window.limit,
                state.remaining,
                from_micros(state.reset_at_us),
            )
        )
    limited = [budget for budget in admission.budgets if budget.limit is not None]
    if len(limited) != len(budget_left):
        return judge_reference(admission, now, free_slots, window_states, budget_left)
    for budget, left in zip(limited, budget_left, strict=True):
        limit: int = budget.limit  # type: ignore[assignment]
        if not budget.fits(left):
            return judge_reference(admission, now, free_slots, window_states, budget_left)
        append(
            LimitState(
                budget.limit_name, Dimension.BUDGET, limit, left - budget.cost, budget.reset_at
            )
        )
    return AdmissionResult(None, tuple(states))


def admit_at_once(
    admission: Admission, tats: Sequence[int | None], budget_left: Sequence[int], now_us: int
) -> tuple[AdmissionResult, list[int]] | None:
    """:func:`check_windows` then :func:`judge` in one pass, for the request nearly every
    verify is: every window rolling and allowing it, every budget with room, no concurrency
    slot, no carry. The verdict and the TATs to store, exactly as those two give them; ``None``
    for anything else (a refusal above all), which the caller asks them.

    ``budget_left``: what each budget with a limit has left before this request, in order.
    """
    if admission.max_parallel is not None:
        return None
    states: list[LimitState] = []
    append = states.append
    new_tats: list[int] = []
    # Locals: this loop runs for every window of nearly every verify.
    state, dimension_of, epoch, delta, latest = (
        LimitState,
        _DIMENSION_OF,
        EPOCH,
        timedelta,
        _LATEST_US,
    )
    for ask, tat in zip(admission.windows, tats, strict=True):
        window = ask.window
        if ask.calendar_day:
            return None
        # gcra.check's admitted branch, inline (times scaled by the limit).
        limit = window.limit
        period = window.period_us
        capacity = window.burst * period
        now = now_us * limit
        new_tat = (now if tat is None or tat < now else tat) + ask.cost * period
        ahead = new_tat - now
        if ahead > capacity:
            return None
        new_tats.append(new_tat)
        reset_us = -(-new_tat // limit)
        seconds, micro = divmod(reset_us if reset_us < latest else latest, 1_000_000)
        append(
            state(
                ask.name,
                dimension_of[ask.kind],
                limit,
                (capacity - ahead) // period,
                epoch + delta(0, seconds, micro),
            )
        )
    lefts = iter(budget_left)
    for budget in admission.budgets:
        if budget.carry is not None:
            return None
        amount = budget.limit
        if amount is None:
            continue
        left = next(lefts, None)
        if left is None or not budget.fits(left):
            return None
        append(
            LimitState(
                budget.limit_name, Dimension.BUDGET, amount, left - budget.cost, budget.reset_at
            )
        )
    if next(lefts, None) is not None:
        return None
    return AdmissionResult(None, tuple(states)), new_tats


def judge_reference(
    admission: Admission,
    now: datetime,
    free_slots: int | None,
    window_states: Sequence[gcra.WindowState],
    budget_left: Sequence[int],
) -> AdmissionResult:
    """The verdict on an admission from the state of its limits, the same for every limiter.

    ``free_slots``: slots free before this request (None when it takes none);
    ``window_states``: one per window, as :func:`gcra.check` gave it; ``budget_left``: what
    each budget with a limit has left before this request, in order. Refusal codes come in the
    documented order; a refused request reports what is left before it, an admitted one what
    is left after.
    """
    # (name, kind, limit, remaining if refused, remaining if admitted, reset time)
    reports: list[tuple[str, Dimension, int, int, int, datetime | None]] = []
    refusals: list[tuple[Code, float | None]] = []
    if admission.max_parallel is not None and free_slots is not None:
        if free_slots < 1:
            refusals.append((Code.CONCURRENCY_EXCEEDED, None))
        reports.append(
            (
                "concurrency",
                Dimension.CONCURRENCY,
                admission.max_parallel,
                free_slots,
                free_slots - 1,
                None,
            )
        )
    for ask, state in zip(admission.windows, window_states, strict=True):
        before = state.remaining + ask.cost if state.allowed else state.remaining
        reports.append(
            (
                ask.name,
                _DIMENSION_OF[ask.kind],
                ask.window.limit,
                before,
                state.remaining,
                from_micros(state.reset_at_us),
            )
        )
    for kind, code in (
        (WindowKind.RATE, Code.RATE_LIMITED),
        (WindowKind.TOKENS, Code.TOKEN_LIMITED),
    ):
        waits = [
            state.retry_after_us
            for ask, state in zip(admission.windows, window_states, strict=True)
            if ask.kind == kind and not state.allowed
        ]
        if waits:
            retry = None if None in waits else max(w or 0 for w in waits) / 1_000_000
            refusals.append((code, retry))
    limited = [(b, b.limit) for b in admission.budgets if b.limit is not None]
    # Per refusal code, in the order first met, the waits until each refusing budget resets:
    # the request passes once the last of them has reset.
    budget_waits: dict[Code, list[float | None]] = {}
    for (budget, limit), left in zip(limited, budget_left, strict=True):
        name = budget.limit_name
        reports.append((name, Dimension.BUDGET, limit, left, left - budget.cost, budget.reset_at))
        if not budget.fits(left):
            wait = None if budget.reset_at is None else (budget.reset_at - now).total_seconds()
            budget_waits.setdefault(budget.refusal, []).append(wait)
    for code, budget_wait in budget_waits.items():
        known = [wait for wait in budget_wait if wait is not None]
        refusals.append((code, max(known) if len(known) == len(budget_wait) else None))
    carries = {b.limit_name: b.carry for b in admission.budgets if b.carry is not None}
    states = tuple(
        LimitState(name, kind, limit, before if refusals else after, reset_at, carries.get(name))
        for name, kind, limit, before, after, reset_at in reports
    )
    if not refusals:
        return AdmissionResult(None, states)
    code, retry = refusals[0]
    if retry is not None:
        retry = math.ceil(retry * 1000) / 1000
    return AdmissionResult(code, states, retry)
