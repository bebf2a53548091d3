"""Webhook endpoints (``/v1/webhooks``) and the workers that deliver the outbox.

:class:`WebhookService` manages endpoints, their signing secrets and the delivery log;
:class:`WebhookDispatcher` is the supervised loop that claims due deliveries, signs them
(Standard Webhooks) and sends them through the SSRF guard or the email sender, then records
the attempt and the next one. Events reach the outbox from the journal
(``store/webhooks.SqlWebhookStore.write_outbox``), in the transaction of their change.
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import logging
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from keyplane.domain import ids, webhook_events, webhook_secrets
from keyplane.domain.changes import SYSTEM, Journal, diff
from keyplane.domain.clock import Clock
from keyplane.domain.tenancy import Principal
from keyplane.domain.webhook_events import RetrySchedule
from keyplane.domain.webhooks import (
    DELIVERED,
    EMAIL,
    FAILED,
    PENDING,
    WEBHOOK,
    Attempt,
    Claimed,
    Delivery,
    Endpoint,
)
from keyplane.errors import KeyplaneError, NotFoundError, ValidationError
from keyplane.services.authz import require_scope
from keyplane.services.supervisor import uninterrupted
from keyplane.store.tenancy import TenancyStore
from keyplane.store.webhooks import WebhookStore
from keyplane.webhooks import new_secret

log = logging.getLogger(__name__)

MAX_URL_LENGTH = 2048
MAX_DESCRIPTION = 500
MAX_EMAIL_LENGTH = 254
# Deliberately plain: one @, no spaces or angle brackets (the SMTP sender takes it as is).
_EMAIL = re.compile(r"[^@\s<>,;\"']{1,64}@[A-Za-z0-9.-]{1,189}\.[A-Za-z]{2,63}")
#: Fields ``update`` may change.
UPDATABLE = frozenset({"url", "events", "description", "enabled"})


class SendResult(Protocol):
    """What the outbound guard answers for one POST."""

    @property
    def status(self) -> int | None: ...
    @property
    def latency_ms(self) -> int: ...
    @property
    def error(self) -> str | None: ...


class Poster(Protocol):
    """The SSRF-guarded outbound HTTP client (``services/outbound.OutboundGuard``)."""

    def check_url(self, url: str) -> str: ...

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> SendResult: ...


class Mailer(Protocol):
    """The email sender (``services/email.EmailSender``)."""

    async def send(self, to: str, subject: str, text: str, html: str) -> None: ...


#: Standard Webhooks headers for (secrets, message id, unix timestamp, payload).
Signer = Callable[[Sequence[str], str, int, bytes], dict[str, str]]


@dataclass(frozen=True, slots=True)
class NewEndpoint:
    url: str
    events: tuple[str, ...]
    kind: str = WEBHOOK
    description: str | None = None
    enabled: bool = True
    project_id: str | None = None


@dataclass(frozen=True, slots=True)
class IssuedEndpoint:
    """An endpoint with its signing secret in plaintext: answered once (create, rotate)."""

    endpoint: Endpoint
    secret: str


class WebhookService:
    """Endpoint management and the delivery log; every method checks its caller's scope."""

    def __init__(
        self,
        store: WebhookStore,
        tenancy: TenancyStore,
        poster: Poster | None,
        clock: Clock,
        server_secret: bytes,
        secret_overlap: timedelta,
    ) -> None:
        self._store = store
        self._tenancy = tenancy
        self._poster = poster
        self._clock = clock
        self._key = webhook_secrets.sealing_key(server_secret)
        self._overlap = secret_overlap

    async def create(self, principal: Principal, new: NewEndpoint) -> IssuedEndpoint:
        require_scope(principal, "webhooks:write")
        url = self._checked_url(new.kind, new.url)
        events = webhook_events.check_filters(new.events)
        _check_description(new.description)
        project_id = await self._project(principal, new.project_id)
        now = self._clock.now()
        endpoint_id = ids.new_id("whe")
        secret = new_secret()
        endpoint = Endpoint(
            id=endpoint_id,
            org_id=principal.org_id,
            project_id=project_id,
            kind=new.kind,
            url=url,
            description=new.description,
            events=events,
            enabled=new.enabled,
            sealed_secret=webhook_secrets.seal_secret(self._key, endpoint_id, secret),
            created_at=now,
            updated_at=now,
        )
        journal = Journal(principal.actor, now)
        journal.record(
            "webhook.endpoint.created",
            org_id=endpoint.org_id,
            target_type="webhook_endpoint",
            target_id=endpoint.id,
            project_id=project_id,
            details=_described(endpoint),
        )
        await self._store.create_endpoint(endpoint, journal)
        return IssuedEndpoint(endpoint, secret)

    async def list(self, principal: Principal) -> list[Endpoint]:
        require_scope(principal, "webhooks:read")
        return [
            endpoint
            for endpoint in await self._store.list_endpoints(principal.org_id)
            if _reaches(principal, endpoint)
        ]

    async def get(self, principal: Principal, endpoint_id: str) -> Endpoint:
        require_scope(principal, "webhooks:read")
        return await self._find(principal, endpoint_id)

    async def update(
        self, principal: Principal, endpoint_id: str, changes: Mapping[str, Any]
    ) -> Endpoint:
        require_scope(principal, "webhooks:write")
        unknown = set(changes) - UPDATABLE
        if unknown:
            raise ValidationError(f"cannot update {sorted(unknown)}")
        current = await self._find(principal, endpoint_id)
        fields: dict[str, Any] = {}
        if changes.get("url") is not None:
            fields["url"] = self._checked_url(current.kind, changes["url"])
        if changes.get("events") is not None:
            fields["events"] = webhook_events.check_filters(changes["events"])
        if "description" in changes:
            _check_description(changes["description"])
            fields["description"] = changes["description"]
        if changes.get("enabled") is not None:
            fields["enabled"] = bool(changes["enabled"])
        now = self._clock.now()
        journal = Journal(principal.actor, now)

        def mutate(endpoint: Endpoint) -> Endpoint:
            updated = dataclasses.replace(endpoint, **fields)
            if fields.get("enabled") and not endpoint.enabled:
                # Enabled again by hand: its failing period starts over.
                updated = dataclasses.replace(updated, failing_since=None, disabled_reason=None)
            changed = diff(_described(endpoint), _described(updated))
            if not changed:
                journal.discard()
                return endpoint
            journal.record(
                "webhook.endpoint.updated",
                org_id=endpoint.org_id,
                target_type="webhook_endpoint",
                target_id=endpoint.id,
                project_id=endpoint.project_id,
                details={"changes": changed},
            )
            return dataclasses.replace(updated, updated_at=now)

        return await self._store.update_endpoint(principal.org_id, current.id, mutate, journal)

    async def delete(self, principal: Principal, endpoint_id: str) -> Endpoint:
        require_scope(principal, "webhooks:write")
        current = await self._find(principal, endpoint_id)
        journal = Journal(principal.actor, self._clock.now())
        journal.record(
            "webhook.endpoint.deleted",
            org_id=current.org_id,
            target_type="webhook_endpoint",
            target_id=current.id,
            project_id=current.project_id,
            details=_described(current),
        )
        return await self._store.delete_endpoint(principal.org_id, current.id, journal)

    async def rotate_secret(self, principal: Principal, endpoint_id: str) -> IssuedEndpoint:
        """A new signing secret; the current one keeps signing alongside it for the overlap
        period (both signatures in ``webhook-signature``), then stops."""
        require_scope(principal, "webhooks:write")
        current = await self._find(principal, endpoint_id)
        now = self._clock.now()
        secret = new_secret()
        until = now + self._overlap
        journal = Journal(principal.actor, now)
        journal.record(
            "webhook.endpoint.secret_rotated",
            org_id=current.org_id,
            target_type="webhook_endpoint",
            target_id=current.id,
            project_id=current.project_id,
            details={"previous_valid_until": until},
        )

        def mutate(endpoint: Endpoint) -> Endpoint:
            return dataclasses.replace(
                endpoint,
                sealed_secret=webhook_secrets.seal_secret(self._key, endpoint.id, secret),
                previous_sealed_secret=endpoint.sealed_secret if self._overlap else None,
                previous_until=until if self._overlap else None,
                updated_at=now,
            )

        rotated = await self._store.update_endpoint(principal.org_id, current.id, mutate, journal)
        return IssuedEndpoint(rotated, secret)

    async def deliveries(
        self, principal: Principal, endpoint_id: str, before: str | None, limit: int
    ) -> builtins.list[Delivery]:
        require_scope(principal, "webhooks:read")
        endpoint = await self._find(principal, endpoint_id)
        if before is not None and not ids.looks_like_id(before, "whd"):
            raise ValidationError("invalid cursor", code="INVALID_CURSOR")
        return await self._store.list_deliveries(principal.org_id, endpoint.id, before, limit)

    async def replay(self, principal: Principal, endpoint_id: str, delivery_id: str) -> None:
        """Send a delivery again, with its original ``webhook-id``."""
        require_scope(principal, "webhooks:write")
        endpoint = await self._find(principal, endpoint_id)
        if not ids.looks_like_id(delivery_id, "whd"):
            raise NotFoundError(f"no delivery {delivery_id[:64]!r}", code="DELIVERY_NOT_FOUND")
        await self._store.replay(principal.org_id, endpoint.id, delivery_id, self._clock.now())

    async def test(self, principal: Principal, endpoint_id: str) -> str:
        """Queue a ``ping`` to this endpoint (enabled or not is its own business: a disabled
        endpoint's deliveries wait until it is enabled); the delivery id."""
        require_scope(principal, "webhooks:write")
        endpoint = await self._find(principal, endpoint_id)
        now = self._clock.now()
        body = webhook_events.encode(
            {
                "type": "ping",
                "timestamp": now.isoformat(),
                "data": {"endpoint_id": endpoint.id, "org_id": endpoint.org_id},
            }
        )
        return await self._store.enqueue(endpoint, "ping", body, now)

    async def _find(self, principal: Principal, endpoint_id: str) -> Endpoint:
        endpoint = None
        if ids.looks_like_id(endpoint_id, "whe"):
            endpoint = await self._store.get_endpoint(principal.org_id, endpoint_id)
        if endpoint is None or not _reaches(principal, endpoint):
            raise NotFoundError(
                f"no webhook endpoint {endpoint_id[:64]!r}", code="WEBHOOK_NOT_FOUND"
            )
        return endpoint

    async def _project(self, principal: Principal, project_id: str | None) -> str | None:
        if project_id is None:
            if principal.project_id is not None:
                return principal.project_id  # a project-bound caller's endpoints are its own
            return None
        project = await self._tenancy.get_project(principal.org_id, project_id)
        if project is None or not principal.reaches_project(project.id):
            raise NotFoundError(f"no project {project_id[:64]!r}", code="PROJECT_NOT_FOUND")
        return project.id

    def _checked_url(self, kind: str, url: str) -> str:
        if kind == EMAIL:
            address = url.removeprefix("mailto:").removeprefix("email:")
            if len(address) > MAX_EMAIL_LENGTH or not _EMAIL.fullmatch(address):
                raise ValidationError("not an email address", code="INVALID_WEBHOOK_URL")
            return address
        if kind != WEBHOOK:
            raise ValidationError("kind must be 'webhook' or 'email'", code="INVALID_WEBHOOK_URL")
        if len(url) > MAX_URL_LENGTH:
            raise ValidationError("the URL is too long", code="INVALID_WEBHOOK_URL")
        if self._poster is not None:
            try:
                return self._poster.check_url(url)  # scheme, host, refused networks
            except ValidationError as exc:
                # One code for every refused URL: what passes depends on the endpoint's kind
                # and the operator's network settings, not on the request's shape alone.
                raise ValidationError(exc.message, code="INVALID_WEBHOOK_URL") from None
        if not url.startswith("https://"):
            raise ValidationError("the URL must be https://", code="INVALID_WEBHOOK_URL")
        return url


