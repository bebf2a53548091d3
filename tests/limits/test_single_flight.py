"""Single flight: one seeding per counter, however many admissions wait for it."""

from __future__ import annotations

import asyncio

import pytest

from keyplane.limits.base import SingleFlight


async def test_callers_of_one_key_share_one_run_and_other_keys_run_apart() -> None:
    flight, release, runs = SingleFlight(), asyncio.Event(), []

    async def work(name: str) -> None:
        runs.append(name)
        await release.wait()

    waiters = [asyncio.create_task(flight.run("a", lambda: work("a"))) for _ in range(100)]
    other = asyncio.create_task(flight.run("b", lambda: work("b")))
    await asyncio.sleep(0)  # let every waiter reach the flight
    release.set()
    await asyncio.gather(*waiters, other)
    assert sorted(runs) == ["a", "b"]


async def test_a_failure_reaches_every_waiter_and_the_next_call_runs_again() -> None:
    flight, release, runs = SingleFlight(), asyncio.Event(), []

    async def failing() -> None:
        runs.append(1)
        await release.wait()
        raise RuntimeError("the database failed")

    waiters = [asyncio.create_task(flight.run("a", failing)) for _ in range(3)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert [type(r) for r in results] == [RuntimeError] * 3
    with pytest.raises(RuntimeError):
        await flight.run("a", failing)
    assert len(runs) == 2


async def test_a_waiter_that_goes_away_does_not_cancel_the_run_for_the_others() -> None:
    flight, release, done = SingleFlight(), asyncio.Event(), []

    async def work() -> None:
        await release.wait()
        done.append(1)

    leaving = asyncio.create_task(flight.run("a", work))
    staying = asyncio.create_task(flight.run("a", work))
    await asyncio.sleep(0)
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    release.set()
    await staying
    assert done == [1]
