"""An operator's reset (``Limiter.reset``), the same on MemoryLimiter and RedisLimiter: named
windows full again, others untouched, slots freed once, budget holds kept."""

from __future__ import annotations

from keyplane.domain import gcra
from keyplane.domain.admission import Settlement, WindowAsk
from keyplane.domain.decisions import Code
from tests.limits.conftest import MakeLimits
from tests.limits.harness import MINUTE_US, admission, budget

MINUTE = WindowAsk("per_minute", "rate", gcra.Window(1, MINUTE_US, 1), 1)
HOUR = WindowAsk("per_hour", "rate", gcra.Window(2, 60 * MINUTE_US, 2), 1)


async def test_a_reset_refills_only_the_named_windows(make_limits: MakeLimits) -> None:
    limits = make_limits()
    both = (MINUTE, HOUR)
    assert (await limits.admit(admission("a", windows=both))).refusal is None
    assert (await limits.admit(admission("b", windows=both))).refusal is Code.RATE_LIMITED
    assert await limits.limiter.reset("key_1", [MINUTE], slots=False) == 0
    assert (await limits.admit(admission("c", windows=both))).refusal is None  # hour: 2nd
    await limits.limiter.reset("key_1", [MINUTE], slots=False)
    # The minute is full again, the hour is not: it was not named.
    assert (await limits.admit(admission("d", windows=both))).refusal is Code.RATE_LIMITED
    await limits.limiter.reset("key_1", list(both), slots=False)
    assert (await limits.admit(admission("e", windows=both))).refusal is None


async def test_a_reset_frees_slots_once_and_keeps_budget_holds(make_limits: MakeLimits) -> None:
    limits = make_limits()
    money = (budget(1_000_000, 600_000),)
    assert (await limits.admit(admission("a", max_parallel=1, budgets=money))).refusal is None
    refused = await limits.admit(admission("b", max_parallel=1))
    assert refused.refusal is Code.CONCURRENCY_EXCEEDED
    assert await limits.limiter.reset("key_1", [], slots=True) == 1
    assert (await limits.admit(admission("b", max_parallel=1))).refusal is None
    # "a" still holds its 0.6 credits: 0.6 more does not fit.
    late = await limits.admit(admission("c", budgets=(budget(1_000_000, 600_000),)))
    assert late.refusal is Code.BUDGET_EXCEEDED
    # Settling "a" gives its money back but no slot (it gave its slot up): "b" still holds one.
    await limits.settle(Settlement("key_1", "a", 0, 0))
    assert (await limits.admit(admission("d", max_parallel=1))).refusal is (
        Code.CONCURRENCY_EXCEEDED
    )
    assert (await limits.admit(admission("e", budgets=money))).refusal is None
