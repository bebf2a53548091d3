"""Request and response bodies of the ``/v1`` API."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StringConstraints,
    WithJsonSchema,
)

from keyplane.api.exact import CreditsOut, credits, optional_credits
from keyplane.api.fields import (
    MULTILINE_PATTERN,
    TEXT_PATTERN,
    TRIMMED_PATTERN,
    Input,
    Integral,
    Scope,
    Scopes,
    ScopeTuple,
    documented,
)
from keyplane.api.policy import NAME_PATTERN, Credits, PolicyIn, duration_pattern, to_api
from keyplane.domain import scopes, validation
from keyplane.domain.admission import MAX_WAIT_MS
from keyplane.domain.keys import Environment, KeyStatus, effective_status
from keyplane.domain.periods import MAX_PAUSE_SECONDS, Reset, parse_duration
from keyplane.domain.plans import PlanRecord
from keyplane.domain.tenancy import MANAGEMENT_SCOPES, ManagementKeyRecord, Project
from keyplane.errors import ValidationError
from keyplane.services.instances import Confirmation
from keyplane.services.keys import KeyView


def _utc(value: datetime) -> datetime:
    offset = value.utcoffset()
    if offset is None or offset.total_seconds() != 0:
        raise ValueError("timestamps must be UTC (a 'Z' or '+00:00' suffix)")
    return value


def _multiline(value: str) -> str:
    return validation.check_text(value, multiline=True)


Name = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200),
    AfterValidator(validation.check_text),
    documented(pattern=TEXT_PATTERN),
]
ShortText = Annotated[
    str,
    StringConstraints(max_length=200),
    AfterValidator(validation.check_text),
    documented(pattern=TEXT_PATTERN),
]
LongText = Annotated[
    str,
    StringConstraints(max_length=2000),
    AfterValidator(_multiline),
    documented(pattern=MULTILINE_PATTERN),
]
Reason = Annotated[
    str,
    StringConstraints(max_length=500),
    AfterValidator(validation.check_text),
    documented(pattern=TEXT_PATTERN),
]
Tag = Annotated[
    str,
    StringConstraints(min_length=1, max_length=validation.MAX_TAG_LENGTH),
    documented(pattern=TRIMMED_PATTERN),
]
Tags = Annotated[
    list[Tag],
    Field(max_length=validation.MAX_TAGS),
    AfterValidator(validation.check_tags),
]
Metadata = Annotated[
    dict[str, Any],
    AfterValidator(validation.check_metadata),
    Field(
        description="JSON without control characters in keys or text (newlines and tabs "
        "allowed in values), at most 8 levels deep and 8 KiB serialized; integers within "
        "+/-(2^53 - 1), finite numbers",
        json_schema_extra={"propertyNames": {"pattern": TEXT_PATTERN}},
    ),
]


def _iso_text(value: object) -> object:
    if not isinstance(value, str | datetime):
        raise ValueError("timestamps are ISO 8601 strings, e.g. 2030-01-31T00:00:00Z")
    return value


UtcDatetime = Annotated[
    AwareDatetime,
    BeforeValidator(_iso_text),
    AfterValidator(_utc),
    # _utc: the offset is zero (unanchored at the start: it constrains the end only).
    documented(pattern=r"(?:[Zz]|[+-]00:?00)$"),
]
ProjectId = Annotated[str, StringConstraints(pattern=r"^proj_[0-9a-z]{26}$")]
PlanName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
PlanRef = Annotated[
    str, StringConstraints(pattern=r"^([a-z0-9][a-z0-9_-]{0,63}|plan_[0-9a-z]{26})$")
]


RequestId = Annotated[
    str, StringConstraints(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")
]

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
    plan: PlanRef | None = Field(default=None, description="a plan's name or id")
    policy: PolicyIn | None = Field(default=None, description="overrides over the plan")


class KeyUpdate(Input):
    name: Name | None = None
    label: ShortText | None = None
    description: LongText | None = None
    owner: Name | None = None
    tags: Tags | None = None
    metadata: Metadata | None = None
    scopes: Scopes | None = None
    expires_at: UtcDatetime | None = None
    plan: PlanRef | None = Field(default=None, description="null takes the key off its plan")
    policy: PolicyIn | None = Field(default=None, description="replaces the key's overrides")


class KeyRevoke(Input):
    reason: Reason | None = None


def _pause(value: object) -> int:
    # 600 and 600.0 are seconds (as for every integer field); "30m", "1h", "2d" (seed 004)
    # are read by the bounded duration parser; floats with a fraction, booleans are refused.
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError('a duration is a number of seconds or text like "30m", "1h", "2d"')
    return parse_duration(value, MAX_PAUSE_SECONDS)


#: 1 second to a year: seconds, or "90s", "30m", "1h", "2d".
PauseDuration = Annotated[
    int,
    BeforeValidator(_pause),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 1, "maximum": MAX_PAUSE_SECONDS},
                {"type": "string", "pattern": duration_pattern(MAX_PAUSE_SECONDS)},
            ]
        }
    ),
]


class KeyDisable(Input):
    reason: Reason | None = None
    auto_enable_after: PauseDuration | None = Field(
        default=None,
        description='how long until the key enables itself again: seconds, or "30m", "1h", "2d"'
        " (at most a year)",
    )


class KeyRotate(Input):
    grace_period_seconds: (
        Annotated[int, Strict(), Field(ge=0, le=30 * 24 * 3600), Integral] | None
    ) = Field(default=None, description="how long the previous secret keeps verifying (default 0)")
    grace_period_hours: Annotated[int, Strict(), Field(ge=0, le=30 * 24), Integral] | None = Field(
        default=None, description="the same in hours (seed 004); must agree if both given"
    )
    invalidate_old: StrictBool | None = Field(
        default=None,
        description="true: the previous secret stops at once (no grace period may be given); "
        "false without a grace period: it keeps verifying for 24 hours",
    )

    def grace_period(self) -> timedelta:
        """The grace period these fields ask for; ValidationError when they disagree."""
        given = {
            timedelta(seconds=self.grace_period_seconds)
            if self.grace_period_seconds is not None
            else None,
            timedelta(hours=self.grace_period_hours)
            if self.grace_period_hours is not None
            else None,
        } - {None}
        if len(given) > 1:
            raise ValidationError(
                "grace_period_seconds and grace_period_hours disagree", code="CONFLICTING_GRACE"
            )
        grace = next(iter(given), None)
        if self.invalidate_old is True:
            if grace:
                raise ValidationError(
                    "invalidate_old is true: no grace period may be given",
                    code="CONFLICTING_GRACE",
                )
            return timedelta(0)
        if grace is None:
            return DEFAULT_KEEP_OLD if self.invalidate_old is False else timedelta(0)
        return grace


#: How long the previous secret keeps verifying after ``invalidate_old: false`` alone.
DEFAULT_KEEP_OLD = timedelta(hours=24)


class Usage(BaseModel):
    """Credits spent in the current periods (UTC; weeks start on Monday)."""

    total: CreditsOut
    daily: CreditsOut
    weekly: CreditsOut
    monthly: CreditsOut


class PeriodUsage(BaseModel):
    """A key's usage over a recent period, from the analytics rollups (``include=usage``)."""

    period: str
    start: datetime
    requests: int
    errors: int
    cost: CreditsOut


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
    plan: str | None = Field(description="the plan's name")
    policy: dict[str, Any] = Field(description="the key's own overrides")
    effective_policy: dict[str, Any] = Field(description="plan and overrides merged")
    usage: Usage
    limit: CreditsOut | None = Field(description="the budget's credit limit per period")
    limit_remaining: CreditsOut | None = Field(description="credits left this period")
    limit_reset: Reset | None
    limit_carry: CreditsOut | None = Field(
        default=None,
        description="budget rollover: credits carried into this period (null without rollover)",
    )
    limit_effective: CreditsOut | None = Field(
        default=None, description="this period's limit: limit plus limit_carry"
    )
    period_usage: PeriodUsage | None = Field(
        default=None, description="with include=usage on a list: the period's usage"
    )

    @classmethod
    def of(cls, view: KeyView, now: datetime) -> KeyOut:
        record = view.record
        fields = {name: getattr(record, name) for name in _RECORD_FIELDS}
        return cls(
            **fields,
            # The stored status says nothing of expiry or auto-enable; show what applies now.
            status=effective_status(record, now),
            plan=None if view.plan is None else view.plan.name,
            policy=to_api(record.policy),
            effective_policy=to_api(view.effective_policy),
            usage=Usage(
                total=credits(view.usage["total"]),
                daily=credits(view.usage["day"]),
                weekly=credits(view.usage["week"]),
                monthly=credits(view.usage["month"]),
            ),
            limit=optional_credits(view.budget_limit),
            limit_remaining=optional_credits(view.budget_remaining),
            limit_reset=view.budget_reset,
            limit_carry=optional_credits(view.budget_carry),
            limit_effective=optional_credits(
                None if view.budget_limit is None else view.budget_limit + (view.budget_carry or 0)
            ),
        )


