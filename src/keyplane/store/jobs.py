"""Durable scheduled jobs: :class:`JobStore` and its SQL implementation."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import or_, select, update
from sqlalchemy.engine import Row

from keyplane.domain.jobs import JobRecord
from keyplane.store.tables import jobs
from keyplane.store.unit import UnitOfWork


class JobStore(Protocol):
    """Jobs, each claimed by one instance at a time for a lease."""

    async def ensure(self, records: Sequence[JobRecord]) -> None:
        """Insert the jobs that do not exist yet; existing rows keep their state, but take
        the given kind and schedule (a changed schedule applies from the next run)."""
        ...

    async def claim_due(
        self, now: datetime, claimer: str, lease_until: datetime, limit: int
    ) -> builtins.list[JobRecord]:
        """Claim up to ``limit`` jobs due at ``now`` and not under a live lease: each gets
        ``claimer``, ``lease_until`` and one more attempt, committed before this returns.

        On PostgreSQL the due rows are locked ``FOR UPDATE SKIP LOCKED``: concurrent
        claimers take different jobs, never the same one; on SQLite writers take turns.
        A job whose lease expired (its claimer crashed) is due again.
        """
        ...

    async def finish(
        self,
        name: str,
        claimer: str,
        now: datetime,
        outcome: str,
        next_run_at: datetime,
        error: str | None,
    ) -> bool:
        """Record a run's end and the next run, if ``claimer`` still holds the lease (False
        when its lease expired and another instance claimed the job meanwhile)."""
        ...

    async def list_all(self) -> builtins.list[JobRecord]:
        """Every job, by name."""
        ...


class SqlJobStore:
    """:class:`JobStore` over the shared unit of work."""

    def __init__(self, unit: UnitOfWork) -> None:
        self._unit = unit

    async def ensure(self, records: Sequence[JobRecord]) -> None:
        if not records:
            return
        async with self._unit.write() as conn:
            for record in records:
                statement = (
                    self._unit.insert(jobs)
                    .values(**_values(record))
                    .on_conflict_do_update(
                        index_elements=["name"],
                        set_={
                            "kind": record.kind,
                            "schedule": record.schedule,
                            "interval_seconds": record.interval_seconds,
                        },
                    )
                )
                await conn.execute(statement)

    async def claim_due(
        self, now: datetime, claimer: str, lease_until: datetime, limit: int
    ) -> builtins.list[JobRecord]:
        due = (
            select(jobs.c.name)
            .where(
                jobs.c.next_run_at <= now,
                or_(jobs.c.lease_until.is_(None), jobs.c.lease_until <= now),
            )
            .order_by(jobs.c.next_run_at, jobs.c.name)
            .limit(limit)
            # Ignored by SQLite, where the write lock serializes claimers anyway.
            .with_for_update(skip_locked=True)
        )
        async with self._unit.write() as conn:
            names = [row.name for row in await conn.execute(due)]
            if not names:
                return []
            claimed = await conn.execute(
                update(jobs)
                .where(
                    jobs.c.name.in_(names),
                    # Checked again: the claim is a compare-and-set whatever the locking.
                    or_(jobs.c.lease_until.is_(None), jobs.c.lease_until <= now),
                )
                .values(
                    lease_until=lease_until,
                    claimed_by=claimer,
                    attempts=jobs.c.attempts + 1,
                    last_started_at=now,
                )
                .returning(*jobs.c)
            )
            return sorted((_record(row) for row in claimed), key=lambda r: r.name)

    async def finish(
        self,
        name: str,
        claimer: str,
        now: datetime,
        outcome: str,
        next_run_at: datetime,
        error: str | None,
    ) -> bool:
        values: dict[str, Any] = {
            "lease_until": None,
            "claimed_by": None,
            "last_finished_at": now,
            "last_outcome": outcome,
            "last_error": error,
            "next_run_at": next_run_at,
        }
        if error is None:
            values["attempts"] = 0
        async with self._unit.write() as conn:
            result = await conn.execute(
                update(jobs).where(jobs.c.name == name, jobs.c.claimed_by == claimer).values(values)
            )
        return bool(result.rowcount)

    async def list_all(self) -> builtins.list[JobRecord]:
        async with self._unit.read() as conn:
            return [_record(row) for row in await conn.execute(select(jobs).order_by(jobs.c.name))]


def _values(record: JobRecord) -> dict[str, Any]:
    return {
        "name": record.name,
        "kind": record.kind,
        "schedule": record.schedule,
        "interval_seconds": record.interval_seconds,
        "next_run_at": record.next_run_at,
        "lease_until": record.lease_until,
        "claimed_by": record.claimed_by,
        "attempts": record.attempts,
        "last_started_at": record.last_started_at,
        "last_finished_at": record.last_finished_at,
        "last_outcome": record.last_outcome,
        "last_error": record.last_error,
        "created_at": record.created_at,
    }


def _record(row: Row[Any]) -> JobRecord:
    m = row._mapping
    return JobRecord(
        name=m["name"],
        kind=m["kind"],
        schedule=m["schedule"],
        interval_seconds=m["interval_seconds"],
        next_run_at=m["next_run_at"],
        created_at=m["created_at"],
        lease_until=m["lease_until"],
        claimed_by=m["claimed_by"],
        attempts=m["attempts"],
        last_started_at=m["last_started_at"],
        last_finished_at=m["last_finished_at"],
        last_outcome=m["last_outcome"],
        last_error=m["last_error"],
    )
