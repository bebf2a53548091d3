"""Typed responses of the ``/v1`` API, as the SDK sees them.

Defined here rather than shared with the server so that the SDK depends on nothing but httpx
and pydantic. Unknown fields are kept (``extra="allow"``): a newer server adding a field does
not break an older SDK. Credits are :class:`~decimal.Decimal`, never floats.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

T = TypeVar("T")


class Model(BaseModel):
    """Base of every response model."""

    model_config = ConfigDict(extra="allow")


class JsonNumber(float):
    """A JSON number from a response that keeps the text it was written as.

    The server writes credits with every digit of the micro-credits (``999999999999.999999``),
    more than a float holds; credit fields read this text, everything else sees a float.
    """

    __slots__ = ("text",)
    text: str

    def __new__(cls, text: str) -> JsonNumber:
        number = super().__new__(cls, text)
        number.text = text
        return number

    def __reduce__(self) -> tuple[type[float], tuple[float]]:
        return float, (float(self),)


def parse_json(content: bytes | str) -> Any:
    """A response body, with numbers that keep their exact text (see :class:`JsonNumber`)."""
    return json.loads(content, parse_float=JsonNumber)


def exact_decimal(value: float) -> Decimal:
    """A parsed JSON number as the Decimal its text says (a plain float: its shortest text)."""
    return Decimal(value.text) if isinstance(value, JsonNumber) else Decimal(repr(value))


def _decimal(value: object) -> object:
    if isinstance(value, JsonNumber):
        return Decimal(value.text)
    # Another float: read through its shortest text, so 0.1 stays 0.1.
    return Decimal(repr(value)) if isinstance(value, float) else value


class Usage(Model):
    """Credits spent in the current periods (UTC; weeks start on Monday)."""

    total: Decimal
    daily: Decimal
    weekly: Decimal
    monthly: Decimal

    _credits = field_validator("total", "daily", "weekly", "monthly", mode="before")(_decimal)


class Key(Model):
    """An API key's record. Never holds the secret."""

    id: str
    hash: str
    start: str
    end: str
    org_id: str
    project_id: str
    name: str
    label: str | None = None
    description: str | None = None
    owner: str | None = None
    environment: str
    tags: list[str] = []
    metadata: dict[str, Any] = {}
    scopes: list[str] = []
    status: str
    disabled_reason: str | None = None
    auto_enable_at: datetime | None = None
    revoked_reason: str | None = None
    revoked_at: datetime | None = None
    expires_at: datetime | None = None
    created_at: datetime
    updated_at: datetime
    last_used_at: datetime | None = None
    plan: str | None = None
    policy: dict[str, Any] = {}
    effective_policy: dict[str, Any] = {}
    usage: Usage
    limit: Decimal | None = None
    limit_remaining: Decimal | None = None
    limit_reset: str | None = None
    #: Budget rollover: what carried into this period, and the period's limit with it.
    limit_carry: Decimal | None = None
    limit_effective: Decimal | None = None

    _credits = field_validator(
        "limit", "limit_remaining", "limit_carry", "limit_effective", mode="before"
    )(_decimal)


class Ack(Model):
    """What a write answers a caller without the read scope: which object, and its status.

    Write does not imply read: a management key with ``keys:write`` but not ``keys:read`` (and
    likewise for the other objects) is never sent the record it changed.
    """

    id: str
    status: str | None = None


class KeyCreated(Model):
    """A created or rotated key: its plaintext ``key`` is shown only this once.

    ``data`` is the key's record, or only an ``Ack`` when the management key cannot read keys.
    ``replayed`` is true when the server answered a repeated ``Idempotency-Key`` with the key
    it had created before (response header ``Idempotent-Replayed: true``).
    """

    key: str = Field(repr=False)
    data: Annotated[Key | Ack, Field(union_mode="left_to_right")]
    replayed: bool = False
    #: The key's request-signing secret when its policy requires signed requests
    #: (docs/signing.md); shown as rarely as the key.
    signing_secret: str | None = Field(default=None, repr=False)


class Page(Model, Generic[T]):
    """One page of a cursor-paginated list; pass ``next_cursor`` to get the next."""

    data: list[T]
    next_cursor: str | None = None
    has_more: bool = False


class Limit(Model):
    """A limit's state after a verify (``kind`` budget is in credits)."""

    name: str
    kind: str
    limit: Decimal
    remaining: Decimal
    reset_at: datetime | None = None
    #: Budgets with rollover: what of ``limit`` carried over from the last period.
    carry: Decimal | None = None

    _numbers = field_validator("limit", "remaining", "carry", mode="before")(_decimal)


class LimitsReset(Model):
    """What ``POST /v1/keys/{id}/limits/reset`` did."""

    key_id: str
    windows: list[str]
    concurrency: bool
    slots_released: int