_RECORD_FIELDS = [
    "id",
    "hash",
    "start",
    "end",
    "org_id",
    "project_id",
    "name",
    "label",
    "description",
    "owner",
    "environment",
    "tags",
    "metadata",
    "scopes",
    "disabled_reason",
    "auto_enable_at",
    "revoked_reason",
    "revoked_at",
    "expires_at",
    "created_at",
    "updated_at",
    "last_used_at",
]


class ConfirmationOut(BaseModel):
    """Which live instances confirmed dropping the key (``?wait=confirmed``). The write has
    happened either way; ``complete`` false means some instance may still serve the old
    record until it applies the eviction or its cache entry expires."""

    confirmed: list[str] = Field(description="instances that confirmed, by instance id")
    unconfirmed: list[str] = Field(description="live instances that did not confirm in time")
    complete: bool = Field(description="every live instance confirmed")
    timeout_seconds: float
    error: str | None = Field(default=None, description="why instances could not be asked")

    @classmethod
    def of(cls, confirmation: Confirmation, timeout: float) -> ConfirmationOut:
        return cls(
            confirmed=list(confirmation.confirmed),
            unconfirmed=list(confirmation.unconfirmed),
            complete=confirmation.complete,
            timeout_seconds=timeout,
            error=confirmation.error,
        )


