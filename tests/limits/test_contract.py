"""The limiter contract: the same scenarios against MemoryLimiter and RedisLimiter.

These are the only copies of these cases; what only one implementation does is tested in
``test_memory.py`` and ``test_redis.py``.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

from keyplane.domain import gcra
from keyplane.domain.admission import Admission, BudgetAsk, Settlement, WindowAsk
from keyplane.domain.decisions import Code
from keyplane.domain.periods import Reset, next_reset, period_start
from tests.limits.conftest import MakeLimits
from tests.limits.harness import MINUTE_US, NOW, admission, budget


async def test_concurrent_reservations_never_overspend(make_limits: MakeLimits) -> None:
    limits = make_limits()
    results = await asyncio.gather(
        *(
            limits.admit(admission(f"r{i}", budgets=(budget(5_000_000, 100_000),)))
            for i in range(1000)
        )
    )
    assert sum(r.refusal is None for r in results) == 50
    assert {r.refusal for r in results} == {None, Code.BUDGET_EXCEEDED}
    assert limits.ledger.seeds == 1  # one seeding, however many admissions waited for it


async def test_refusal_in_one_limit_consumes_nothing_in_the_others(
    make_limits: MakeLimits,
) -> None:
    limits = make_limits(spent=4_950_000)
    rate = WindowAsk("per_minute", "rate", gcra.Window(10, MINUTE_US, 10), 1)
    for i in range(20):
        result = await limits.admit(
            admission(f"r{i}", windows=(rate,), budgets=(budget(5_000_000, 100_000),))
        )
        assert result.refusal is Code.BUDGET_EXCEEDED
    result = await limits.admit(admission("ok", windows=(rate,)))
    assert result.refusal is None
    assert result.limits[0].remaining == 9


async def test_settlement_releases_the_reservation_and_the_slot(make_limits: MakeLimits) -> None:
    limits = make_limits()
    ask = admission("a", max_parallel=1, budgets=(budget(1_000_000, 1_000_000),))
    assert (await limits.admit(ask)).refusal is None
    second = await limits.admit(admission("b", max_parallel=1))
    assert second.refusal is Code.CONCURRENCY_EXCEEDED
    await limits.settle(Settlement("key_1", "a", 0, 0))
    await limits.add_spent("key_1", None, 250_000, NOW)
    result = await limits.admit(
        admission("c", max_parallel=1, budgets=(budget(1_000_000, 750_000),))
    )
    assert result.refusal is None
    [slot, money] = result.limits
    assert (slot.kind, slot.remaining) == ("concurrency", 0)
    assert (money.kind, money.remaining) == ("budget", 0)


async def test_a_settlement_releases_only_its_own_keys_reservation(
    make_limits: MakeLimits,
) -> None:
    # Request ids are the gateway's, so two tenants' keys can hold the same one.
    limits = make_limits()
    for key_id in ("key_1", "key_2"):
        ask = replace(admission("req_gw_0001", max_parallel=1), key_id=key_id)
        assert (await limits.admit(ask)).refusal is None
    await limits.settle(Settlement("key_2", "req_gw_0001", 0, 0))
    held = await limits.admit(admission("next", max_parallel=1))
    assert held.refusal is Code.CONCURRENCY_EXCEEDED
    await limits.settle(Settlement("key_1", "req_gw_0001", 0, 0))
    assert (await limits.admit(admission("next", max_parallel=1))).refusal is None


async def test_unsettled_reservations_expire(make_limits: MakeLimits) -> None:
    limits = make_limits()
    assert (await limits.admit(admission("a", max_parallel=1))).refusal is None
    assert (await limits.admit(admission("b", max_parallel=1))).refusal is not None
    assert await limits.expire(NOW + timedelta(minutes=5)) == 1
    later = NOW + timedelta(minutes=5)
    result = await limits.admit(
        Admission("key_1", "c", hold_until=later + timedelta(minutes=5), max_parallel=1), later
    )
    assert result.refusal is None


async def test_expired_reservations_are_released_by_the_next_admit_too(
    make_limits: MakeLimits,
) -> None:
    limits = make_limits()
    assert (await limits.admit(admission("a", max_parallel=1))).refusal is None
    later = NOW + timedelta(minutes=5)
    result = await limits.admit(
        Admission("key_1", "b", hold_until=later + timedelta(minutes=5), max_parallel=1), later
    )
    assert result.refusal is None
    assert await limits.expire(later) == 0


async def test_a_new_budget_period_starts_from_the_ledger(make_limits: MakeLimits) -> None:
    limits = make_limits(spent=5_000_000)
    result = await limits.admit(admission("a", budgets=(budget(5_000_000, 1),)))
    assert result.refusal is Code.BUDGET_EXCEEDED
    assert result.retry_after == 60.0
    april = NOW + timedelta(minutes=1)
    limits.ledger.spent = 0
    result = await limits.admit(
        Admission(
            "key_1",
            "b",
            hold_until=april + timedelta(minutes=5),
            budgets=(budget(5_000_000, 1, now=april),),
        ),
        april,
    )
    assert result.refusal is None


async def test_token_estimates_are_corrected_on_settlement(make_limits: MakeLimits) -> None:
    limits = make_limits()
    window = gcra.Window(1000, MINUTE_US, 1000)
    tokens = WindowAsk("input_per_minute", "tokens", window, 800, "input")
    result = await limits.admit(admission("a", windows=(tokens,), tokens_in=800))
    assert result.refusal is None and result.limits[0].remaining == 200
    await limits.settle(Settlement("key_1", "a", 100, 0, (tokens,)))
    probe = WindowAsk("input_per_minute", "tokens", window, 900, "input")
    result = await limits.admit(admission("b", windows=(probe,), tokens_in=900))
    assert result.refusal is None and result.limits[0].remaining == 0
    result = await limits.admit(admission("c", windows=(probe,), tokens_in=900))
    assert result.refusal is Code.TOKEN_LIMITED


async def test_a_late_report_corrects_the_estimate_instead_of_charging_twice(
    make_limits: MakeLimits,
) -> None:
    limits = make_limits()
    window = gcra.Window(1000, MINUTE_US, 1000)
    ask = WindowAsk("input_per_minute", "tokens", window, 600, "input")
    assert (await limits.admit(admission("a", windows=(ask,), tokens_in=600))).refusal is None
    later = NOW + timedelta(minutes=5)
    await limits.expire(later)
    await limits.settle(Settlement("key_1", "a", 600, 0, (ask,)), later)
    probe = WindowAsk("input_per_minute", "tokens", window, 1000, "input")
    result = await limits.admit(
        Admission("key_1", "b", hold_until=later, windows=(probe,), tokens_in=1000), later
    )
    assert result.refusal is None


async def test_an_estimate_is_forgotten_after_an_hour(make_limits: MakeLimits) -> None:
    limits = make_limits()
    window = gcra.Window(1000, MINUTE_US, 1000)
    ask = WindowAsk("input_per_minute", "tokens", window, 600, "input")
    assert (await limits.admit(admission("a", windows=(ask,), tokens_in=600))).refusal is None
    later = NOW + timedelta(minutes=5)
    await limits.expire(later)
    much_later = later + timedelta(hours=1)
    await limits.expire(much_later)
    # Forgotten: the report is charged in full.
    await limits.settle(Settlement("key_1", "a", 600, 0, (ask,)), much_later)
    probe = WindowAsk("input_per_minute", "tokens", window, 1000, "input")
    result = await limits.admit(
        Admission("key_1", "b", hold_until=much_later, windows=(probe,), tokens_in=1000),
        much_later,
    )
    assert result.refusal is Code.TOKEN_LIMITED
    assert result.limits[0].remaining == 400


async def test_a_retried_verify_reuses_its_own_slot(make_limits: MakeLimits) -> None:
    limits = make_limits()
    assert (await limits.admit(admission("same", max_parallel=1))).refusal is None
    assert (await limits.admit(admission("same", max_parallel=1))).refusal is None
    assert (await limits.admit(admission("other", max_parallel=1))).refusal is not None


async def test_a_retried_verify_keeps_the_longer_hold(make_limits: MakeLimits) -> None:
    limits = make_limits()
    assert (await limits.admit(admission("same", max_parallel=1))).refusal is None
    retry = Admission("key_1", "same", NOW + timedelta(seconds=1), max_parallel=1)
    assert (await limits.admit(retry)).refusal is None
    later = NOW + timedelta(minutes=1)
    other = Admission("key_1", "other", later + timedelta(minutes=5), max_parallel=1)
    assert (await limits.admit(other, later)).refusal is Code.CONCURRENCY_EXCEEDED
    assert (await limits.admit(other, NOW + timedelta(minutes=5))).refusal is None


async def test_a_refused_request_reports_what_is_left_before_it(make_limits: MakeLimits) -> None:
    limits = make_limits(spent=900_000)
    rate = WindowAsk("m", "rate", gcra.Window(10, MINUTE_US, 10), 1)
    result = await limits.admit(
        admission("a", windows=(rate,), budgets=(budget(1_000_000, 200_000),))
    )
    assert result.refusal is Code.BUDGET_EXCEEDED
    assert [(s.name, s.remaining) for s in result.limits] == [("m", 10), ("budget", 100_000)]


async def test_refusal_codes_come_in_the_documented_order(make_limits: MakeLimits) -> None:
    limits = make_limits(spent=1_000_000)
    rate = WindowAsk("r", "rate", gcra.Window(1, MINUTE_US, 1), 1)
    tokens = WindowAsk("t", "tokens", gcra.Window(10, MINUTE_US, 10), 10, "input")
    everything = {
        "windows": (rate, tokens),
        "budgets": (budget(1_000_000, 1),),
        "max_parallel": 1,
        "tokens_in": 10,
    }
    assert (await limits.admit(admission("hold", max_parallel=1))).refusal is None
    assert (await limits.admit(admission("w", windows=(rate, tokens)))).refusal is None
    result = await limits.admit(admission("x", **everything))
    assert result.refusal is Code.CONCURRENCY_EXCEEDED
    await limits.settle(Settlement("key_1", "hold", 0, 0))
    result = await limits.admit(admission("x", **everything))
    assert result.refusal is Code.RATE_LIMITED
    assert result.retry_after == 60.0
    only_tokens = {**everything, "windows": (tokens,)}
    result = await limits.admit(admission("x", **only_tokens))
    assert result.refusal is Code.TOKEN_LIMITED
    result = await limits.admit(admission("x", **{**only_tokens, "windows": ()}))
    assert result.refusal is Code.BUDGET_EXCEEDED


async def test_a_per_model_budget_counts_only_matching_reports(make_limits: MakeLimits) -> None:
    limits = make_limits()
    start, reset_at = period_start(Reset.MONTHLY, NOW), next_reset(Reset.MONTHLY, NOW)
    gpt4 = BudgetAsk("gpt-4*", 1_000_000, Reset.MONTHLY, start, reset_at, 0)
    key = BudgetAsk("", 5_000_000, Reset.MONTHLY, start, reset_at, 0)
    result = await limits.admit(admission("a", budgets=(key, gpt4)))
    assert [s.remaining for s in result.limits] == [5_000_000, 1_000_000]
    await limits.add_spent("key_1", "gpt-4o", 300_000, NOW)
    await limits.add_spent("key_1", "claude-3", 200_000, NOW)
    await limits.add_spent("key_1", None, 100_000, NOW)
    result = await limits.admit(admission("b", budgets=(key, gpt4)))
    assert [s.remaining for s in result.limits] == [4_400_000, 700_000]
