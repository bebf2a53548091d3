"""Scheduled jobs as operators see them, and how a failed run is retried (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

SUCCESS = "success"
FAILURE = "failure"

#: A failed run is retried after 30 s, doubling per attempt, at most an hour apart.
RETRY_BASE = timedelta(seconds=30)
RETRY_MAX = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class JobRecord:
    """One durable job: what it runs, when next, how its last run went."""

    name: str
    kind: str
    schedule: str | None
    interval_seconds: int | None
    next_run_at: datetime
    created_at: datetime
    lease_until: datetime | None = None
    claimed_by: str | None = None
    #: Runs started since the last success (a crashed or failed run counts).
    attempts: int = 0
    last_started_at: datetime | None = None
    last_finished_at: datetime | None = None
    last_outcome: str | None = None
    #: The exception type of the last failure: never its message (it may quote data).
    last_error: str | None = None


def retry_delay(attempts: int) -> timedelta:
    """How long after its ``attempts``-th failed run a job is tried again."""
    doubling: timedelta = RETRY_BASE * (2 ** min(max(attempts - 1, 0), 16))
    return min(doubling, RETRY_MAX)