class KeyEnvelope(BaseModel):
    data: KeyOut


class KeyConfirmedEnvelope(KeyEnvelope):
    confirmation: ConfirmationOut


_SIGNING_TEXT = (
    "the key's request-signing secret (docs/signing.md), present only when its policy "
    "requires signed requests; shown only in this response"
)


class KeyCreated(BaseModel):
    key: str = Field(description="the plaintext key; shown only in this response")
    data: KeyOut
    signing_secret: str | None = Field(
        default=None, description=_SIGNING_TEXT, exclude_if=lambda value: value is None
    )


class KeyCreatedConfirmed(KeyCreated):
    confirmation: ConfirmationOut


class KeyPage(BaseModel):
    data: list[KeyOut]
    next_cursor: str | None
    has_more: bool


# -- verify -----------------------------------------------------------------------------------


class Tokens(Input):
    input: Annotated[int, Strict(), Field(ge=0, le=10**9), Integral] = 0
    output: Annotated[int, Strict(), Field(ge=0, le=10**9), Integral] = 0


Context = Annotated[str, StringConstraints(max_length=2048)]
#: A feature, operation or provider name, as policies write them (``api.policy.NAME_PATTERN``).
PermissionName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
MAX_REQUEST_FEATURES = 32


class SignatureIn(Input):
    """The signing parts of the client's request, as sent (see docs/signing.md).

    Oversized parts are a 422; parts within these bounds but malformed (a nonce outside 16-128
    URL-safe characters, a signature that is not 64 hex digits) answer ``SIGNATURE_INVALID``.
    """

    signature: Annotated[str, StringConstraints(max_length=128)] = Field(
        description="X-Keyplane-Signature: hex HMAC-SHA256 of the canonical request"
    )
    method: Annotated[str, StringConstraints(min_length=1, max_length=16)] = Field(
        examples=["POST"]
    )
    path: Annotated[str, StringConstraints(min_length=1, max_length=4096)] = Field(
        examples=["/v1/chat/completions"]
    )
    query: Annotated[str, StringConstraints(max_length=4096)] | None = Field(
        default=None, description="the raw query string, without '?'"
    )
    timestamp: Annotated[str, StringConstraints(max_length=16)] | None = Field(
        default=None, description="X-Keyplane-Timestamp: Unix seconds"
    )
    nonce: Annotated[str, StringConstraints(max_length=256)] | None = Field(
        default=None, description="X-Keyplane-Nonce: 16-128 characters A-Z a-z 0-9 . _ ~ -"
    )
    body_sha256: Annotated[str, StringConstraints(max_length=128)] | None = Field(
        default=None, description="hex SHA-256 of the body; of the empty body when absent"
    )


