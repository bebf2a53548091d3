"""The in-memory limiter: what only it does. The shared scenarios are in test_contract.py."""

from __future__ import annotations

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
