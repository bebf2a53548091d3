"""Bodies of the rotation policy, claim and job routes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, Strict, StrictBool, StringConstraints

from keyplane.api.fields import Input, Integral
from keyplane.domain.jobs import JobRecord
from keyplane.domain.rotation import (
    MAX_AGE_DAYS,
    MAX_CHANNEL_LENGTH,
    MAX_CHANNELS,
    MAX_GRACE,
    HeldSecret,
    RotationSchedule,
)
from keyplane.domain.schedules import MAX_CRON_LENGTH
from keyplane.services.rotation import PlanRotation

#: Five cron fields of the characters cron uses; croniter has the last word.
_CRON_PATTERN = r"^\s*[0-9A-Za-z*/,?#-]+(?:\s+[0-9A-Za-z*/,?#-]+){4}\s*$"
_CHANNEL_PATTERN = r"^(?:email:[^@\s]{1,64}@[A-Za-z0-9.-]{1,253}|webhook:https://\S{1,490})$"

Channel = Annotated[str, StringConstraints(max_length=MAX_CHANNEL_LENGTH, pattern=_CHANNEL_PATTERN)]


class RotationIn(Input):
    """A key's rotation policy, in seed 004's shape."""

    enabled: StrictBool = True
    schedule: Annotated[
        str | None,
        StringConstraints(max_length=MAX_CRON_LENGTH, pattern=_CRON_PATTERN),
        Field(description="cron expression, always UTC (minute hour day month weekday)"),
    ] = None
    max_age_days: Annotated[int, Strict(), Field(ge=1, le=MAX_AGE_DAYS), Integral] | None = Field(
        default=None, description="rotate once the secret is this many days old"
    )
    strategy: Literal["gradual", "immediate"] = Field(
        default="gradual",
        description="gradual: the old secret verifies for grace_period_hours; immediate: not",
    )
    grace_period_hours: Annotated[int, Strict(), Field(ge=0, le=MAX_GRACE.days * 24), Integral] = 24
    notification_channels: Annotated[list[Channel], Field(max_length=MAX_CHANNELS)] = Field(
        default_factory=list,
        description="registered webhook endpoints or email channels also told of rotations "
        "(never the secret)",
    )
    auto_update_apps: StrictBool = Field(
        default=False,
        description="the old key may claim the new secret during the grace period "
        "(POST /v1/self/rotation/claim)",
    )


class HeldOut(BaseModel):
    """The state of the key's last automatic rotation secret (never the secret itself)."""

    state: str
    reason: str
    rotated_at: datetime
    old_key_expires_at: datetime
    claim_until: datetime
    self_claim: bool

    @classmethod
    def of(cls, held: HeldSecret) -> HeldOut:
        return cls(
            state=held.state.value,
            reason=held.reason,
            rotated_at=held.rotated_at,
            old_key_expires_at=held.old_valid_until,
            claim_until=held.claim_until,
            self_claim=held.self_claim,
        )


class RotationOut(BaseModel):
    key_id: str
    enabled: bool
    schedule: str | None
    max_age_days: int | None
    strategy: str
    grace_period_hours: int
    notification_channels: list[str]
    auto_update_apps: bool
    next_rotation_at: datetime | None
    last_rotated_at: datetime | None
    pending: HeldOut | None = None
    from_plan: str | None = Field(
        None, description="the plan (id) whose policy the key follows; null for its own policy"
    )

    @classmethod
    def of(cls, schedule: RotationSchedule, held: HeldSecret | None) -> RotationOut:
        policy = schedule.policy
        return cls(
            key_id=schedule.key_id,
            enabled=policy.enabled,
            schedule=policy.schedule,
            max_age_days=policy.max_age_days,
            strategy=policy.strategy.value,
            grace_period_hours=policy.grace_period_hours,
            notification_channels=list(policy.notification_channels),
            auto_update_apps=policy.auto_update_apps,
            next_rotation_at=schedule.next_rotation_at,
            last_rotated_at=schedule.last_rotated_at,
            pending=None if held is None else HeldOut.of(held),
            from_plan=schedule.from_plan,
        )


class RotationEnvelope(BaseModel):
    data: RotationOut


class PlanRotationOut(BaseModel):
    plan_id: str
    plan: str
    enabled: bool
    schedule: str | None
    max_age_days: int | None
    strategy: str
    grace_period_hours: int
    notification_channels: list[str]
    auto_update_apps: bool
    keys_following: int | None = Field(
        None,
        description="keys on the plan without their own policy, now following this one "
        "(in the answer to setting it)",
    )

    @classmethod
    def of(cls, rotation: PlanRotation) -> PlanRotationOut:
        policy = rotation.policy
        return cls(
            plan_id=rotation.plan_id,
            plan=rotation.plan_name,
            enabled=policy.enabled,
            schedule=policy.schedule,
            max_age_days=policy.max_age_days,
            strategy=policy.strategy.value,
            grace_period_hours=policy.grace_period_hours,
            notification_channels=list(policy.notification_channels),
            auto_update_apps=policy.auto_update_apps,
            keys_following=rotation.keys_following,
        )


class PlanRotationEnvelope(BaseModel):
    data: PlanRotationOut


class ClaimedOut(BaseModel):
    key: str = Field(description="the new plaintext key; shown only in this response")
    key_id: str
    old_key_expires_at: datetime = Field(description="when the previous secret stops verifying")


class JobOut(BaseModel):
    name: str
    kind: str
    schedule: str = Field(description="the cron expression (UTC), or 'every N s'")
    next_run_at: datetime
    last_run_at: datetime | None
    last_finished_at: datetime | None
    last_outcome: str | None
    last_error: str | None = Field(description="the exception type of the last failure")
    attempts: int = Field(description="runs started since the last success")
    running: bool = Field(description="claimed by an instance under a live lease")

    @classmethod
    def of(cls, job: JobRecord, now: datetime) -> JobOut:
        return cls(
            name=job.name,
            kind=job.kind,
            schedule=job.schedule or f"every {job.interval_seconds or 0} s",
            next_run_at=job.next_run_at,
            last_run_at=job.last_started_at,
            last_finished_at=job.last_finished_at,
            last_outcome=job.last_outcome,
            last_error=job.last_error,
            attempts=job.attempts,
            running=job.lease_until is not None and job.lease_until > now,
        )


class JobList(BaseModel):
    data: list[JobOut]
