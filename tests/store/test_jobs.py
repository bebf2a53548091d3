"""The job runner over the jobs table, on SQLite and PostgreSQL: each due job runs once across
runners, a crashed run (its lease expired) is retried, a failure is recorded and backed off."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from keyplane.domain.clock import ManualClock
from keyplane.domain.jobs import FAILURE, SUCCESS
from keyplane.services.jobs import JobRunner
from keyplane.store.database import Database as Db
from tests.store.conftest import NOW


def runner(db: Db, clock: ManualClock, name: str, ran: list[str]) -> JobRunner:
    async def handler(now: datetime) -> None:
        await asyncio.sleep(0)  # let the other runners interleave
        ran.append(name)

    jobs = JobRunner(db.jobs, clock, name, lease=timedelta(minutes=5))
    jobs.register("test.tick", handler, every=timedelta(minutes=1))
    jobs.register("test.monthly", handler, cron="0 0 1 * *", name="monthly")
    return jobs


async def test_each_due_job_runs_once_across_runners_and_on_schedule(db: Db) -> None:
    clock = ManualClock(NOW)
    ran: list[str] = []
    runners = [runner(db, clock, f"instance-{n}", ran) for n in range(4)]
    # The first tick: the interval job is due at once, the cron job on the 1st of next month.
    await asyncio.gather(*(r.run_once() for r in runners))
    assert len(ran) == 1
    await asyncio.gather(*(r.run_once() for r in runners))
    assert len(ran) == 1  # not due again before its interval
    clock.advance(60)
    await asyncio.gather(*(r.run_once() for r in runners))
    assert len(ran) == 2
    clock.set(datetime(2026, 4, 1, 0, 0, tzinfo=NOW.tzinfo))
    await asyncio.gather(*(r.run_once() for r in runners))
    assert len(ran) == 4  # the tick and the monthly job, once each
    jobs = {job.name: job for job in await db.jobs.list_all()}
    assert jobs["monthly"].schedule == "0 0 1 * *"
    assert jobs["monthly"].next_run_at == datetime(2026, 5, 1, tzinfo=NOW.tzinfo)
    assert jobs["monthly"].last_outcome == SUCCESS and jobs["monthly"].attempts == 0


async def test_a_crashed_run_is_retried_after_its_lease(db: Db) -> None:
    clock = ManualClock(NOW)
    # An instance claims the job and dies before finishing it.
    claimed = await db.jobs.claim_due(NOW, "dead", NOW + timedelta(minutes=5), 10)
    assert claimed == []  # nothing registered yet
    ran: list[str] = []
    alive = runner(db, clock, "alive", ran)
    await alive.run_once()  # registers and runs the tick once
    clock.advance(60)
    stolen = await db.jobs.claim_due(clock.now(), "dead", clock.now() + timedelta(minutes=5), 10)
    assert [job.name for job in stolen] == ["test.tick"]
    await alive.run_once()
    assert ran == ["alive"]  # held by the dead instance's lease
    clock.advance(5 * 60)
    await alive.run_once()
    assert ran == ["alive", "alive"]
    [tick] = [job for job in await db.jobs.list_all() if job.name == "test.tick"]
    assert tick.last_outcome == SUCCESS and tick.attempts == 0
    # The dead instance's late finish does not overwrite the retry's.
    assert not await db.jobs.finish("test.tick", "dead", clock.now(), FAILURE, NOW, "Boom")


async def test_a_failing_job_is_recorded_and_backed_off(db: Db) -> None:
    clock = ManualClock(NOW)
    calls: list[datetime] = []

    async def failing(now: datetime) -> None:
        calls.append(now)
        raise RuntimeError("secret detail that must not be stored")

    jobs = JobRunner(db.jobs, clock, "solo")
    jobs.register("test.failing", failing, every=timedelta(seconds=10))
    await jobs.run_once()
    [job] = await db.jobs.list_all()
    assert job.last_outcome == FAILURE and job.last_error == "RuntimeError"
    assert job.attempts == 1 and job.next_run_at == NOW + timedelta(seconds=30)
    clock.advance(30)
    await jobs.run_once()
    [job] = await db.jobs.list_all()
    assert job.attempts == 2 and job.next_run_at == clock.now() + timedelta(seconds=60)
    assert len(calls) == 2
