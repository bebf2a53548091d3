"""Rate, token, concurrency and budget limits: one atomic admission step per verify.

:class:`Limiter` is the interface. One call to :meth:`Limiter.admit` checks every window,
the concurrency slot and every budget of a request and, only if all of them allow it, consumes
them all: all or nothing. That is one atomic step in memory (:class:`MemoryLimiter`: plain
synchronous code between two awaits) and, for the scale-out issue, one Redis script.

Budgets count micro-credits: *spent* comes from the durable ledger (seeded once per key and
period, then advanced by each committed report), *reserved* is what admitted requests may still
spend. A request is admitted when ``spent + reserved + cost <= limit``, so concurrent verifies
can never take a budget below zero.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from keyplane.domain import gcra, globs
from keyplane.domain.decisions import Code
from keyplane.domain.periods import Reset

#: Seeds a budget counter from the ledger: reads what (key id, scope ("" or a model pattern))
#: spent in the period (reset, period start) and calls ``install_spent`` under the lock that
#: reports take to commit, so no report is missed or counted twice (``UsageLedger.seed``).
Seeder = Callable[[str, str, Reset, datetime], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class WindowAsk:
    """A rate or token window and what this request costs in it."""

    name: str
    kind: str  # "rate" or "tokens"
    window: gcra.Window
    cost: int
    #: Which tokens a token window counts ("input", "output", "total"); None for rate windows.
    counts: str | None = None


@dataclass(frozen=True, slots=True)
class BudgetAsk:
    #: "" for the key's budget, else the model pattern of a per-model budget.
    scope: str
    limit: int | None
    reset: Reset
    period_start: datetime
    reset_at: datetime | None
    cost: int


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


@dataclass(frozen=True, slots=True)
class LimitState:
    name: str
    kind: str  # "rate", "tokens", "concurrency" or "budget" (budget amounts in micros)
    limit: int
    remaining: int
    reset_at: datetime | None


@dataclass(frozen=True, slots=True)
class AdmissionResult:
    refusal: Code | None
    limits: tuple[LimitState, ...]
    #: Seconds until the request could pass, when refused and known.
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class Settlement:
    """A committed usage report, as the limits see it."""

    key_id: str
    request_id: str | None
    input_tokens: int
    output_tokens: int
    #: The key's token windows now, so an estimate can be corrected.
    token_windows: tuple[WindowAsk, ...] = ()


class Limiter(Protocol):
    async def admit(self, admission: Admission, now: datetime) -> AdmissionResult:
        """Check and (only if everything allows it) consume, in one atomic step."""
        ...

    async def settle(self, settlement: Settlement, now: datetime) -> None:
        """Release the request's reservation and slot; correct token estimates."""
        ...

    async def add_spent(
        self, key_id: str, model: str | None, cost: int, recorded_at: datetime
    ) -> None:
        """Advance the live budget counters that exist by a report the ledger is committing.

        Never creates a counter: a missing one is seeded from the ledger, report included.
        """
        ...

    async def install_spent(
        self, key_id: str, scope: str, reset: Reset, period_start: datetime, spent: int
    ) -> bool:
        """Install a budget counter read from the ledger, unless one for that period exists;
        True when this call installed it."""
        ...

    async def expire(self, now: datetime) -> int:
        """Release reservations and slots past their hold time; return how many."""
        ...


@dataclass
class _Counter:
    reset: Reset
    period_start: datetime
    spent: int
    reserved: int = 0


@dataclass
class _Reservation:
    hold_until: datetime
    holds_slot: bool
    budgets: dict[str, int] = field(default_factory=dict)
    tokens_in: int = 0
    tokens_out: int = 0


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(when: datetime) -> int:
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