class VerifyRequest(Input):
    # Validated on every verify: the list fields are read into tuples, whose ``()`` default
    # pydantic does not deep-copy per request as it copies a ``[]`` (half the validation's
    # cost); the schema is the same array with the same default.
    key: Annotated[str, StringConstraints(max_length=4096)]
    scopes: ScopeTuple = ()
    request_id: RequestId | None = Field(
        default=None, description="settles with the usage report; generated when absent"
    )
    model: Annotated[str, StringConstraints(max_length=128)] | None = None
    ip: Annotated[str, StringConstraints(max_length=64)] | None = None
    origin: Context | None = None
    referrer: Context | None = None
    user_agent: Context | None = None
    cost: Credits | None = Field(default=None, description="credits to reserve")
    tokens: Tokens | None = Field(default=None, description="estimated tokens to reserve")
    acquire_concurrency: Annotated[bool, Strict()] = False
    scheme: Literal["http", "https"] | None = Field(
        default=None, description="the scheme of the client's request (network.require_https)"
    )
    country: Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{2}$")] | None = Field(
        default=None,
        description="ISO 3166-1 alpha-2 country of the client, if the gateway knows it; "
        "else Keyplane's GeoIP database (KEYPLANE_GEOIP_DATABASE) is asked for ip's",
    )
    signature: SignatureIn | None = Field(
        default=None, description="the client's request signature (policy section signing)"
    )
    feature: PermissionName | None = Field(default=None, description="the feature used")
    features: Annotated[tuple[PermissionName, ...], Field(max_length=MAX_REQUEST_FEATURES)] = Field(
        default=(), description="features the request uses, e.g. chat_completion, vision"
    )
    operation: PermissionName | None = Field(
        default=None, description="read, write, or a data_access flag such as export_data"
    )
    provider: PermissionName | None = Field(
        default=None, description="the upstream provider the gateway is about to call"
    )
    auto_routing: Annotated[bool, Strict()] = Field(
        default=False, description="the provider was picked by automatic routing"
    )
    fallback: Annotated[bool, Strict()] = Field(
        default=False, description="the provider is a fallback after another one failed"
    )
    wait_ms: Annotated[int, Strict(), Field(ge=0, le=MAX_WAIT_MS), Integral] = Field(
        default=0,
        description="with acquire_concurrency: wait up to this long, queued, for a free slot",
    )

    def all_features(self) -> tuple[str, ...]:
        if self.feature is None:
            return self.features
        return (self.feature, *self.features)


class LimitOut(BaseModel):
    name: str
    kind: str = Field(description="rate, tokens, concurrency or budget (in credits)")
    limit: float
    remaining: float
    reset_at: datetime | None
    carry: float | None = Field(
        default=None,
        description="budgets with rollover: what of limit (this period's effective limit) "
        "carried over from the last period",
    )


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
    plan: str | None = None
    request_id: str | None = None
    limits: list[LimitOut] = []
    retry_after: float | None = Field(default=None, description="seconds, when refused")
    directives: dict[str, Any] = Field(
        default={},
        description="what the gateway must do itself: data_access, routing, advanced_features",
    )
    rotation_pending: bool = Field(
        default=False,
        description="the key presented was rotated out and verifies only in its grace period: "
        "switch to the new one (POST /v1/self/rotation/claim when the policy allows)",
    )


# -- usage ------------------------------------------------------------------------------------


class UsageReportIn(Input):
    # Exactly one of key_id and key (the service refuses others with KEY_REQUIRED).
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                {"required": ["key_id"], "properties": {"key_id": {"type": "string"}}},
                {"required": ["key"], "properties": {"key": {"type": "string"}}},
            ]
        },
    )

    key_id: Annotated[str, StringConstraints(pattern=r"^key_[0-9a-z]{26}$")] | None = None
    key: Annotated[str, StringConstraints(max_length=4096)] | None = None
    request_id: RequestId | None = None
    cost: Credits = Decimal(0)
    input_tokens: Annotated[int, Strict(), Field(ge=0, le=10**12), Integral] = 0
    output_tokens: Annotated[int, Strict(), Field(ge=0, le=10**12), Integral] = 0
    model: Annotated[str, StringConstraints(max_length=128)] | None = None
    latency_ms: Annotated[int, Strict(), Field(ge=0, le=86_400_000), Integral] | None = None
    status: Annotated[int, Strict(), Field(ge=100, le=599), Integral] | None = None
    feature: (
        Annotated[
            str,
            StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:/-]+$"),
        ]
        | None
    ) = Field(default=None, description="the feature used (chat_completion, embeddings, ...)")


