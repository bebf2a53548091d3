"""Key rotation policies and held rotation secrets (pure).

A rotation policy says when a key gets a new secret by itself: on a cron ``schedule`` (UTC), or
once its secret is ``max_age_days`` old, whichever the policy sets (a schedule wins when both
are). ``strategy`` ``gradual`` keeps the old secret working for ``grace_period_hours``;
``immediate`` ends it at once. ``notification_channels`` name where ``key.rotation.*`` events
go besides the organization's webhook endpoints (``email:ops@example.com``,
``webhook:https://...``); they never carry the new secret. ``auto_update_apps`` lets the
customer's application claim the new secret by presenting the old one during the grace period
(``POST /v1/self/rotation/claim``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from keyplane.domain.schedules import check_cron, next_cron
from keyplane.errors import ValidationError

#: Longest grace period a rotation may give the old secret (as the manual rotation's).
MAX_GRACE = timedelta(days=30)
MAX_AGE_DAYS = 3650
MAX_CHANNELS = 10
MAX_CHANNEL_LENGTH = 500
_EMAIL = re.compile(r"[^@\s]{1,64}@[A-Za-z0-9.-]{1,253}")
_WEBHOOK = re.compile(r"https://[^\s]{1,490}")


class Strategy(StrEnum):
    GRADUAL = "gradual"
    IMMEDIATE = "immediate"


class HeldState(StrEnum):
    """Where a held rotation secret is: waiting, claimed, or erased unclaimed."""

    PENDING = "pending"
    CLAIMED = "claimed"
    UNCLAIMED = "unclaimed"
    #: A later rotation (manual or automatic) replaced the key's secret before a claim.
    SUPERSEDED = "superseded"


@dataclass(frozen=True, slots=True)
class RotationPolicy:
    enabled: bool = True
    schedule: str | None = None
    max_age_days: int | None = None
    strategy: Strategy = Strategy.GRADUAL
    grace_period_hours: int = 24
    notification_channels: tuple[str, ...] = ()
    auto_update_apps: bool = False

    @property
    def grace(self) -> timedelta:
        """How long the old secret keeps verifying after an automatic rotation."""
        if self.strategy is Strategy.IMMEDIATE:
            return timedelta(0)
        return timedelta(hours=self.grace_period_hours)

    def next_rotation(self, last_rotated: datetime) -> datetime | None:
        """When the key is next due, counting from its last rotation (or creation)."""
        if not self.enabled:
            return None
        if self.schedule is not None:
            return next_cron(self.schedule, last_rotated)
        if self.max_age_days is not None:
            return last_rotated + timedelta(days=self.max_age_days)
        return None

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> RotationPolicy:
        """A policy from its JSON form; ValidationError naming the first bad field."""
        if not isinstance(document, Mapping):
            raise ValidationError("rotation must be an object", code="INVALID_ROTATION_POLICY")
        known = {
            "enabled",
            "schedule",
            "max_age_days",
            "strategy",
            "grace_period_hours",
            "notification_channels",
            "auto_update_apps",
        }
        unknown = sorted(set(document) - known)
        if unknown:
            raise _invalid(f"unknown rotation field {unknown[0][:40]!r}")
        enabled = _bool(document.get("enabled", True), "enabled")
        schedule = document.get("schedule")
        if schedule is not None:
            if not isinstance(schedule, str):
                raise _invalid("schedule must be a cron expression")
            schedule = check_cron(schedule)
        max_age = document.get("max_age_days")
        if max_age is not None and (
            isinstance(max_age, bool)
            or not isinstance(max_age, int)
            or not 1 <= max_age <= MAX_AGE_DAYS
        ):
            raise _invalid(f"max_age_days must be an integer from 1 to {MAX_AGE_DAYS}")
        strategy = document.get("strategy", Strategy.GRADUAL.value)
        if strategy not in {s.value for s in Strategy}:
            raise _invalid("strategy must be 'gradual' or 'immediate'")
        grace = document.get("grace_period_hours", 24)
        if (
            isinstance(grace, bool)
            or not isinstance(grace, int)
            or not 0 <= grace <= MAX_GRACE.days * 24
        ):
            raise _invalid(f"grace_period_hours must be an integer from 0 to {MAX_GRACE.days * 24}")
        channels = document.get("notification_channels", [])
        if not isinstance(channels, list) or len(channels) > MAX_CHANNELS:
            raise _invalid(f"notification_channels must be a list of at most {MAX_CHANNELS}")
        for channel in channels:
            check_channel(channel)
        if enabled and schedule is None and max_age is None:
            raise _invalid("an enabled rotation policy needs a schedule or max_age_days")
        return cls(
            enabled=enabled,
            schedule=schedule,
            max_age_days=max_age,
            strategy=Strategy(strategy),
            grace_period_hours=grace,
            notification_channels=tuple(channels),
            auto_update_apps=_bool(document.get("auto_update_apps", False), "auto_update_apps"),
        )

    def to_document(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "schedule": self.schedule,
            "max_age_days": self.max_age_days,
            "strategy": self.strategy.value,
            "grace_period_hours": self.grace_period_hours,
            "notification_channels": list(self.notification_channels),
            "auto_update_apps": self.auto_update_apps,
        }


def check_channel(channel: object) -> str:
    """A notification channel: ``email:<address>`` or ``webhook:https://<url>``."""
    if not isinstance(channel, str) or len(channel) > MAX_CHANNEL_LENGTH:
        raise _invalid("a notification channel is 'email:<address>' or 'webhook:https://...'")
    kind, _, target = channel.partition(":")
    if kind == "email" and _EMAIL.fullmatch(target):
        return channel
    if kind == "webhook" and _WEBHOOK.fullmatch(target):
        return channel
    raise _invalid("a notification channel is 'email:<address>' or 'webhook:https://...'")


