"""Webhook endpoints and deliveries as values (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

#: Endpoint kinds: an HTTPS receiver, or an email address (seed 004's ``email:`` channels).
WEBHOOK = "webhook"
EMAIL = "email"
KINDS = (WEBHOOK, EMAIL)

#: Delivery states.
PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where an organization's (or one project's) events go. Its secrets stay sealed here."""

    id: str
    org_id: str
    project_id: str | None
    kind: str
    url: str
    description: str | None
    events: tuple[str, ...]
    enabled: bool
    sealed_secret: str
    created_at: datetime
    updated_at: datetime
    previous_sealed_secret: str | None = None
    previous_until: datetime | None = None
    failing_since: datetime | None = None
    disabled_reason: str | None = None

    def signing_secrets(self, now: datetime) -> tuple[str, ...]:
        """The sealed secrets that sign now: the current one, and the previous one during a
        rotation's overlap."""
        if (
            self.previous_sealed_secret is not None
            and self.previous_until is not None
            and now < self.previous_until
        ):
            return (self.sealed_secret, self.previous_sealed_secret)
        return (self.sealed_secret,)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try at delivering: the receiver's status (None when it never answered)."""

    number: int
    at: datetime
    status_code: int | None
    latency_ms: int
    error: str | None
    next_attempt_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event for one endpoint, and where its delivery stands."""

    id: str
    endpoint_id: str
    org_id: str
    event_id: str
    event_type: str
    payload: str
    status: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None = None
    delivered_at: datetime | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    history: tuple[Attempt, ...] = ()


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery a worker holds until its lease runs out, with its endpoint."""

    delivery: Delivery
    endpoint: Endpoint
