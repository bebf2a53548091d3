"""Limits for one process: :class:`MemoryLimiter`.

Each method's critical section is plain synchronous code between two awaits, so one admission
is one atomic step (see :class:`keyplane.limits.base.Limiter`).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from keyplane.domain import gcra
from keyplane.domain.admission import (
    DAY_US,
    Admission,
    AdmissionResult,
    BudgetAsk,
    Settlement,
    WindowAsk,
    admit_at_once,
    check_windows,
    judge,
    micros,
    scope_counts,
    token_delta,
)
from keyplane.domain.clock import Clock
from keyplane.domain.periods import Reset
from keyplane.limits.base import CounterSeeder, SingleFlight

_WindowKey = tuple[str, str, str, int, int, bool]


def _window_key(key_id: str, ask: WindowAsk) -> _WindowKey:
    window = ask.window
    return (key_id, ask.kind, ask.name, window.limit, window.period_us, ask.calendar_day)


def _reserves_money(budgets: tuple[BudgetAsk, ...]) -> bool:
    """Whether an admitted request reserves an amount of one of these budgets."""
    # A loop, not any() over a generator: this runs on every admitted verify.
    for budget in budgets:  # noqa: SIM110
        if budget.cost and budget.limit is not None:
            return True
    return False


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


class MemoryLimiter:
    """Limits for one process. Each method's critical section has no await inside it.

    Args:
        seeder: installs a missing budget counter from the ledger (once per counter at a time,
            however many admissions wait for it).
        remember_expired: how long the token estimate of a reservation that expired unsettled
            is kept, so a late report corrects it instead of charging the tokens twice.
        clock: read again when an admission had to wait for a seed, so the decision is made at
            the time it is made: a request that waited over a window's burst time with its
            caller's ``now`` looked stale and was refused. None: always the caller's ``now``.
    """

    def __init__(
        self,
        seeder: CounterSeeder,
        remember_expired: timedelta = timedelta(hours=1),
        *,
        clock: Clock | None = None,
    ) -> None:
        self._seeder = seeder
        self._clock = clock
        # One seeding per counter at a time, however many admissions wait for it.
        self._seeding = SingleFlight()
        self._remember_expired = remember_expired
        # Token estimates of reservations that expired unsettled, by key and request id, so a
        # late usage report corrects its estimate instead of charging the tokens twice.
        self._expired: dict[tuple[str, str], tuple[int, int, datetime]] = {}
        # (key id, kind, name, limit, period, calendar day) -> scaled TAT; a changed window
        # starts afresh.
        self._tats: dict[_WindowKey, int] = {}
        self._counters: dict[str, dict[str, _Counter]] = {}
        self._reservations: dict[str, dict[str, _Reservation]] = {}
        #: Slots held per key (the reservations that hold one).
        self._slots: dict[str, int] = {}
        #: (hold until, key id, request id): reservations by expiry; entries may be stale.
        self._expiry: list[tuple[datetime, str, str]] = []
        #: The latest time an admission, settlement or sweep was made at (see ``_at``).
        self._latest: datetime | None = None

    def _at(self, now: datetime) -> datetime:
        """The time a step is made at: the caller's ``now``, never before an earlier step's.

        Callers read the clock before they await (a key load, a seed), so their steps can
        arrive here out of order. A window checked at a time before one already applied finds
        its TAT ahead of now by the difference and refuses a request it has room for: 49 of a
        burst of 50 against 50 a minute. The step really happens after the earlier one, so it
        takes that one's time.
        """
        latest = self._latest
        if latest is not None and now < latest:
            return latest
        self._latest = now
        return now

    async def admit(self, admission: Admission, now: datetime) -> AdmissionResult:
        waited = False
        key_id = admission.key_id
        for budget in admission.budgets:
            # A live counter (nearly always) needs no coroutine made and awaited.
            if not self._has_counter(key_id, budget.scope, budget.reset, budget.period_start):
                waited = await self._ensure_counter(key_id, budget) or waited
        if waited and self._clock is not None:
            # Seeding reads the database: it may take long enough for ``now`` to be stale.
            now = max(now, self._clock.now())
        # From here to the return there is no await: the check-and-consume is atomic.
        return self._admit(admission, self._at(now))

    def _has_counter(self, key_id: str, scope: str, reset: Reset, period_start: datetime) -> bool:
        counter = self._counters.get(key_id, {}).get(scope)
        return (
            counter is not None and counter.reset is reset and counter.period_start == period_start
        )

    async def _ensure_counter(self, key_id: str, budget: BudgetAsk) -> bool:
        """Seed the budget's counter unless it is live; True when this had to wait for it."""
        scope, reset, start = budget.scope, budget.reset, budget.period_start
        if self._has_counter(key_id, scope, reset, start):
            return False
        await self._seeding.run(
            (key_id, scope, reset, start),
            lambda: self._seeder.seed(key_id, scope, reset, start, self),
        )
        return True

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
        now_us = micros(now)
        self._expire_due(now)
        held = self._reservations.get(key_id, {})
        free: int | None = None
        if admission.max_parallel is not None:
            # A retried verify (same request id) reuses its own slot rather than taking another.
            own = held.get(admission.request_id)
            in_use = self._slots.get(key_id, 0) - (1 if own is not None and own.holds_slot else 0)
            free = max(0, admission.max_parallel - in_use)
        window_keys = [_window_key(key_id, ask) for ask in admission.windows]
        stored = self._tats
        tats = [stored.get(k) for k in window_keys]
        counters = self._counters.get(key_id, {})
        lefts = [
            max(0, budget.limit - counters[budget.scope].spent - counters[budget.scope].reserved)
            for budget in admission.budgets
            if budget.limit is not None
        ]
        new_tats: Sequence[int | None]
        at_once = admit_at_once(admission, tats, lefts, now_us)
        if at_once is not None:
            result, new_tats = at_once
        else:
            window_states, advanced = check_windows(admission.windows, tats, now_us)
            result = judge(admission, now, free, window_states, lefts)
            if result.refusal is not None:
                return result  # a refused request consumes nothing
            new_tats = advanced

        # Everything allows the request: consume it all.
        for window_key, tat in zip(window_keys, new_tats, strict=True):
            if tat is not None:
                self._tats[window_key] = tat
        reservation = held.get(admission.request_id)
        if (
            reservation is None
            and admission.max_parallel is None
            and not admission.tokens_in
            and not admission.tokens_out
            and not _reserves_money(admission.budgets)
        ):
            return result  # nothing held: no reservation to make (most verifies without cost)
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
        now = self._at(now)
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
        now_us = micros(now)
        for ask in settlement.token_windows:
            delta = token_delta(
                ask.counts, settlement.input_tokens, settlement.output_tokens
            ) - token_delta(ask.counts, estimated_in, estimated_out)
            if delta:
                window_key = _window_key(key_id, ask)
                adjusted = gcra.adjust(ask.window, self._tats.get(window_key), now_us, delta)
                if adjusted is not None:
                    self._tats[window_key] = adjusted

    async def add_spent(
        self, key_id: str, model: str | None, cost: int, recorded_at: datetime
    ) -> None:
        if not cost:
            return
        for scope, counter in self._counters.get(key_id, {}).items():
            if not scope_counts(scope, model):
                continue
            if recorded_at >= counter.period_start:
                counter.spent += cost

    async def reset(self, key_id: str, windows: Sequence[WindowAsk], slots: bool) -> int:
        # By kind and name whatever the limit: the fallback's shares of a window (limit / N)
        # are the same window to the operator.
        names = {(ask.kind, ask.name) for ask in windows}
        for window_key in [k for k in self._tats if k[0] == key_id and (k[1], k[2]) in names]:
            del self._tats[window_key]
        if not slots:
            return 0
        freed = 0
        for reservation in self._reservations.get(key_id, {}).values():
            if reservation.holds_slot:
                reservation.holds_slot = False
                freed += 1
        self._slots.pop(key_id, None)
        return freed

    async def expire(self, now: datetime) -> int:
        now = self._at(now)
        released = self._expire_due(now)
        for forgotten in [k for k, (_, _, until) in self._expired.items() if until <= now]:
            del self._expired[forgotten]
        now_us = micros(now)
        day_us = now_us - now_us % DAY_US
        for window_key in [
            k for k, tat in self._tats.items() if tat <= (day_us if k[5] else now_us) * k[3]
        ]:
            del self._tats[window_key]  # a window back to full needs no state
        return released