class UsageRecorded(BaseModel):
    id: str = Field(description="the ledger entry")
    key_id: str
    duplicate: bool = Field(description="true when this report had been recorded before")
    recorded_at: datetime


# -- plans ------------------------------------------------------------------------------------


class PlanCreate(Input):
    name: PlanName
    description: LongText | None = None
    policy: PolicyIn = PolicyIn()


class PlanUpdate(Input):
    name: PlanName | None = None
    description: LongText | None = None
    policy: PolicyIn | None = Field(default=None, description="replaces the plan's policy")


class PlanOut(BaseModel):
    id: str
    name: str
    description: str | None
    policy: dict[str, Any]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, plan: PlanRecord) -> PlanOut:
        return cls(
            id=plan.id,
            name=plan.name,
            description=plan.description,
            policy=to_api(plan.policy),
            created_at=plan.created_at,
            updated_at=plan.updated_at,
        )


class PlanEnvelope(BaseModel):
    data: PlanOut


class PlanList(BaseModel):
    data: list[PlanOut]


# -- management keys --------------------------------------------------------------------------


def _management_scope_patterns() -> list[str]:
    """Every scope a management key may hold: a known scope, or a pattern covering one.

    A pattern keeps some leading segments of a known scope, each as written or ``*``, and
    ends in ``*`` when it keeps fewer than all (``*``, ``keys:*``, ``*:read``, ``keys:read``).
    """
    found: set[str] = set()
    for known in MANAGEMENT_SCOPES:
        parts = known.split(":")
        for kept in range(1, len(parts) + 1):
            for choice in itertools.product(*[(part, "*") for part in parts[:kept]]):
                if kept < len(parts) and choice[-1] != "*":
                    continue
                candidate = ":".join(choice)
                if any(scopes.covers(candidate, scope) for scope in MANAGEMENT_SCOPES):
                    found.add(candidate)
    return sorted(found)


# The service checks these (422 INVALID_SCOPE); the document lists them.
ManagementScope = Annotated[Scope, documented(enum=_management_scope_patterns())]


class ManagementKeyCreate(Input):
    name: Name
    scopes: Annotated[list[ManagementScope], Field(min_length=1, max_length=20)]
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


class ManagementKeyConfirmedEnvelope(ManagementKeyEnvelope):
    confirmation: ConfirmationOut


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


# -- answers to write-only callers ------------------------------------------------------------
# Write does not imply read: a caller holding ``X:write`` but not ``X:read`` learns which object
# its write touched and the state it left it in, never the record (owner, metadata, policy,
# scopes, ...) that only ``X:read`` may see.


class Ack(BaseModel):
    """Which object a write touched, and its status after it (when it has one)."""

    id: str
    status: str | None = None


class AckEnvelope(BaseModel):
    data: Ack


class AckConfirmedEnvelope(AckEnvelope):
    confirmation: ConfirmationOut


class AckList(BaseModel):
    data: list[Ack]


class AckCreated(BaseModel):
    key: str = Field(description="the plaintext key; shown only in this response")
    data: Ack
    signing_secret: str | None = Field(
        default=None, description=_SIGNING_TEXT, exclude_if=lambda value: value is None
    )


class AckCreatedConfirmed(AckCreated):
    confirmation: ConfirmationOut


OldKeyExpiresAt = Annotated[datetime, Field(description="when the previous secret stops verifying")]


class KeyRotated(KeyCreated):
    old_key_expires_at: OldKeyExpiresAt


class KeyRotatedConfirmed(KeyCreatedConfirmed):
    old_key_expires_at: OldKeyExpiresAt


class AckRotated(AckCreated):
    old_key_expires_at: OldKeyExpiresAt


class AckRotatedConfirmed(AckCreatedConfirmed):
    old_key_expires_at: OldKeyExpiresAt
