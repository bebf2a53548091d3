"""The in-memory limiter: atomic all-or-nothing admission, reservations, slots and budgets."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from keyplane.domain import gcra
from keyplane.domain.decisions import Code
from keyplane.domain.periods import Reset, next_reset, period_start
from keyplane.services.limits import (
    Admission,
    BudgetAsk,
    MemoryLimiter,
    Settlement,
    WindowAsk,
)

NOW = datetime(2026, 3, 31, 23, 59, 0, tzinfo=UTC)
MINUTE_US = 60 * gcra.MICROS


class Ledger:
    """Stands in for the ledger's seeding step: a fixed amount already spent."""

    def __init__(self, limiter_spent: int = 0) -> None:
        self.spent = limiter_spent
        self.seeds = 0
        self.limiter: MemoryLimiter

    async def seed(self, key_id: str, scope: str, reset: Reset, start: datetime) -> None:
        self.seeds += 1
        await asyncio.sleep(0)
        await self.limiter.install_spent(key_id, scope, reset, start, self.spent)


def limiter_with(spent: int = 0) -> tuple[MemoryLimiter, Ledger]:
    ledger = Ledger(spent)
    limiter = MemoryLimiter(ledger.seed)
    ledger.limiter = limiter
    return limiter, ledger


def budget(limit: int, cost: int, reset: Reset = Reset.MONTHLY, now: datetime = NOW) -> BudgetAsk:
    return BudgetAsk("", limit, reset, period_start(reset, now), next_reset(reset, now), cost)


def admission(request_id: str, **fields: object) -> Admission:
    return Admission(
        key_id="key_1", request_id=request_id, hold_until=NOW + timedelta(minutes=5), **fields
    )  # type: ignore[arg-type]


async def test_concurrent_reservations_never_overspend() -> None:
    limiter, ledger = limiter_with()
    results = await asyncio.gather(
        *(
            limiter.admit(admission(f"r{i}", budgets=(budget(5_000_000, 100_000),)), NOW)
            for i in range(1000)
        )
    )
    assert sum(r.refusal is None for r in results) == 50
    assert {r.refusal for r in results} == {None, Code.BUDGET_EXCEEDED}
    assert ledger.seeds >= 1


async def test_refusal_in_one_limit_consumes_nothing_in_the_others() -> None:
    limiter, _ = limiter_with(spent=4_950_000)
    rate = WindowAsk("per_minute", "rate", gcra.Window(10, MINUTE_US, 10), 1)
    # The budget refuses (only 0.05 left for a 0.10 request): the rate window stays untouched.
    for i in range(20):
        result = await limiter.admit(
            admission(f"r{i}", windows=(rate,), budgets=(budget(5_000_000, 100_000),)), NOW
        )
        assert result.refusal is Code.BUDGET_EXCEEDED
    result = await limiter.admit(admission("ok", windows=(rate,)), NOW)
    assert result.refusal is None
    assert result.limits[0].remaining == 9


async def test_settlement_releases_the_reservation_and_the_slot() -> None:
    limiter, _ = limiter_with()
    ask = admission("a", max_parallel=1, budgets=(budget(1_000_000, 1_000_000),))
    assert (await limiter.admit(ask, NOW)).refusal is None
    second = await limiter.admit(admission("b", max_parallel=1), NOW)
    assert second.refusal is Code.CONCURRENCY_EXCEEDED
    await limiter.settle(Settlement("key_1", "a", 0, 0), NOW)
    await limiter.add_spent("key_1", None, 250_000, NOW)  # the ledger committed 0.25 actually spent
    result = await limiter.admit(
        admission("c", max_parallel=1, budgets=(budget(1_000_000, 750_000),)), NOW
    )
    assert result.refusal is None
    [slot, money] = result.limits
    assert (slot.kind, slot.remaining) == ("concurrency", 0)
    assert (money.kind, money.remaining) == ("budget", 0)


async def test_unsettled_reservations_expire() -> None:
    limiter, _ = limiter_with()
    assert (await limiter.admit(admission("a", max_parallel=1), NOW)).refusal is None
    assert (await limiter.admit(admission("b", max_parallel=1), NOW)).refusal is not None
    assert await limiter.expire(NOW + timedelta(minutes=5)) == 1
    later = NOW + timedelta(minutes=5)
    result = await limiter.admit(
        Admission("key_1", "c", hold_until=later + timedelta(minutes=5), max_parallel=1), later
    )
    assert result.refusal is None


