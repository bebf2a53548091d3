from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyplane.domain.periods import (
    EPOCH,
    Reset,
    format_duration,
    next_reset,
    parse_duration,
    period_start,
)

MOMENTS = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2100, 12, 31, 23, 59, 59, 999999)
).map(lambda moment: moment.replace(tzinfo=UTC))
RESETTING = st.sampled_from([Reset.DAILY, Reset.WEEKLY, Reset.MONTHLY])
LAST_TICK = timedelta(microseconds=1)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


@given(RESETTING, MOMENTS)
def test_now_lies_inside_its_period(reset: Reset, now: datetime) -> None:
    start, end = period_start(reset, now), next_reset(reset, now)
    assert end is not None
    assert start <= now < end
    assert start.tzinfo is UTC and end.tzinfo is UTC


@given(RESETTING, MOMENTS)
def test_the_next_reset_starts_the_next_period(reset: Reset, now: datetime) -> None:
    end = next_reset(reset, now)
    assert end is not None
    assert period_start(reset, end) == end
    # The period is the whole span: its last microsecond still belongs to it.
    assert period_start(reset, end - LAST_TICK) == period_start(reset, now)


@given(MOMENTS)
def test_period_starts_are_midnights_on_the_right_days(now: datetime) -> None:
    for reset in (Reset.DAILY, Reset.WEEKLY, Reset.MONTHLY):
        start = period_start(reset, now)
        assert (start.hour, start.minute, start.second, start.microsecond) == (0, 0, 0, 0)
    assert period_start(Reset.DAILY, now).date() == now.date()
    assert period_start(Reset.WEEKLY, now).weekday() == 0
    assert now - period_start(Reset.WEEKLY, now) < timedelta(days=7)
    assert period_start(Reset.MONTHLY, now).day == 1
    assert period_start(Reset.MONTHLY, now).month == now.month


@given(MOMENTS)
def test_never_has_one_period_since_the_epoch(now: datetime) -> None:
    assert period_start(Reset.NEVER, now) == EPOCH
    assert next_reset(Reset.NEVER, now) is None


@pytest.mark.parametrize(
    ("reset", "now", "start", "end"),
    [
        # the last microsecond of a minute stays in its day
        (Reset.DAILY, utc(2024, 5, 7, 12, 59, 59, 999999), utc(2024, 5, 7), utc(2024, 5, 8)),
        # the last microsecond of a day, then the first of the next
        (Reset.DAILY, utc(2024, 5, 7, 23, 59, 59, 999999), utc(2024, 5, 7), utc(2024, 5, 8)),
        (Reset.DAILY, utc(2024, 5, 8), utc(2024, 5, 8), utc(2024, 5, 9)),
        (Reset.DAILY, utc(2023, 12, 31, 23, 0), utc(2023, 12, 31), utc(2024, 1, 1)),
        (Reset.DAILY, utc(2024, 2, 28, 12), utc(2024, 2, 28), utc(2024, 2, 29)),
        (Reset.DAILY, utc(2024, 2, 29, 12), utc(2024, 2, 29), utc(2024, 3, 1)),
        # 2024-06-09 is a Sunday, 2024-06-10 a Monday
        (Reset.WEEKLY, utc(2024, 6, 9, 23, 59, 59, 999999), utc(2024, 6, 3), utc(2024, 6, 10)),
        (Reset.WEEKLY, utc(2024, 6, 10), utc(2024, 6, 10), utc(2024, 6, 17)),
        (Reset.WEEKLY, utc(2024, 6, 12, 8), utc(2024, 6, 10), utc(2024, 6, 17)),
        # a week across the new year: 2025-01-01 is a Wednesday
        (Reset.WEEKLY, utc(2025, 1, 1, 8), utc(2024, 12, 30), utc(2025, 1, 6)),
        (Reset.MONTHLY, utc(2024, 1, 31, 23, 59, 59, 999999), utc(2024, 1, 1), utc(2024, 2, 1)),
        (Reset.MONTHLY, utc(2024, 2, 1), utc(2024, 2, 1), utc(2024, 3, 1)),
        (Reset.MONTHLY, utc(2023, 2, 28, 23, 59, 59, 999999), utc(2023, 2, 1), utc(2023, 3, 1)),
        (Reset.MONTHLY, utc(2024, 2, 29, 23, 59, 59, 999999), utc(2024, 2, 1), utc(2024, 3, 1)),
        (Reset.MONTHLY, utc(2024, 3, 1), utc(2024, 3, 1), utc(2024, 4, 1)),
        (Reset.MONTHLY, utc(2024, 12, 31, 23, 59, 59, 999999), utc(2024, 12, 1), utc(2025, 1, 1)),
        (Reset.MONTHLY, utc(2025, 1, 1), utc(2025, 1, 1), utc(2025, 2, 1)),
    ],
)
def test_boundaries(reset: Reset, now: datetime, start: datetime, end: datetime) -> None:
    assert period_start(reset, now) == start
    assert next_reset(reset, now) == end


def test_other_timezones_are_converted_to_utc() -> None:
    # 01:30 on Monday in UTC+2 is still Sunday in UTC.
    plus_two = timezone(timedelta(hours=2))
    now = datetime(2024, 6, 10, 1, 30, tzinfo=plus_two)
    assert period_start(Reset.DAILY, now) == utc(2024, 6, 9)
    assert period_start(Reset.WEEKLY, now) == utc(2024, 6, 3)
    assert period_start(Reset.DAILY, now).tzinfo is UTC


@pytest.mark.parametrize("reset", list(Reset))
def test_naive_datetimes_are_refused(reset: Reset) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        period_start(reset, datetime(2024, 6, 10))
    with pytest.raises(ValueError, match="timezone-aware"):
        next_reset(reset, datetime(2024, 6, 10))


def test_reset_values_are_the_stored_strings() -> None:
    assert [r.value for r in Reset] == ["never", "daily", "weekly", "monthly", "hourly"]
    assert Reset("weekly") is Reset.WEEKLY


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("1s", 1),
        ("30s", 30),
        ("1m", 60),
        ("15m", 900),
        ("1h", 3600),
        ("1d", 86400),
        ("7d", 604800),
        ("30d", 2592000),
        ("720h", 2592000),
        ("60", 60),
        ("2592000", 2592000),
        (1, 1),
        (3600, 3600),
        (2592000, 2592000),
    ],
)
def test_parse_duration(value: str | int, seconds: int) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    "value",
    [
        *["", "s", "0s", "0", "-1s", "+1s", "1.5m", "1 m", " 1m", "1m ", "1M", "1w", "1ms"],
        *["1h30m", "31d", "2592001", "\u0661\u0662s", "1m\n", "9" * 13],
        *[0, -5, 2592001, True, False, 1.0, None],
    ],
)
def test_bad_durations_are_refused(value: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        *[(1, "1s"), (59, "59s"), (60, "1m"), (90, "90s"), (3600, "1h"), (5400, "90m")],
        *[(86400, "1d"), (90000, "25h"), (604800, "7d"), (2592000, "30d")],
    ],
)
def test_format_duration_picks_the_shortest_exact_form(seconds: int, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [0, -60, True])
def test_format_duration_refuses_non_positive_values(seconds: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        format_duration(seconds)


@given(st.integers(min_value=1, max_value=30 * 86400))
def test_format_and_parse_round_trip(seconds: int) -> None:
    text = format_duration(seconds)
    assert parse_duration(text) == seconds
    assert len(text) <= len(f"{seconds}s")