class CreditAdjustment(Model):
    """A credit adjustment of a key's budget (positive: granted; negative: charged).

    ``replayed`` is true when a repeated ``Idempotency-Key`` answered the first adjustment.
    """

    id: str
    key_id: str
    amount: Decimal
    reason: str
    created_at: datetime
    replayed: bool = False

    _amount = field_validator("amount", mode="before")(_decimal)


class Verdict(Model):
    """The answer of ``POST /v1/verify``: switch on ``code`` (VALID, NOT_FOUND, RATE_LIMITED...)."""

    valid: bool
    code: str
    key_id: str | None = None
    owner: str | None = None
    name: str | None = None
    environment: str | None = None
    tags: list[str] = []
    metadata: dict[str, Any] = {}
    scopes: list[str] = []
    expires_at: datetime | None = None
    plan: str | None = None
    request_id: str | None = None
    limits: list[Limit] = []
    retry_after: float | None = None
    #: What the gateway must do itself: ``data_access``, ``routing``, ``advanced_features``.
    directives: dict[str, Any] = {}
    #: The key was rotated out and verifies in its grace period only (see RotatingKey).
    rotation_pending: bool = False


class UsageRecorded(Model):
    """An acknowledged (durable) usage report; ``duplicate`` when it had been recorded before."""

    id: str
    key_id: str
    duplicate: bool
    recorded_at: datetime


class UsageStreamEvent(Model):
    """One usage report from a live stream, once durable (``usage.stream``)."""

    id: str
    key_id: str
    project_id: str
    owner: str | None = None
    request_id: str | None = None
    model: str | None = None
    cost: Decimal
    input_tokens: int = 0
    output_tokens: int = 0
    latency_ms: int | None = None
    status: int | None = None
    recorded_at: datetime

    _credits = field_validator("cost", mode="before")(_decimal)


class Event(Model):
    """Something that happened to a key (``budget.threshold_crossed``, ...)."""

    id: str
    type: str
    subject_id: str | None = None
    payload: dict[str, Any] = {}
    created_at: datetime


class Plan(Model):
    """A named policy template."""

    id: str
    name: str
    description: str | None = None
    policy: dict[str, Any] = {}
    created_at: datetime
    updated_at: datetime


class ManagementKey(Model):
    """A management key's record. Never holds the secret."""

    id: str
    org_id: str
    project_id: str | None = None
    name: str
    start: str
    end: str
    scopes: list[str] = []
    created_by: str | None = None
    created_at: datetime
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None


class ManagementKeyCreated(Model):
    """A created management key: its plaintext ``key`` is shown only this once."""

    key: str = Field(repr=False)
    #: The record, or only an ``Ack`` when the caller cannot read management keys.
    data: Annotated[ManagementKey | Ack, Field(union_mode="left_to_right")]
    replayed: bool = False


class Webhook(Model):
    """A webhook endpoint (or email channel); ``secret`` only in a create or rotate answer."""

    id: str
    kind: str
    url: str
    events: list[str]
    description: str | None = None
    enabled: bool
    project: str | None = None
    disabled_reason: str | None = None
    failing_since: datetime | None = None
    previous_secret_valid_until: datetime | None = None
    created_at: datetime
    updated_at: datetime
    #: The signing secret (``whsec_...``): in a create or rotate answer only, shown once.
    secret: str | None = Field(default=None, repr=False)


class DeliveryAttempt(Model):
    number: int
    at: datetime
    status_code: int | None = None
    latency_ms: int
    error: str | None = None
    next_attempt_at: datetime | None = None


class Delivery(Model):
    """One event sent (or being sent) to one endpoint, with its attempts."""

    id: str
    event_id: str
    event_type: str
    status: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None = None
    delivered_at: datetime | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    history: list[DeliveryAttempt] = Field(default_factory=list)


class DeliveryRef(Model):
    id: str


class SigningSecret(Model):
    """An owner's webhook signing secret, as a record: never holds the secret."""

    id: str
    owner: str
    description: str | None = None
    project_id: str | None = None
    created_at: datetime
    rotated_at: datetime | None = None
    #: Until when the previous secret still signs after a rotation (None: no overlap).
    previous_expires_at: datetime | None = None


class SigningSecretCreated(Model):
    """A created or rotated signing secret: ``secret`` (``whsec_...``) is shown only once."""

    secret: str = Field(repr=False)
    data: Annotated[SigningSecret | Ack, Field(union_mode="left_to_right")]


class Signature(Model):
    """Standard Webhooks headers for one payload: send ``headers`` with the exact payload."""

    msg_id: str
    timestamp: int
    headers: dict[str, str]


class Project(Model):
    """A group of keys with its own key prefix."""

    id: str
    org_id: str
    name: str
    key_prefix: str
    created_at: datetime