async def test_a_new_budget_period_starts_from_the_ledger() -> None:
    limiter, ledger = limiter_with(spent=5_000_000)
    result = await limiter.admit(admission("a", budgets=(budget(5_000_000, 1),)), NOW)
    assert result.refusal is Code.BUDGET_EXCEEDED
    assert result.retry_after == 60.0  # the month ends a minute after NOW
    april = NOW + timedelta(minutes=1)
    ledger.spent = 0  # nothing spent yet in April
    result = await limiter.admit(
        Admission(
            "key_1",
            "b",
            hold_until=april + timedelta(minutes=5),
            budgets=(budget(5_000_000, 1, now=april),),
        ),
        april,
    )
    assert result.refusal is None


async def test_token_estimates_are_corrected_on_settlement() -> None:
    limiter, _ = limiter_with()
    tokens = WindowAsk(
        "input_per_minute", "tokens", gcra.Window(1000, MINUTE_US, 1000), 800, "input"
    )
    result = await limiter.admit(admission("a", windows=(tokens,), tokens_in=800), NOW)
    assert result.refusal is None and result.limits[0].remaining == 200
    # It used 100 tokens, not 800: 700 come back.
    await limiter.settle(Settlement("key_1", "a", 100, 0, (tokens,)), NOW)
    probe = WindowAsk(
        "input_per_minute", "tokens", gcra.Window(1000, MINUTE_US, 1000), 900, "input"
    )
    result = await limiter.admit(admission("b", windows=(probe,), tokens_in=900), NOW)
    assert result.refusal is None and result.limits[0].remaining == 0
    result = await limiter.admit(admission("c", windows=(probe,), tokens_in=900), NOW)
    assert result.refusal is Code.TOKEN_LIMITED


async def test_a_late_report_corrects_the_estimate_instead_of_charging_twice() -> None:
    limiter, _ = limiter_with()
    window = gcra.Window(1000, MINUTE_US, 1000)
    ask = WindowAsk("input_per_minute", "tokens", window, 600, "input")
    assert (await limiter.admit(admission("a", windows=(ask,), tokens_in=600), NOW)).refusal is None
    later = NOW + timedelta(minutes=5)
    await limiter.expire(later)  # the reservation timed out unsettled
    await limiter.settle(Settlement("key_1", "a", 600, 0, (ask,)), later)
    # 600 tokens used once, five minutes ago: the window is full again.
    probe = WindowAsk("input_per_minute", "tokens", window, 1000, "input")
    result = await limiter.admit(
        Admission("key_1", "b", hold_until=later, windows=(probe,), tokens_in=1000), later
    )
    assert result.refusal is None


async def test_a_retried_verify_reuses_its_own_slot() -> None:
    limiter, _ = limiter_with()
    assert (await limiter.admit(admission("same", max_parallel=1), NOW)).refusal is None
    assert (await limiter.admit(admission("same", max_parallel=1), NOW)).refusal is None
    assert (await limiter.admit(admission("other", max_parallel=1), NOW)).refusal is not None


async def test_a_refused_request_reports_what_is_left_before_it() -> None:
    limiter, _ = limiter_with(spent=900_000)
    rate = WindowAsk("m", "rate", gcra.Window(10, MINUTE_US, 10), 1)
    result = await limiter.admit(
        admission("a", windows=(rate,), budgets=(budget(1_000_000, 200_000),)), NOW
    )
    assert result.refusal is Code.BUDGET_EXCEEDED
    assert [(s.name, s.remaining) for s in result.limits] == [("m", 10), ("budget", 100_000)]


async def test_an_absurd_overrun_does_not_break_the_window() -> None:
    limiter, _ = limiter_with()
    tokens = WindowAsk("input_per_minute", "tokens", gcra.Window(1, MINUTE_US, 1), 0, "input")
    await limiter.settle(Settlement("key_1", None, 10**12, 0, (tokens,)), NOW)
    result = await limiter.admit(admission("a", windows=(tokens,)), NOW)
    assert result.refusal is Code.TOKEN_LIMITED
    assert result.limits[0].reset_at is not None and result.limits[0].reset_at.year == 9999
