"""The job runner: durable scheduled jobs, each run once across any number of instances.

A feature registers a job kind with one call, before the runtime starts its loops::

    runtime.jobs.register("security.report", handler, cron="0 6 * * 1")

``handler`` is ``async def handler(now: datetime) -> None``. Each registered job is a row of
the ``jobs`` table (``store/jobs.py``). Every instance runs :meth:`JobRunner.run` under the
supervisor; a tick claims the due jobs for a lease (PostgreSQL ``FOR UPDATE SKIP LOCKED``: two
instances never claim the same job), runs each, and records its outcome and next run. Delivery
is at least once: a run whose instance died keeps its lease until it expires, then the job is
due again and another instance runs it (``attempts`` counts such retries), so handlers must be
idempotent (the rotation sweep rotates a key only while it is still due, in the rotation's own
transaction). A failed run is retried after a growing delay (``domain/jobs.retry_delay``).
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from keyplane import metrics
from keyplane.domain.clock import Clock
from keyplane.domain.jobs import FAILURE, SUCCESS, JobRecord, retry_delay
from keyplane.domain.schedules import Schedule
from keyplane.domain.tenancy import Principal
from keyplane.errors import KeyplaneError
from keyplane.services.authz import require_scope
from keyplane.services.supervisor import uninterrupted
from keyplane.store.jobs import JobStore

log = logging.getLogger(__name__)

#: What a job runs: ``now`` is the claim time (the injected clock's).
JobHandler = Callable[[datetime], Awaitable[object]]
#: Default lease: longer than any run of a well-behaved handler (they work in bounded batches).
DEFAULT_LEASE = timedelta(minutes=5)
#: Jobs one instance claims per tick.
CLAIM_BATCH = 10


@dataclass(frozen=True, slots=True)
class _Registration:
    name: str
    kind: str
    schedule: Schedule
    handler: JobHandler


class JobRunner:
    """Registers job kinds and runs the due ones (see the module docstring)."""

    def __init__(
        self,
        store: JobStore,
        clock: Clock,
        claimer: str,
        *,
        lease: timedelta = DEFAULT_LEASE,
        poll: float = 5.0,
    ) -> None:
        self._store = store
        self._clock = clock
        self._claimer = claimer
        self._lease = lease
        self._poll = poll
        self._jobs: dict[str, _Registration] = {}
        self._ensured = False

    def register(
        self,
        kind: str,
        handler: JobHandler,
        *,
        cron: str | None = None,
        every: timedelta | None = None,
        name: str | None = None,
    ) -> None:
        """Run ``handler`` on a cron schedule (UTC) or every ``every``; ``name`` defaults to
        ``kind`` (a kind may be registered several times under different names)."""
        if cron is not None and every is not None:
            raise ValueError("a job needs exactly one of cron and every")
        if cron is not None:
            schedule = Schedule.of_cron(cron)
        elif every is not None:
            schedule = Schedule.every(every)
        else:
            raise ValueError("a job needs exactly one of cron and every")
        job_name = name or kind
        if job_name in self._jobs:
            raise ValueError(f"a job named {job_name!r} is already registered")
        self._jobs[job_name] = _Registration(job_name, kind, schedule, handler)
        self._ensured = False

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._jobs))

    async def list_jobs(self, principal: Principal) -> builtins.list[JobRecord]:
        """Every job of the deployment (``jobs:read``): jobs are not tenant data."""
        require_scope(principal, "jobs:read")
        return await self._store.list_all()

    async def run(self) -> None:
        """Tick forever (under the supervisor)."""
        while True:
            # Wait first: a start (or a restart after a crash) does not race the stop.
            await asyncio.sleep(self._poll)
            try:
                await uninterrupted(self.run_once())
            except KeyplaneError as exc:
                log.warning("claiming jobs failed: %s", type(exc).__name__)

    async def run_once(self) -> list[str]:
        """Claim and run the jobs due now; the names of those run (by this instance)."""
        await self._ensure()
        now = self._clock.now()
        claimed = await self._store.claim_due(now, self._claimer, now + self._lease, CLAIM_BATCH)
        ran = []
        for job in claimed:
            registration = self._jobs.get(job.name)
            if registration is None:
                # Registered by another instance (a newer version): leave it to one that knows
                # it, once this claim's lease ends.
                continue
            await self._run(registration, job, now)
            ran.append(job.name)
        return ran

    async def _ensure(self) -> None:
        if self._ensured:
            return
        now = self._clock.now()
        await self._store.ensure(
            [
                JobRecord(
                    name=r.name,
                    kind=r.kind,
                    schedule=r.schedule.cron,
                    interval_seconds=(
                        None
                        if r.schedule.interval is None
                        else int(r.schedule.interval.total_seconds())
                    ),
                    next_run_at=r.schedule.next_after(now) if r.schedule.cron else now,
                    created_at=now,
                )
                for r in self._jobs.values()
            ]
        )
        self._ensured = True

    async def _run(self, registration: _Registration, job: JobRecord, now: datetime) -> None:
        started = time.perf_counter()
        error: str | None = None
        try:
            await registration.handler(now)
        except Exception as exc:  # a handler's failure is the job's outcome, not the runner's
            error = type(exc).__name__
            log.warning("job %s failed: %s", registration.name, error)
        finished = self._clock.now()
        metrics.JOB_DURATION.labels(registration.name).observe(time.perf_counter() - started)
        if error is None:
            next_run = registration.schedule.next_after(max(finished, now))
            outcome = SUCCESS
            metrics.JOB_LAST_SUCCESS.labels(registration.name).set(finished.timestamp())
        else:
            next_run = finished + retry_delay(job.attempts)
            outcome = FAILURE
        metrics.JOB_RUNS.labels(registration.name, outcome).inc()
        kept = await self._store.finish(
            registration.name, self._claimer, finished, outcome, next_run, error
        )
        if not kept:
            log.warning("job %s outlived its lease; another instance may rerun it", job.name)
