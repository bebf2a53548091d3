"""Cron schedules (always UTC), rotation policies and job retry delays: pure, at the edges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyplane.domain.jobs import RETRY_MAX, retry_delay
from keyplane.domain.rotation import RotationPolicy, Strategy, claim_window
from keyplane.domain.schedules import Schedule, check_cron, next_cron
from keyplane.errors import ValidationError


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        # Monthly on the 1st, from the last day of months of every length.
        ("0 0 1 * *", at(2027, 1, 31, 23, 59), at(2027, 2, 1)),
        ("0 0 1 * *", at(2027, 2, 28, 12), at(2027, 3, 1)),
        ("0 0 1 * *", at(2028, 2, 29, 12), at(2028, 3, 1)),
        ("0 0 1 * *", at(2027, 12, 31, 23, 59), at(2028, 1, 1)),
        # Exactly on a firing time: the next one, strictly after.
        ("0 0 1 * *", at(2027, 3, 1), at(2027, 4, 1)),
        # The 31st skips the months without one.
        ("0 0 31 * *", at(2027, 4, 1), at(2027, 5, 31)),
        ("0 0 31 * *", at(2027, 5, 31, 0, 1), at(2027, 7, 31)),
        # 29 February: only in leap years (2100 is not one).
        ("0 0 29 2 *", at(2027, 3, 1), at(2028, 2, 29)),
        ("0 0 29 2 *", at(2096, 3, 1), at(2104, 2, 29)),
        # The last day of February, leap or not, through the day-of-month list.
        ("30 6 28,29 2 *", at(2028, 2, 28, 7), at(2028, 2, 29, 6, 30)),
        # Weekdays and steps.
        ("*/15 * * * *", at(2027, 1, 1, 0, 7), at(2027, 1, 1, 0, 15)),
        ("0 9 * * 1", at(2027, 1, 1), at(2027, 1, 4, 9)),
    ],
)
def test_next_cron_across_month_ends_and_leap_days(
    expression: str, after: datetime, expected: datetime
) -> None:
    assert next_cron(expression, after) == expected


def test_next_cron_is_utc_whatever_the_input_zone() -> None:
    from datetime import timezone

    paris_midnight = datetime(2027, 1, 31, 23, 30, tzinfo=timezone(timedelta(hours=1)))
    found = next_cron("0 0 1 * *", paris_midnight)
    assert found == at(2027, 2, 1) and found.tzinfo == UTC


@pytest.mark.parametrize(
    "expression",
    [
        "0 0 30 2 *",  # never fires: refused within a bounded search
        "0 0 31 4 *",
        "* * *",
        "0 0 1 * * *",
        "99 * * * *",
        "a b c d e",
        "0 0 1 * *" + " " * 200,
        "\uff10 0 1 * *",  # a non-ASCII (fullwidth) digit
        "",
    ],
)
def test_bad_or_never_firing_cron_is_refused(expression: str) -> None:
    with pytest.raises(ValidationError) as raised:
        check_cron(expression)
    assert raised.value.code == "INVALID_SCHEDULE"


def test_cron_is_normalized() -> None:
    assert check_cron("  0  0 1 *   * ") == "0 0 1 * *"


@settings(max_examples=60, deadline=None)
@given(
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1)),
    st.sampled_from(["0 0 1 * *", "0 0 29 2 *", "15 3 * * 0", "0 */6 * * *", "0 0 31 * *"]),
)
def test_next_cron_is_strictly_later_and_fires_again(naive: datetime, expression: str) -> None:
    after = naive.replace(tzinfo=UTC)
    first = next_cron(expression, after)
    assert first > after and first.second == 0
    assert next_cron(expression, first) > first


def test_interval_schedules() -> None:
    every = Schedule.every(timedelta(minutes=1))
    assert every.next_after(at(2027, 1, 1)) == at(2027, 1, 1, 0, 1)
    assert every.describe() == "every 60 s"
    with pytest.raises(ValidationError):
        Schedule.every(timedelta(0))


def test_retry_delay_doubles_and_is_capped() -> None:
    assert retry_delay(1) == timedelta(seconds=30)
    assert retry_delay(2) == timedelta(seconds=60)
    assert retry_delay(3) == timedelta(seconds=120)
    assert retry_delay(10**6) == RETRY_MAX


def test_rotation_policy_of_seed_004() -> None:
    policy = RotationPolicy.from_document(
        {
            "enabled": True,
            "schedule": "0 0 1 * *",
            "strategy": "gradual",
            "notification_channels": [
                "email:security@company.com",
                "webhook:https://api.company.com/key-rotation",
            ],
            "grace_period_hours": 24,
            "auto_update_apps": True,
        }
    )
    assert policy.grace == timedelta(hours=24)
    assert policy.next_rotation(at(2028, 2, 29, 12)) == at(2028, 3, 1)
    assert RotationPolicy.from_document(policy.to_document()) == policy


def test_max_age_rotation_and_immediate_strategy() -> None:
    policy = RotationPolicy.from_document({"max_age_days": 90, "strategy": "immediate"})
    assert policy.next_rotation(at(2027, 12, 3)) == at(2028, 3, 2)
    assert policy.grace == timedelta(0)
    # The operator still gets an hour to claim a secret rotated without grace.
    assert claim_window(at(2027, 1, 1), policy.grace) == at(2027, 1, 1, 1)
    assert RotationPolicy.from_document({"enabled": False}).next_rotation(at(2027, 1, 1)) is None
    assert policy.strategy is Strategy.IMMEDIATE


@pytest.mark.parametrize(
    "document",
    [
        {},  # enabled without a schedule or an age
        {"max_age_days": 0},
        {"max_age_days": True},
        {"max_age_days": 10**9},
        {"schedule": 5},
        {"schedule": "0 0 30 2 *"},
        {"max_age_days": 30, "strategy": "sometimes"},
        {"max_age_days": 30, "grace_period_hours": -1},
        {"max_age_days": 30, "grace_period_hours": 24 * 31},
        {"max_age_days": 30, "notification_channels": ["sms:+33600000000"]},
        {"max_age_days": 30, "notification_channels": ["webhook:http://plain.example"]},
        {"max_age_days": 30, "notification_channels": ["email:x@y.z"] * 11},
        {"max_age_days": 30, "notification_channels": "email:x@y.z"},
        {"max_age_days": 30, "auto_update_apps": "yes"},
        {"max_age_days": 30, "surprise": 1},
        [],
    ],
)
def test_bad_rotation_policies_are_refused(document: object) -> None:
    with pytest.raises(ValidationError):
        RotationPolicy.from_document(document)  # type: ignore[arg-type]
