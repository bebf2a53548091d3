"""Request and response bodies of the ``/v1`` API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
)

from keyplane.domain import scopes, validation
from keyplane.domain.keys import Environment, KeyRecord, KeyStatus, effective_status
from keyplane.domain.tenancy import ManagementKeyRecord, Project


def _scope(value: str) -> str:
    if not scopes.is_valid_scope(value):
        raise ValueError("scopes are lower-case segments separated by ':' ('*' for any)")
    return value


def _utc(value: datetime) -> datetime:
    offset = value.utcoffset()
    if offset is None or offset.total_seconds() != 0:
        raise ValueError("timestamps must be UTC (a 'Z' or '+00:00' suffix)")
    return value


def _multiline(value: str) -> str:
    return validation.check_text(value, multiline=True)


Name = Annotated[
    str, StringConstraints(min_length=1, max_length=200), AfterValidator(validation.check_text)
]
ShortText = Annotated[str, StringConstraints(max_length=200), AfterValidator(validation.check_text)]
LongText = Annotated[str, StringConstraints(max_length=2000), AfterValidator(_multiline)]
Reason = Annotated[str, StringConstraints(max_length=500), AfterValidator(validation.check_text)]
Scope = Annotated[str, StringConstraints(min_length=1, max_length=128), AfterValidator(_scope)]
Scopes = Annotated[list[Scope], Field(max_length=validation.MAX_SCOPES)]
Tags = Annotated[
    list[Annotated[str, StringConstraints(max_length=validation.MAX_TAG_LENGTH)]],
    Field(max_length=validation.MAX_TAGS),
    AfterValidator(validation.check_tags),
]
Metadata = Annotated[dict[str, Any], AfterValidator(validation.check_metadata)]


def _iso_text(value: object) -> object:
    if not isinstance(value, str | datetime):
        raise ValueError("timestamps are ISO 8601 strings, e.g. 2030-01-31T00:00:00Z")
    return value


UtcDatetime = Annotated[AwareDatetime, BeforeValidator(_iso_text), AfterValidator(_utc)]
# 10 means 10: not "10", true or 10.0.
Seconds = Annotated[int, Strict()]
ProjectId = Annotated[str, StringConstraints(pattern=r"^proj_[0-9a-z]{26}$")]


class Input(BaseModel):
    # Unknown fields are refused so that typos do not pass silently.
    model_config = ConfigDict(extra="forbid")


# -- API keys ---------------------------------------------------------------------------------


class KeyCreate(Input):
    name: Name
    environment: Environment = Environment.LIVE
    project_id: ProjectId | None = None
    label: ShortText | None = None
    description: LongText | None = None
    owner: Name | None = Field(default=None, description="external_id of your customer")
    tags: Tags = []
    metadata: Metadata = {}
    scopes: Scopes = []
    expires_at: UtcDatetime | None = None


class KeyUpdate(Input):
    name: Name | None = None
    label: ShortText | None = None
    description: LongText | None = None
    owner: Name | None = None
    tags: Tags | None = None
    metadata: Metadata | None = None
    scopes: Scopes | None = None
    expires_at: UtcDatetime | None = None


class KeyRevoke(Input):
    reason: Reason | None = None


class KeyDisable(Input):
    reason: Reason | None = None
    auto_enable_after: Seconds | None = Field(
        default=None,
        ge=1,
        le=365 * 24 * 3600,
        description="seconds after which the key enables itself again",
    )


class KeyRotate(Input):
    grace_period_seconds: Seconds = Field(
        default=0,
        ge=0,
        le=30 * 24 * 3600,
        description="how long the previous secret keeps verifying",
    )


class KeyOut(BaseModel):
    id: str
    hash: str
    start: str
    end: str
    org_id: str
    project_id: str
    name: str
    label: str | None
    description: str | None
    owner: str | None
    environment: Environment
    tags: list[str]
    metadata: dict[str, Any]
    scopes: list[str]
    status: KeyStatus
    disabled_reason: str | None
    auto_enable_at: datetime | None
    revoked_reason: str | None
    revoked_at: datetime | None
    expires_at: datetime | None
    created_at: datetime
    updated_at: datetime
    last_used_at: datetime | None

    @classmethod
    def of(cls, record: KeyRecord, now: datetime) -> KeyOut:
        out = cls.model_validate(record, from_attributes=True)
        # The stored status says nothing of expiry or auto-enable; show what applies now.
        out.status = effective_status(record, now)
        return out


class KeyEnvelope(BaseModel):
    data: KeyOut


class KeyCreated(BaseModel):
    key: str = Field(description="the plaintext key; shown only in this response")
    data: KeyOut


class KeyPage(BaseModel):
    data: list[KeyOut]
    next_cursor: str | None
    has_more: bool


# -- verify -----------------------------------------------------------------------------------


class VerifyRequest(Input):
    key: Annotated[str, StringConstraints(max_length=4096)]
    scopes: Scopes = []


class VerifyResponse(BaseModel):
    valid: bool
    code: str
    key_id: str | None = None
    owner: str | None = None
    name: str | None = None
    environment: Environment | None = None
    tags: list[str] = []
    metadata: dict[str, Any] = {}
    scopes: list[str] = []
    expires_at: datetime | None = None


# -- management keys --------------------------------------------------------------------------


class ManagementKeyCreate(Input):
    name: Name
    scopes: Annotated[list[Scope], Field(min_length=1, max_length=20)]
    project_id: ProjectId | None = None


class ManagementKeyOut(BaseModel):
    id: str
    org_id: str
    project_id: str | None
    name: str
    start: str
    end: str
    scopes: list[str]
    created_by: str | None
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def of(cls, record: ManagementKeyRecord) -> ManagementKeyOut:
        return cls.model_validate(record, from_attributes=True)


class ManagementKeyEnvelope(BaseModel):
    data: ManagementKeyOut


class ManagementKeyCreated(BaseModel):
    key: str = Field(description="the plaintext management key; shown only in this response")
    data: ManagementKeyOut


class ManagementKeyPage(BaseModel):
    data: list[ManagementKeyOut]
    next_cursor: str | None
    has_more: bool


# -- projects ---------------------------------------------------------------------------------


class ProjectCreate(Input):
    name: Name
    key_prefix: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,15}$")] = "kp"


class ProjectOut(BaseModel):
    id: str
    org_id: str
    name: str
    key_prefix: str
    created_at: datetime

    @classmethod
    def of(cls, project: Project) -> ProjectOut:
        return cls.model_validate(project, from_attributes=True)


class ProjectEnvelope(BaseModel):
    data: ProjectOut


class ProjectList(BaseModel):
    data: list[ProjectOut]
