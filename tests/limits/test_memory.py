"""The in-memory limiter: what only it does. The shared scenarios are in test_contract.py."""

from __future__ import annotations

from datetime import timedelta

from keyplane.domain import gcra
from keyplane.domain.admission import Settlement, WindowAsk
from keyplane.domain.decisions import Code
from tests.limits.harness import MINUTE_US, NOW, admission, memory_limits


async def test_an_absurd_overrun_does_not_break_the_window() -> None:
    limiter = memory_limits().limiter
    tokens = WindowAsk("input_per_minute", "tokens", gcra.Window(1, MINUTE_US, 1), 0, "input")
    await limiter.settle(Settlement("key_1", None, 10**12, 0, (tokens,)), NOW)
    result = await limiter.admit(admission("a", windows=(tokens,)), NOW)
    assert result.refusal is Code.TOKEN_LIMITED
    assert result.limits[0].reset_at is not None and result.limits[0].reset_at.year == 9999


async def test_a_burst_whose_clock_reads_arrive_out_of_order_gets_the_whole_limit() -> None:
    # Verifies read the clock before awaiting a key load, so the first to be admitted may
    # carry the latest time. Checked at their own earlier times, the rest found the window's
    # TAT ahead of now and the 50th of 50 a minute was refused (CI saw 49).
    limiter = memory_limits().limiter
    rate = WindowAsk("per_minute", "rate", gcra.Window(50, MINUTE_US, 50), 1)
    late = NOW + timedelta(milliseconds=5)
    first = await limiter.admit(admission("r0", windows=(rate,)), late)
    rest = [await limiter.admit(admission(f"r{i}", windows=(rate,)), NOW) for i in range(1, 60)]
    codes = [first.refusal] + [result.refusal for result in rest]
    assert codes.count(None) == 50
    assert codes[:50] == [None] * 50
    assert set(codes[50:]) == {Code.RATE_LIMITED}
