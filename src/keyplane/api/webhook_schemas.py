"""Request and response bodies of ``/v1/webhooks``. A signing secret goes out once only."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, StringConstraints

from keyplane.api.fields import Input, documented
from keyplane.api.schemas import ProjectId
from keyplane.domain import webhook_events
from keyplane.domain.webhooks import Attempt, Delivery, Endpoint
from keyplane.services.webhooks import MAX_DESCRIPTION, MAX_URL_LENGTH


def _filters() -> list[str]:
    """Every filter the catalogue accepts: ``*``, each prefix ending in ``.*``, each name."""
    prefixes: set[str] = set()
    for name in webhook_events.EVENTS:
        parts = name.split(".")
        for end in range(1, len(parts)):
            prefixes.add(".".join(parts[:end]) + ".*")
    return ["*", *sorted(prefixes), *webhook_events.EVENTS]


FILTERS = _filters()
_KNOWN = frozenset(FILTERS)


def _known_filter(value: str) -> str:
    if value not in _KNOWN:
        raise ValueError("unknown event type (see docs/webhooks.md)")
    return value


EventFilter = Annotated[
    str,
    StringConstraints(max_length=64),
    AfterValidator(_known_filter),
    documented(enum=FILTERS),
]
EventFilters = Annotated[
    list[EventFilter],
    Field(
        min_length=1,
        max_length=webhook_events.MAX_FILTERS,
        description="event types to receive; 'key.*' takes every key event, '*' all",
    ),
]
Url = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_URL_LENGTH),
    Field(description="https URL (kind webhook) or an email address (kind email)"),
]
Description = Annotated[str, StringConstraints(max_length=MAX_DESCRIPTION)]
EndpointId = Annotated[str, StringConstraints(pattern=r"^whe_[0-9a-z]{26}$")]
DeliveryId = Annotated[str, StringConstraints(pattern=r"^whd_[0-9a-z]{26}$")]


class WebhookCreate(Input):
    url: Url
    events: EventFilters
    kind: Literal["webhook", "email"] = "webhook"
    description: Description | None = None
    enabled: bool = True
    project: ProjectId | None = Field(default=None, description="only this project's events")


class WebhookUpdate(Input):
    url: Url | None = None
    events: EventFilters | None = None
    description: Description | None = None
    enabled: bool | None = None


class WebhookOut(BaseModel):
    id: str
    kind: str
    url: str
    events: list[str]
    description: str | None
    enabled: bool
    project: str | None
    disabled_reason: str | None
    failing_since: datetime | None
    previous_secret_valid_until: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, endpoint: Endpoint) -> WebhookOut:
        return cls(
            id=endpoint.id,
            kind=endpoint.kind,
            url=endpoint.url,
            events=list(endpoint.events),
            description=endpoint.description,
            enabled=endpoint.enabled,
            project=endpoint.project_id,
            disabled_reason=endpoint.disabled_reason,
            failing_since=endpoint.failing_since,
            previous_secret_valid_until=endpoint.previous_until,
            created_at=endpoint.created_at,
            updated_at=endpoint.updated_at,
        )


class WebhookWithSecret(WebhookOut):
    secret: str = Field(description="the signing secret (whsec_...): shown this once only")


class WebhookEnvelope(BaseModel):
    data: WebhookOut


class WebhookSecretEnvelope(BaseModel):
    data: WebhookWithSecret


class WebhookList(BaseModel):
    data: list[WebhookOut]


class AttemptOut(BaseModel):
    number: int
    at: datetime
    status_code: int | None
    latency_ms: int
    error: str | None
    next_attempt_at: datetime | None

    @classmethod
    def of(cls, attempt: Attempt) -> AttemptOut:
        return cls(
            number=attempt.number,
            at=attempt.at,
            status_code=attempt.status_code,
            latency_ms=attempt.latency_ms,
            error=attempt.error,
            next_attempt_at=attempt.next_attempt_at,
        )


class DeliveryOut(BaseModel):
    id: str
    event_id: str = Field(description="the webhook-id header: the same on every attempt")
    event_type: str
    status: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    history: list[AttemptOut]

    @classmethod
    def of(cls, delivery: Delivery) -> DeliveryOut:
        return cls(
            id=delivery.id,
            event_id=delivery.event_id,
            event_type=delivery.event_type,
            status=delivery.status,
            attempts=delivery.attempts,
            created_at=delivery.created_at,
            next_attempt_at=delivery.next_attempt_at,
            delivered_at=delivery.delivered_at,
            last_status_code=delivery.last_status_code,
            last_error=delivery.last_error,
            history=[AttemptOut.of(attempt) for attempt in delivery.history],
        )


class DeliveryList(BaseModel):
    data: list[DeliveryOut]
    next_cursor: str | None = None


class DeliveryRef(BaseModel):
    id: str


class DeliveryRefEnvelope(BaseModel):
    data: DeliveryRef