class AuditBrokenLink(Model):
    """Where an audit chain stops holding: the entry's seq, its id (None when it is missing),
    and why (``altered``, ``removed``, ``inserted``, ``reordered``)."""

    seq: int
    id: str | None
    reason: str


class AuditCheckpoint(Model):
    """Where the chain starts after retention pruned its beginning."""

    seq: int
    hash: str


class AuditVerification(Model):
    """``GET /v1/audit/verify``: whether the organization's audit chain is whole."""

    ok: bool
    checked: int
    first_broken: AuditBrokenLink | None
    checkpoint: AuditCheckpoint | None


class SecurityIssue(Model):
    """One finding of the security report: its type and severity, and the key it is about."""

    type: str
    severity: str
    target_type: str
    target_id: str
    project_id: str | None
    name: str


class SecurityReport(Model):
    """``GET /v1/reports/security``: risky keys, counted per type, the first few listed."""

    org_id: str
    project_id: str | None
    generated_at: datetime
    thresholds: dict[str, int]
    keys_scanned: int
    counts: dict[str, int]
    issues: list[SecurityIssue]
    truncated: bool


class AuditActor(Model):
    """Who made an audited change: a management key (id, name), ``system``, or ``root``; the
    address and user agent it came from."""

    type: str
    id: str | None = None
    name: str | None = None
    ip: str | None = None
    user_agent: str | None = None


class AuditTarget(Model):
    """What an audited change was made to."""

    type: str
    id: str | None = None


class AuditEntry(Model):
    """One entry of the audit log (``GET /v1/audit``)."""

    id: str
    seq: int
    occurred_at: datetime
    org_id: str
    project_id: str | None = None
    actor: AuditActor
    request_id: str | None = None
    action: str
    target: AuditTarget
    outcome: str
    count: int = 1
    details: dict[str, Any] = {}
    prev_hash: str
    hash: str


class KeyAuditEvent(Model):
    """One audit event of a key, in seed 004's shape (``GET /v1/keys/{id}/audit``)."""

    id: str
    timestamp: datetime
    event_type: str
    user_id: str | None = None
    user_name: str | None = None
    ip_address: str | None = None
    user_agent: str | None = None
    outcome: str
    count: int = 1
    details: dict[str, Any] = {}


class KeyAudit(Model):
    """A page of one key's audit events, newest first."""

    key_id: str
    events: list[KeyAuditEvent]
    next_cursor: str | None = None
    has_more: bool = False


class Health(Model):
    """``/healthz`` or ``/readyz``."""

    status: str


# -- vault ------------------------------------------------------------------------------------


class CredentialUsage(Model):
    """Leases of a credential today and this month (UTC), and live leases now.

    A ``None`` limit or remainder means unlimited.
    """

    daily_used: int
    daily_limit: int | None = None
    daily_remaining: int | None = None
    monthly_used: int
    monthly_limit: int | None = None
    monthly_remaining: int | None = None
    total: int
    live_leases: int
    max_concurrent: int | None = None


class Credential(Model):
    """An upstream provider credential's record. Never holds the secret, only a hint of it."""

    id: str
    provider: str
    alias: str
    secret_hint: str
    environment: str | None = None
    tags: list[str] = []
    metadata: dict[str, Any] = {}
    weight: int
    daily_limit: int | None = None
    monthly_limit: int | None = None
    max_concurrent: int | None = None
    #: ``None``: org-wide (project-bound management keys see it only when shared).
    project_id: str | None = None
    shared_with_projects: bool = False
    status: str
    status_reason: str | None = None
    cooldown_until: datetime | None = None
    has_capacity: bool
    usage: CredentialUsage
    master_key_id: str
    created_at: datetime
    updated_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


class CredentialStats(Model):
    """One credential's use and what remains of its allowance."""

    id: str
    alias: str
    provider: str
    status: str
    has_capacity: bool
    usage: CredentialUsage
    last_used_at: datetime | None = None


class ProviderStats(Model):
    """A provider's credentials in total and each; a ``None`` remainder means unlimited."""

    provider: str
    credentials: int
    with_capacity: int
    live_leases: int
    daily_used: int
    daily_remaining: int | None = None
    monthly_used: int
    monthly_remaining: int | None = None
    items: list[CredentialStats] = []


class Lease(Model):
    """A leased credential: ``secret`` is the provider key, valid until ``expires_at``.

    ``repr`` never shows the secret, so logging the lease does not leak it.
    """

    lease_id: str
    credential_id: str
    provider: str
    alias: str
    secret: str = Field(repr=False)
    environment: str | None = None
    expires_at: datetime


class LeaseReleased(Model):
    """A given-back lease and the credential's status after the reported outcome.

    ``already_released`` is true when a retried release found the lease gone: the first
    attempt had reached the server, so there is nothing left to do (and nothing known of the
    credential).
    """

    lease_id: str
    credential_id: str | None = None
    outcome: str
    credential_status: str | None = None
    already_released: bool = False