def _bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise _invalid(f"{name} must be true or false")
    return value


def _invalid(message: str) -> ValidationError:
    return ValidationError(message, code="INVALID_ROTATION_POLICY")


#: An automatic rotation's new secret can be claimed for at least this long, even when the
#: old secret ends at once (``immediate``): the operator's backend still has to fetch it.
MIN_CLAIM_WINDOW = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class HeldSecret:
    """An automatic rotation's new secret, sealed until claimed once or its window ends."""

    key_id: str
    org_id: str
    project_id: str
    #: ``None`` once claimed or erased.
    sealed_secret: str | None
    new_hash: str
    #: The hash of the secret it replaced: what ``/v1/self/rotation/claim`` presents.
    old_hash: str
    #: Whether the old key may claim it (the policy's ``auto_update_apps``; never after a leak).
    self_claim: bool
    reason: str
    state: HeldState
    rotated_at: datetime
    #: When the old secret stops verifying (the rotation's grace period ends).
    old_valid_until: datetime
    claim_until: datetime
    settled_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class RotationSchedule:
    """A key's rotation policy as stored, with when it is next due."""

    key_id: str
    org_id: str
    policy: RotationPolicy
    next_rotation_at: datetime | None
    last_rotated_at: datetime | None
    updated_at: datetime
    #: The plan whose policy this is, inherited; ``None`` for the key's own policy.
    from_plan: str | None = None


def first_rotation(policy: RotationPolicy, since: datetime, now: datetime) -> datetime | None:
    """When a newly set (or newly inherited) policy is first due: a cron's next time after
    now; an age limit's date counted from ``since``, the last rotation or the key's creation
    (due at once when already past)."""
    if policy.schedule is not None:
        return policy.next_rotation(now)
    return policy.next_rotation(since)


@dataclass(frozen=True, slots=True)
class ScheduleAdvance:
    """A due schedule moved on by the rotation it caused: from ``expected`` (as the sweep read
    it) to ``next_rotation_at``, at ``at``."""

    expected: datetime
    next_rotation_at: datetime | None
    at: datetime


def claim_window(rotated_at: datetime, grace: timedelta) -> datetime:
    """Until when a held secret may be claimed: the grace period, at least an hour."""
    return rotated_at + max(grace, MIN_CLAIM_WINDOW)


def held_associated_data(org_id: str, key_id: str, new_hash: str) -> bytes:
    """What a sealed held secret is bound to: a token copied to another key's row won't open."""
    return "\0".join(("held-rotation", org_id, key_id, new_hash)).encode("utf-8")
