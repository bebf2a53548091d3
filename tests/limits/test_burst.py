"""``rate_limits[].burst`` (seed 004's ``burst_size``): exactly that many back to back.

On memory and on Redis, and on Redis through two limiters with their own connections (two
instances): a burst of N admits exactly N of 1,000 concurrent requests, then exactly one more
per emission interval (period / limit).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

from redis.asyncio import Redis

from keyplane.domain import gcra
from keyplane.domain.admission import WindowAsk
from keyplane.domain.decisions import Code
from tests.limits.conftest import MakeLimits
from tests.limits.harness import NOW, Limits, admission, redis_limits

SECOND_US = gcra.MICROS


async def _admitted(limits: list[Limits], window: gcra.Window, tag: str, count: int) -> int:
    ask = WindowAsk("per_second", "rate", window, 1)
    results = await asyncio.gather(
        *(
            limits[i % len(limits)].admit(admission(f"{tag}{i}", windows=(ask,)))
            for i in range(count)
        )
    )
    assert {r.refusal for r in results} <= {None, Code.RATE_LIMITED}
    return sum(r.refusal is None for r in results)


async def test_a_burst_above_the_limit_admits_exactly_the_burst(make_limits: MakeLimits) -> None:
    limits = make_limits()
    # Seed 004: per_second 10 with burst_size 20.
    window = gcra.Window(10, SECOND_US, 20)
    assert await _admitted([limits], window, "a", 1000) == 20
    # One emission interval (100 ms) later, exactly one more.
    ask = WindowAsk("per_second", "rate", window, 1)
    later = NOW + timedelta(milliseconds=100)
    results = [await limits.admit(admission(f"b{i}", windows=(ask,)), later) for i in range(3)]
    assert [r.refusal for r in results] == [None, Code.RATE_LIMITED, Code.RATE_LIMITED]
    assert results[1].retry_after is not None and 0 < results[1].retry_after <= 0.1


async def test_a_burst_below_the_limit_smooths_it(make_limits: MakeLimits) -> None:
    limits = make_limits()
    window = gcra.Window(100, 60 * SECOND_US, 5)
    assert await _admitted([limits], window, "a", 1000) == 5


async def test_two_instances_share_one_burst(clients: Callable[..., Redis], prefix: str) -> None:
    instances = [redis_limits(clients(), prefix), redis_limits(clients(), prefix)]
    assert await _admitted(instances, gcra.Window(10, SECOND_US, 20), "a", 1000) == 20