def _reaches(principal: Principal, endpoint: Endpoint) -> bool:
    if principal.project_id is None:
        return True
    return endpoint.project_id == principal.project_id


def _check_description(description: str | None) -> None:
    if description is not None and len(description) > MAX_DESCRIPTION:
        raise ValidationError(f"description: at most {MAX_DESCRIPTION} characters")


def _described(endpoint: Endpoint) -> dict[str, Any]:
    """What the journal says of an endpoint: never its secrets."""
    return {
        "kind": endpoint.kind,
        "url": endpoint.url,
        "events": list(endpoint.events),
        "description": endpoint.description,
        "enabled": endpoint.enabled,
    }


class WebhookDispatcher:
    """Claims due deliveries and sends them; run under the supervisor, any number at once."""

    def __init__(
        self,
        store: WebhookStore,
        poster: Poster,
        sign: Signer,
        clock: Clock,
        server_secret: bytes,
        *,
        mailer: Mailer | None = None,
        timeout: float = 10.0,
        lease: timedelta = timedelta(seconds=60),
        poll: float = 1.0,
        batch: int = 20,
        disable_after: timedelta = timedelta(hours=48),
        schedule: RetrySchedule | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._poster = poster
        self._sign = sign
        self._clock = clock
        self._key = webhook_secrets.sealing_key(server_secret)
        self._mailer = mailer
        self._timeout = timeout
        self._lease = lease
        self._poll = poll
        self._batch = batch
        self._disable_after = disable_after
        self._schedule = schedule or RetrySchedule()
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not a secret

    async def run(self) -> None:
        """Deliver until cancelled; idle, look again every ``poll`` seconds."""
        while True:
            try:
                sent = await self.run_once()
            except KeyplaneError as exc:
                log.warning("webhook delivery round failed: %s", type(exc).__name__)
                sent = 0
            if sent == 0:
                await asyncio.sleep(self._poll)

    async def run_once(self) -> int:
        """Claim what is due now and send it; how many deliveries were attempted."""
        # The writes run to their end at a stop; a post cut short is sent again once its
        # claim's lease runs out (deliveries are at least once).
        claimed = await uninterrupted(
            self._store.claim(self._clock.now(), self._lease, self._batch)
        )
        if claimed:
            await asyncio.gather(*(self._deliver(one) for one in claimed))
        return len(claimed)

    async def _deliver(self, claimed: Claimed) -> None:
        delivery, endpoint = claimed.delivery, claimed.endpoint
        now = self._clock.now()
        status_code: int | None = None
        error: str | None = None
        latency_ms = 0
        secrets = [
            webhook_secrets.open_secret(self._key, endpoint.id, sealed)
            for sealed in endpoint.signing_secrets(now)
        ]
        opened = [secret for secret in secrets if secret is not None]
        body = delivery.payload.encode("utf-8")
        if endpoint.kind == EMAIL:
            latency_ms, error = await self._email(endpoint, delivery)
        elif not opened:
            error = "signing secret unreadable (server secret changed?)"
        else:
            headers = self._sign(opened, delivery.event_id, int(now.timestamp()), body)
            headers["content-type"] = "application/json"
            result = await self._poster.post(endpoint.url, body, headers, self._timeout)
            status_code, latency_ms = result.status, result.latency_ms
            error = result.error
            if error is None and status_code is not None and not 200 <= status_code < 300:
                error = f"HTTP {status_code}"
        at = self._clock.now()
        number = delivery.attempts + 1
        if error is None:
            state, next_at = DELIVERED, None
        else:
            next_at = self._schedule.next_attempt(number, delivery.created_at, at, self._rng)
            state = PENDING if next_at is not None else FAILED
        attempt = Attempt(number, at, status_code, latency_ms, error and error[:200], next_at)
        journal = Journal(SYSTEM, at)
        await uninterrupted(
            self._store.record_attempt(delivery.id, attempt, state, self._disable_after, journal)
        )

    async def _email(self, endpoint: Endpoint, delivery: Delivery) -> tuple[int, str | None]:
        if self._mailer is None:
            return 0, "email is not configured (KEYPLANE_SMTP_*)"
        event = delivery.event_type
        subject = f"[Keyplane] {event}"
        text = f"{webhook_events.EVENTS[event].description}\n\n{delivery.payload}\n"
        html = (
            f"<p>{_escape(webhook_events.EVENTS[event].description)}</p>"
            f"<pre>{_escape(delivery.payload)}</pre>"
        )
        started = time.perf_counter()
        try:
            await self._mailer.send(endpoint.url, subject, text, html)
        except (KeyplaneError, OSError) as exc:
            return _elapsed_ms(started), f"email not sent: {type(exc).__name__}"
        return _elapsed_ms(started), None


def _elapsed_ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
