"""Budget periods and rate-limit durations.

Periods are calendar periods in UTC, with no daylight-saving time to trip over: an hour starts
at minute 0, a day at 00:00 UTC, a week on Monday (ISO 8601), a month on the 1st. Every
instance computes the same boundaries from the same clock reading, so counters keyed by period
start agree everywhere.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from enum import StrEnum


class Reset(StrEnum):
    """How often a budget starts over; the values are stored, so they never change."""

    NEVER = "never"
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    #: The hourly cost window's (``costs.per_hour_max``); a budget never resets hourly.
    HOURLY = "hourly"


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

MIN_DURATION_SECONDS = 1
MAX_DURATION_SECONDS = 30 * 86400
#: The longest pause of a disabled key (``auto_enable_after``): a year.
MAX_PAUSE_SECONDS = 365 * 86400
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# ASCII digits only: str.isdigit() and \d would also take "١٢" or "²", which int() reads
# (or chokes on) in surprising ways. Twelve digits is far past the 30-day limit already.
_DURATION = re.compile(r"([0-9]{1,12})([smhd]?)", re.ASCII)


def _utc(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("periods need a timezone-aware datetime")
    return now.astimezone(UTC)


def period_start(reset: Reset, now: datetime) -> datetime:
    """The start of the period that contains ``now`` (aware; the result is UTC).

    NEVER has a single period, starting at the Unix epoch.
    """
    utc = _utc(now)
    if reset is Reset.NEVER:
        return EPOCH
    if reset is Reset.HOURLY:
        return utc.replace(minute=0, second=0, microsecond=0)
    day = utc.replace(hour=0, minute=0, second=0, microsecond=0)
    if reset is Reset.DAILY:
        return day
    if reset is Reset.WEEKLY:
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def next_reset(reset: Reset, now: datetime) -> datetime | None:
    """The first period boundary strictly after ``now`` (UTC), or None for NEVER."""
    start = period_start(reset, now)
    if reset is Reset.NEVER:
        return None
    if reset is Reset.HOURLY:
        return start + timedelta(hours=1)
    if reset is Reset.DAILY:
        return start + timedelta(days=1)
    if reset is Reset.WEEKLY:
        return start + timedelta(days=7)
    # Months differ in length, so step the calendar fields instead of adding days.
    if start.month == 12:
        return start.replace(year=start.year + 1, month=1)
    return start.replace(month=start.month + 1)


class CurrentPeriods:
    """The current period of each reset, worked out again only once ``now`` has left it.

    Computing a period's bounds costs microseconds (time zone conversion, calendar steps); a
    verify with several cost windows asks for three of them, almost always the same ones as
    the verify before. Not shared between threads; the result is the same as
    ``(period_start(reset, now), next_reset(reset, now))``.
    """

    def __init__(self) -> None:
        self._bounds: dict[Reset, tuple[datetime, datetime | None]] = {}

    def bounds(self, reset: Reset, now: datetime) -> tuple[datetime, datetime | None]:
        cached = self._bounds.get(reset)
        if cached is not None:
            start, end = cached
            if start <= now and (end is None or now < end):
                return cached
        bounds = (period_start(reset, now), next_reset(reset, now))
        self._bounds[reset] = bounds
        return bounds


def parse_duration(value: str | int, maximum: int = MAX_DURATION_SECONDS) -> int:
    """Seconds from ``"30s"``, ``"15m"``, ``"1h"``, ``"7d"``, ``"60"`` or an int.

    The result must lie between one second and ``maximum`` seconds (30 days unless told);
    anything else raises ValueError. The text is at most 13 characters of a fixed shape,
    so parsing costs nothing whatever a caller sends.
    """
    # bool is an int subclass: True would otherwise slip through as one second.
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or text like '15m'")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str) and (match := _DURATION.fullmatch(value)):
        seconds = int(match.group(1)) * _UNITS[match.group(2) or "s"]
    else:
        raise ValueError(
            "a duration is a positive whole number with an optional unit s, m, h or d, "
            "like '30s', '15m', '1h' or '7d'"
        )
    if not MIN_DURATION_SECONDS <= seconds <= maximum:
        raise ValueError(f"a duration must be between 1 second and {_spelled(maximum)}")
    return seconds


def _spelled(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    return f"{days} days" if not rest and days > 1 else f"{seconds} seconds"


def format_duration(seconds: int) -> str:
    """The shortest exact text for ``seconds``: 60 gives ``"1m"``, 90 gives ``"90s"``.

    The inverse of parse_duration for every duration it accepts.
    """
    if isinstance(seconds, bool) or seconds < 1:
        raise ValueError("a duration is a positive number of seconds")
    # The largest unit that divides evenly gives the fewest digits.
    for suffix in ("d", "h", "m"):
        if seconds % _UNITS[suffix] == 0:
            return f"{seconds // _UNITS[suffix]}{suffix}"
    return f"{seconds}s"