_LATEST_US = (datetime(9999, 1, 1, tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1)


def _from_micros(micros: int) -> datetime:
    # An absurd overrun (10^12 tokens reported against 1 per minute) can push a window's
    # reset past the last representable datetime; "the year 9999" says the same.
    return _EPOCH + timedelta(microseconds=min(micros, _LATEST_US))


def _token_delta(counts: str | None, tokens_in: int, tokens_out: int) -> int:
    if counts == "input":
        return tokens_in
    if counts == "output":
        return tokens_out
    return tokens_in + tokens_out


def judge(
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
    reports: list[tuple[str, str, int, int, int, datetime | None]] = []
    refusals: list[tuple[Code, float | None]] = []
    if admission.max_parallel is not None and free_slots is not None:
        if free_slots < 1:
            refusals.append((Code.CONCURRENCY_EXCEEDED, None))
        reports.append(
            ("concurrency", "concurrency", admission.max_parallel, free_slots, free_slots - 1, None)
        )
    for ask, state in zip(admission.windows, window_states, strict=True):
        before = state.remaining + ask.cost if state.allowed else state.remaining
        reports.append(
            (
                ask.name,
                ask.kind,
                ask.window.limit,
                before,
                state.remaining,
                _from_micros(state.reset_at_us),
            )
        )
    for kind, code in (("rate", Code.RATE_LIMITED), ("tokens", Code.TOKEN_LIMITED)):
        waits = [
            state.retry_after_us
            for ask, state in zip(admission.windows, window_states, strict=True)
            if ask.kind == kind and not state.allowed
        ]
        if waits:
            retry = None if None in waits else max(w or 0 for w in waits) / 1_000_000
            refusals.append((code, retry))
    limited = [(b, b.limit) for b in admission.budgets if b.limit is not None]
    for (budget, limit), left in zip(limited, budget_left, strict=True):
        # With no estimate, a request still needs something left to spend.
        fits = budget.cost <= left and (budget.cost > 0 or left > 0)
        name = "budget" if budget.scope == "" else f"budget:{budget.scope}"
        reports.append((name, "budget", limit, left, left - budget.cost, budget.reset_at))
        if not fits:
            retry = None if budget.reset_at is None else (budget.reset_at - now).total_seconds()
            refusals.append((Code.BUDGET_EXCEEDED, retry))
    states = tuple(
        LimitState(name, kind, limit, before if refusals else after, reset_at)
        for name, kind, limit, before, after, reset_at in reports
    )
    if not refusals:
        return AdmissionResult(None, states)
    code, retry = refusals[0]
    if retry is not None:
        retry = math.ceil(retry * 1000) / 1000
    return AdmissionResult(code, states, retry)


class MemoryLimiter:
    """Limits for one process. Each method's critical section has no await inside it."""

    def __init__(self, seed: Seeder, remember_expired: timedelta = timedelta(hours=1)) -> None:
        self._seed = seed
        self._remember_expired = remember_expired
        # Token estimates of reservations that expired unsettled, by key and request id, so a
        # late usage report corrects its estimate instead of charging the tokens twice.
        self._expired: dict[tuple[str, str], tuple[int, int, datetime]] = {}
        # (key id, kind, name, limit, period) -> scaled TAT; a changed window starts afresh.
        self._tats: dict[tuple[str, str, str, int, int], int] = {}
        self._counters: dict[str, dict[str, _Counter]] = {}
        self._reservations: dict[str, dict[str, _Reservation]] = {}
        #: Slots held per key (the reservations that hold one).
        self._slots: dict[str, int] = {}
        #: (hold until, key id, request id): reservations by expiry; entries may be stale.
        self._expiry: list[tuple[datetime, str, str]] = []

    async def admit(self, admission: Admission, now: datetime) -> AdmissionResult:
        for budget in admission.budgets:
            await self._ensure_counter(admission.key_id, budget)
        # From here to the return there is no await: the check-and-consume is atomic.
        return self._admit(admission, now)

    def _has_counter(self, key_id: str, scope: str, reset: Reset, period_start: datetime) -> bool:
        counter = self._counters.get(key_id, {}).get(scope)
        return (
            counter is not None and counter.reset is reset and counter.period_start == period_start
        )

    async def _ensure_counter(self, key_id: str, budget: BudgetAsk) -> None:
        if not self._has_counter(key_id, budget.scope, budget.reset, budget.period_start):
            await self._seed(key_id, budget.scope, budget.reset, budget.period_start)

    async def install_spent(
        self, key_id: str, scope: str, reset: Reset, period_start: datetime, spent: int
    ) -> bool:
        """Install a counter read from the ledger (unless one for that period is live)."""
        if self._has_counter(key_id, scope, reset, period_start):
            return False
        counters = self._counters.setdefault(key_id, {})
        counter = counters.get(scope)
        # A new period starts from the ledger; money reserved in the old one stays reserved.
        reserved = 0 if counter is None else counter.reserved
        counters[scope] = _Counter(reset, period_start, spent, reserved)
        return True

    def _admit(self, admission: Admission, now: datetime) -> AdmissionResult:
        key_id = admission.key_id
        now_us = _micros(now)
        self._expire_due(now)
        held = self._reservations.get(key_id, {})
        free: int | None = None
        if admission.max_parallel is not None:
            # A retried verify (same request id) reuses its own slot rather than taking another.
            own = held.get(admission.request_id)
            in_use = self._slots.get(key_id, 0) - (1 if own is not None and own.holds_slot else 0)
            free = max(0, admission.max_parallel - in_use)
        window_keys = [
            (key_id, ask.kind, ask.name, ask.window.limit, ask.window.period_us)
            for ask in admission.windows
        ]
        _, window_states, new_tats = gcra.check_all(
            [ask.window for ask in admission.windows],
            [self._tats.get(k) for k in window_keys],
            now_us,
            [ask.cost for ask in admission.windows],
        )
        counters = self._counters.get(key_id, {})
        lefts = [
            max(0, budget.limit - counters[budget.scope].spent - counters[budget.scope].reserved)
            for budget in admission.budgets
            if budget.limit is not None
        ]
        result = judge(admission, now, free, window_states, lefts)
        if result.refusal is not None:
            return result  # a refused request consumes nothing

        # Everything allows the request: consume it all.
        for window_key, tat in zip(window_keys, new_tats, strict=True):
            if tat is not None:
                self._tats[window_key] = tat
        reservation = held.get(admission.request_id)
        if reservation is None:
            reservation = _Reservation(admission.hold_until, holds_slot=False)
        reservation.hold_until = max(reservation.hold_until, admission.hold_until)
        if admission.max_parallel is not None and not reservation.holds_slot:
            reservation.holds_slot = True
            self._slots[key_id] = self._slots.get(key_id, 0) + 1
        reservation.tokens_in += admission.tokens_in
        reservation.tokens_out += admission.tokens_out
        for budget in admission.budgets:
            if budget.cost and budget.limit is not None:
                self._counters[key_id][budget.scope].reserved += budget.cost
                reservation.budgets[budget.scope] = (
                    reservation.budgets.get(budget.scope, 0) + budget.cost
                )
        if (
            reservation.holds_slot
            or reservation.budgets
            or reservation.tokens_in
            or reservation.tokens_out
        ):  # something to settle later
            self._reservations.setdefault(key_id, {})[admission.request_id] = reservation
            heapq.heappush(self._expiry, (reservation.hold_until, key_id, admission.request_id))
        return result

    def _expire_due(self, now: datetime) -> int:
        """Release every reservation whose hold time has passed; cheap when none has."""
        released = 0
        while self._expiry and self._expiry[0][0] <= now:
            _, key_id, request_id = heapq.heappop(self._expiry)
            reservation = self._reservations.get(key_id, {}).get(request_id)
            if reservation is None or reservation.hold_until > now:
                continue  # settled already, or extended (a later heap entry covers it)
            self._take(key_id, request_id)
            released += 1
            if reservation.tokens_in or reservation.tokens_out:
                self._expired[(key_id, request_id)] = (
                    reservation.tokens_in,
                    reservation.tokens_out,
                    now + self._remember_expired,
                )
        return released

    def _take(self, key_id: str, request_id: str) -> _Reservation | None:
        """Remove a reservation and give back what it held."""
        held = self._reservations.get(key_id)
        reservation = None if held is None else held.pop(request_id, None)
        if held is None or reservation is None:
            return None
        if not held:
            del self._reservations[key_id]
        counters = self._counters.get(key_id, {})
        for scope, amount in reservation.budgets.items():
            if scope in counters:
                counters[scope].reserved -= amount
        if reservation.holds_slot:
            left = self._slots[key_id] - 1
            if left:
                self._slots[key_id] = left
            else:
                del self._slots[key_id]
        return reservation

    async def settle(self, settlement: Settlement, now: datetime) -> None:
        key_id = settlement.key_id
        estimated_in = estimated_out = 0
        if settlement.request_id is not None:
            reservation = self._take(key_id, settlement.request_id)
            if reservation is not None:
                estimated_in, estimated_out = reservation.tokens_in, reservation.tokens_out
            else:
                expired = self._expired.pop((key_id, settlement.request_id), None)
                if expired is not None:
                    estimated_in, estimated_out, _ = expired
        now_us = _micros(now)
        for ask in settlement.token_windows:
            delta = _token_delta(
                ask.counts, settlement.input_tokens, settlement.output_tokens
            ) - _token_delta(ask.counts, estimated_in, estimated_out)
            if delta:
                window_key = (key_id, ask.kind, ask.name, ask.window.limit, ask.window.period_us)
                adjusted = gcra.adjust(ask.window, self._tats.get(window_key), now_us, delta)
                if adjusted is not None:
                    self._tats[window_key] = adjusted

    async def add_spent(
        self, key_id: str, model: str | None, cost: int, recorded_at: datetime
    ) -> None:
        if not cost:
            return
        for scope, counter in self._counters.get(key_id, {}).items():
            if scope and (model is None or not globs.model_matches(scope, model)):
                continue
            if recorded_at >= counter.period_start:
                counter.spent += cost

    async def expire(self, now: datetime) -> int:
        released = self._expire_due(now)
        for forgotten in [k for k, (_, _, until) in self._expired.items() if until <= now]:
            del self._expired[forgotten]
        now_us = _micros(now)
        for window_key in [k for k, tat in self._tats.items() if tat <= now_us * k[3]]:
            del self._tats[window_key]  # a window back to full needs no state
        return released
