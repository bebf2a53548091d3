"""When a scheduled thing next happens: a cron expression (always UTC) or a fixed interval.

Cron expressions are read by ``croniter`` (five fields, optionally a sixth for seconds is NOT
accepted: minutes are the finest grain a job needs). An expression is bounded in length and
must match at least once within :data:`MAX_YEARS_BETWEEN_RUNS` years, so a caller cannot make
the server search for a date that never comes (``0 0 30 2 *``): the search is bounded and the
expression refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from croniter import CroniterBadCronError, CroniterBadDateError, CroniterError, croniter

from keyplane.errors import ValidationError

#: Longest cron expression accepted (a real one is under 40 characters).
MAX_CRON_LENGTH = 100
#: A schedule that does not fire within this many years is refused as never firing.
#: (29 February can be 8 years apart: 2096, then 2104.)
MAX_YEARS_BETWEEN_RUNS = 9
#: Shortest and longest interval of an interval schedule.
MIN_INTERVAL = timedelta(seconds=1)
MAX_INTERVAL = timedelta(days=3660)


@dataclass(frozen=True, slots=True)
class Schedule:
    """A cron expression or an interval (exactly one is set)."""

    cron: str | None = None
    interval: timedelta | None = None

    @classmethod
    def every(cls, interval: timedelta) -> Schedule:
        if not MIN_INTERVAL <= interval <= MAX_INTERVAL:
            raise ValidationError("an interval must be between 1 second and 10 years")
        return cls(interval=interval)

    @classmethod
    def of_cron(cls, expression: str) -> Schedule:
        return cls(cron=check_cron(expression))

    def next_after(self, after: datetime) -> datetime:
        """The first time strictly after ``after`` (UTC)."""
        if self.interval is not None:
            return after + self.interval
        if self.cron is None:  # pragma: no cover - the constructors set one
            raise ValueError("a schedule needs a cron expression or an interval")
        return next_cron(self.cron, after)

    def describe(self) -> str:
        """The schedule as operators read it: the cron text, or ``every N s``."""
        if self.cron is not None:
            return self.cron
        return f"every {int(self.interval.total_seconds()) if self.interval else 0} s"


def check_cron(expression: str) -> str:
    """The expression, normalized (single spaces), if it is a valid five-field cron that fires
    within :data:`MAX_YEARS_BETWEEN_RUNS` years; ValidationError ``INVALID_SCHEDULE`` if not."""
    if not isinstance(expression, str) or len(expression) > MAX_CRON_LENGTH:
        raise ValidationError(
            f"schedule must be a cron expression of at most {MAX_CRON_LENGTH} characters",
            code="INVALID_SCHEDULE",
        )
    fields = expression.split()
    if len(fields) != 5 or not expression.isascii():
        raise ValidationError(
            "schedule must be a five-field cron expression (minute hour day month weekday)",
            code="INVALID_SCHEDULE",
        )
    normalized = " ".join(fields)
    # Probe once from a leap year's start: an expression that fires on 29 February only
    # still fires within the bound, one that never fires is refused here.
    next_cron(normalized, datetime(2028, 1, 1, tzinfo=UTC))
    return normalized


def next_cron(expression: str, after: datetime) -> datetime:
    """The first time strictly after ``after`` that the cron ``expression`` names, in UTC."""
    start = after.astimezone(UTC)
    try:
        found = croniter(
            expression, start, max_years_between_matches=MAX_YEARS_BETWEEN_RUNS
        ).get_next(datetime)
    except (CroniterBadCronError, CroniterBadDateError, CroniterError, ValueError, KeyError) as exc:
        raise ValidationError(
            f"invalid or never-firing cron expression {expression!r}", code="INVALID_SCHEDULE"
        ) from exc
    if not isinstance(found, datetime):  # pragma: no cover - get_next(datetime) returns one
        raise ValidationError("invalid cron expression", code="INVALID_SCHEDULE")
    return found.astimezone(UTC)
