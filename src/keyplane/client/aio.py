"""The asyncio client: :class:`AsyncClient`."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from types import TracebackType
from typing import Any, TypeVar, Unpack

import httpx

from keyplane.client import _calls, _core, _export, _stream, errors, models
from keyplane.client._calls import (
    AuditFilters,
    KeyChanges,
    KeyFields,
    KeyFilters,
    PlanChanges,
    Policy,
)
from keyplane.client.vault import AsyncVault

T = TypeVar("T")


class AsyncClient:
    """An asyncio Keyplane client; the same API as :class:`~keyplane.client.Client`, awaited.

    Args:
        url: The server, e.g. ``https://keys.example.com``; defaults to ``KEYPLANE_URL``, then
            ``http://127.0.0.1:8400``.
        management_key: Sent as ``Authorization: Bearer ...``; defaults to
            ``KEYPLANE_MANAGEMENT_KEY``.
        timeout: Seconds for each attempt (connect, read, write and pool, each).
        max_retries: Attempts after the first on connection errors, timeouts, 429 and 5xx.
        retry: The full retry schedule (``max_retries`` overrides its count).
        headers: Extra headers sent with every request.
        transport: An httpx transport, e.g. for tests.
        sleep: Called with the seconds to wait between attempts (inject to test without waiting).

    Example::

        async with AsyncClient() as keyplane:
            created = await keyplane.keys.create("acme prod", owner="cust_42")
            print(created.key)  # shown only this once
    """

    def __init__(
        self,
        url: str | None = None,
        management_key: str | None = None,
        *,
        timeout: float = 10.0,
        max_retries: int | None = None,
        retry: _core.RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._config = _core.Config.resolve(
            url, management_key, timeout, max_retries, retry, headers
        )
        self._http = httpx.AsyncClient(transport=transport, **self._config.client_options())
        self._sleep = sleep
        self.keys = AsyncKeys(self)
        self.plans = AsyncPlans(self)
        self.signing_secrets = AsyncSigningSecrets(self)
        self.webhooks = AsyncWebhooks(self)
        self.management_keys = AsyncManagementKeys(self)
        self.projects = AsyncProjects(self)
        self.vault = AsyncVault(self)
        self.audit = AsyncAudit(self)
        self.reports = AsyncReports(self)
        self.usage = AsyncUsageReports(self)

    @property
    def url(self) -> str:
        """The server's base URL."""
        return self._config.url

    @property
    def management_key(self) -> str | None:
        """The management key the client sends, if any."""
        return self._config.management_key

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def send(self, call: _core.Call[T]) -> T:
        """Send one operation, retrying as the retry policy allows; its parsed result."""
        idempotency_key = _core.idempotency_key_for(call)
        attempt = 0
        while True:
            request = self._http.build_request(**_core.request_options(call, idempotency_key))
            try:
                response = await self._http.send(request)
                return _core.outcome(call, response)
            except httpx.RequestError as exc:
                failure: errors.KeyplaneError = _core.transport_error(exc, self.url)
                cause: BaseException = exc
            except errors.APIError as exc:
                if call.gone is not None and _core.settled_by_earlier_attempt(call, attempt, exc):
                    return call.gone()
                failure = cause = exc
            delay = _core.next_delay(self._config, attempt, failure, call, cause)
            if delay is None:
                if failure is cause:
                    raise failure
                raise failure from cause
            attempt += 1
            await self._sleep(delay)

    async def health(self) -> models.Health:
        """Liveness (``/healthz``): the server process is up."""
        return await self.send(_calls.health())

    async def ready(self) -> models.Health:
        """Readiness (``/readyz``): the server's database answers (ServerError 503 if not)."""
        return await self.send(_calls.ready())

    async def verify(
        self,
        key: str,
        *,
        model: str | None = None,
        scopes: Sequence[str] | None = None,
        ip: str | None = None,
        origin: str | None = None,
        referrer: str | None = None,
        user_agent: str | None = None,
        cost: Decimal | int | float | str | None = None,
        tokens: Mapping[str, int] | None = None,
        acquire_concurrency: bool | None = None,
        request_id: str | None = None,
        scheme: str | None = None,
        country: str | None = None,
        signature: Mapping[str, str] | None = None,
        features: Sequence[str] | None = None,
        operation: str | None = None,
        provider: str | None = None,
        wait_ms: int | None = None,
    ) -> models.Verdict:
        """Ask whether an API key may serve this request now (``POST /v1/verify``).

        Args:
            key: The presented API key (plaintext; sent only in the body, never logged).
            model: The model requested, checked against the key's model rules.
            scopes: Scopes the request needs.
            ip: The caller's IP address, checked against the key's network rules.
            origin: The request's ``Origin`` header.
            referrer: The request's ``Referer`` header.
            user_agent: The request's ``User-Agent``.
            cost: Credits to reserve until the usage report settles them.
            tokens: Estimated tokens to reserve: ``{"input": n, "output": m}``.
            acquire_concurrency: Hold a concurrency slot until the usage report.
            request_id: Ties the reservation to its usage report; generated when absent.
            scheme: ``"http"`` or ``"https"``, as the client used (``network.require_https``).
            country: The client's ISO 3166-1 alpha-2 country, if the gateway knows it.
            signature: The request's signing parts, as sent (docs/signing.md):
                ``signature``, ``method``, ``path``, ``query``, ``timestamp``, ``nonce``,
                ``body_sha256``.
            features: Features the request uses, checked against the key's feature rules.
            operation: ``read``, ``write`` or a data-access operation (``export_data``).
            provider: The upstream provider the request goes to, checked against routing.
            wait_ms: With ``acquire_concurrency``, how long to wait in line for a slot.

        Returns:
            The verdict (its ``directives`` say what the gateway must do itself); ``valid``
            is true only for code ``VALID``. A refusal is a verdict, not an exception.
        """
        return await self.send(
            _calls.verify(
                key,
                model=model,
                scopes=scopes,
                ip=ip,
                origin=origin,
                referrer=referrer,
                user_agent=user_agent,
                cost=cost,
                tokens=tokens,
                acquire_concurrency=acquire_concurrency,
                request_id=request_id,
                scheme=scheme,
                country=country,
                signature=signature,
                features=features,
                operation=operation,
                provider=provider,
                wait_ms=wait_ms,
            )
        )


class _Resource:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client


async def _pages(fetch: Callable[[str | None], Awaitable[models.Page[T]]]) -> AsyncIterator[T]:
    cursor: str | None = None
    while True:
        page = await fetch(cursor)
        for item in page.data:
            yield item
        if not page.has_more or page.next_cursor is None:
            return
        cursor = page.next_cursor


class AsyncKeys(_Resource):
    """``/v1/keys``: the API key lifecycle."""

    async def create(
        self,
        name: str,
        *,
        idempotency_key: str | None = None,
        imported: bool = False,
        **fields: Unpack[KeyFields],
    ) -> models.KeyCreated:
        """Create a key; the answer's ``key`` is the plaintext, shown only this once.

        A generated ``Idempotency-Key`` is sent and reused by retries, so a retried create never
        makes two keys; pass your own to make separate calls idempotent too. ``imported``
        marks a row of a bulk import (audited as ``key.imported``).
        """
        return await self._client.send(_calls.create_key(name, fields, idempotency_key, imported))

    async def list(
        self, *, cursor: str | None = None, limit: int | None = None, **filters: Unpack[KeyFilters]
    ) -> models.Page[models.Key]:
        """One page of keys in creation order."""
        return await self._client.send(_calls.list_keys(filters, cursor, limit))

    def iterate(
        self, *, page_size: int = 100, **filters: Unpack[KeyFilters]
    ) -> AsyncIterator[models.Key]:
        """Every matching key, fetching pages as the iteration goes."""
        return _pages(lambda cursor: self.list(cursor=cursor, limit=page_size, **filters))

    async def get(self, id_or_hash: str) -> models.Key:
        """One key by id or hash."""
        return await self._client.send(_calls.get_key(id_or_hash))

    async def update(self, id_or_hash: str, **changes: Unpack[KeyChanges]) -> models.Key:
        """Change fields of a key; absent fields stay as they are."""
        return await self._client.send(_calls.update_key(id_or_hash, changes))

    async def rotate(
        self,
        id_or_hash: str,
        *,
        grace_period_seconds: int | None = None,
        idempotency_key: str | None = None,
    ) -> models.KeyCreated:
        """Issue a new secret (same id); the old one verifies for the grace period."""
        return await self._client.send(
            _calls.rotate_key(id_or_hash, grace_period_seconds, idempotency_key)
        )

    async def disable(
        self,
        id_or_hash: str,
        *,
        reason: str | None = None,
        auto_enable_after: int | str | None = None,
    ) -> models.Key:
        """Disable a key, optionally for ``auto_enable_after`` only (seconds, or "30m", "2d")."""
        return await self._client.send(_calls.disable_key(id_or_hash, reason, auto_enable_after))

    async def reset_limits(
        self,
        id_or_hash: str,
        *,
        windows: Sequence[str] | None = None,
        concurrency: bool = True,
    ) -> models.LimitsReset:
        """Make the key's rate windows (only ``windows`` when named) full again and, with
        ``concurrency``, free its concurrency slots (scope ``keys:write``)."""
        return await self._client.send(_calls.reset_key_limits(id_or_hash, windows, concurrency))

    async def adjust_credits(
        self,
        id_or_hash: str,
        amount: Decimal | int | float | str,
        *,
        reason: str,
        idempotency_key: str | None = None,
    ) -> models.CreditAdjustment:
        """Grant (positive) or charge (negative) credits to the key's budget, as a ledger
        entry (scope ``keys:credits``); a retry with the same ``idempotency_key`` counts once."""
        return await self._client.send(
            _calls.adjust_key_credits(id_or_hash, amount, reason, idempotency_key)
        )

    async def enable(self, id_or_hash: str) -> models.Key:
        """Enable a disabled key."""
        return await self._client.send(_calls.enable_key(id_or_hash))

    async def approve(self, id_or_hash: str) -> models.Key:
        """Approve a key pending approval (``keys:approve``; not the key that created it)."""
        return await self._client.send(_calls.approve_key(id_or_hash))

    async def reject(self, id_or_hash: str, *, reason: str | None = None) -> models.Key:
        """Reject a key pending approval: it is revoked for good."""
        return await self._client.send(_calls.reject_key(id_or_hash, reason))

    async def revoke(self, id_or_hash: str, *, reason: str | None = None) -> models.Key:
        """Revoke a key for good."""
        return await self._client.send(_calls.revoke_key(id_or_hash, reason))

    async def audit(
        self,
        key_id: str,
        *,
        event_types: str | Sequence[str] | None = None,
        start: datetime | date | str | None = None,
        end: datetime | date | str | None = None,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> models.KeyAudit:
        """One page of the key's audit events, newest first, in seed 004's shape (needs
        ``audit:read``); ``end`` as a date includes that day."""
        return await self._client.send(
            _calls.key_audit(key_id, event_types, start, end, cursor, limit)
        )


class AsyncUsageReports(_Resource):
    """``/v1/usage`` and ``/v1/events``."""

    async def report(
        self,
        *,
        key_id: str | None = None,
        key: str | None = None,
        request_id: str | None = None,
        cost: Decimal | int | float | str | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        model: str | None = None,
        latency_ms: int | None = None,
        status: int | None = None,
        idempotency_key: str | None = None,
        feature: str | None = None,
    ) -> models.UsageRecorded:
        """Record what a request spent (exactly one of ``key_id`` and ``key``).

        The idempotency key defaults to ``request_id``, else a generated one reused by retries.
        """
        return await self._client.send(
            _calls.report_usage(
                key_id=key_id,
                key=key,
                request_id=request_id,
                cost=cost,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                model=model,
                latency_ms=latency_ms,
                status=status,
                idempotency_key=idempotency_key,
                feature=feature,
            )
        )

    async def key_analytics(
        self, key_id: str, *, period: str = "7d", granularity: str = "hour"
    ) -> dict[str, Any]:
        """One key's analytics (``GET /v1/keys/{id}/analytics``): totals, series,
        percentiles, models and features; credits as Decimal. See docs/analytics.md."""
        return await self._client.send(_calls.key_analytics(key_id, period, granularity))

    async def analytics(
        self,
        group_by: str,
        *,
        period: str = "24h",
        granularity: str = "hour",
        order_by: str = "requests",
        limit: int = 10,
        project: str | None = None,
        key_ids: Sequence[str] = (),
        owners: Sequence[str] = (),
        model_names: Sequence[str] = (),
        codes: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Top groups (``GET /v1/analytics``): by key, owner, model, project or code."""
        filters = {"key_id": key_ids, "owner": owners, "model": model_names, "code": codes}
        return await self._client.send(
            _calls.analytics(group_by, period, granularity, order_by, limit, filters, project)
        )

    async def export(
        self,
        format: str = "csv",
        *,
        period: str = "7d",
        granularity: str = "day",
        project: str | None = None,
    ) -> bytes:
        """The usage rollups per key and bucket as csv, ndjson or parquet bytes."""
        return await self._client.send(_calls.export_usage(format, period, granularity, project))

    async def events(
        self, *, key_id: str | None = None, cursor: str | None = None, limit: int | None = None
    ) -> models.Page[models.Event]:
        """One page of events in the order they happened."""
        return await self._client.send(_calls.list_events(key_id, cursor, limit))

    def iterate_events(
        self, *, key_id: str | None = None, page_size: int = 100
    ) -> AsyncIterator[models.Event]:
        """Every event (of one key, if given), fetching pages as the iteration goes."""
        return _pages(lambda cursor: self.events(key_id=key_id, cursor=cursor, limit=page_size))

    async def stream(
        self,
        *,
        key_id: str | None = None,
        project_id: str | None = None,
        owner: str | None = None,
        min_cost: Decimal | int | float | str | None = None,
    ) -> AsyncIterator[models.UsageStreamEvent]:
        """Usage reports live, as they become durable (Server-Sent Events), until closed.

        One key's (``key_id``), or the organization's filtered by project, owner and minimum
        cost in credits. Needs ``usage:read``. Not retried: a stream is a live view, and one
        that ends (StreamDroppedError when it was read too slowly) is subscribed to again by
        calling this once more.

        Example::

            async for event in keyplane.usage.stream(min_cost=1):
                print(event.key_id, event.cost)
        """
        path, params = _stream.request(key_id, project_id, owner, min_cost)
        client = self._client
        try:
            async with client._http.stream(
                "GET", path, params=params, timeout=_stream.timeout(client._config)
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise _core.api_error(response)
                parser = _stream.Parser()
                async for line in response.aiter_lines():
                    event = parser.line(line)
                    if event is not None:
                        yield event
        except httpx.RequestError as exc:
            raise _core.transport_error(exc, client.url) from exc


class AsyncWebhooks(_Resource):
    """``/v1/webhooks``: endpoints told about events, and their delivery log."""

    async def create(
        self,
        url: str,
        events: list[str],
        *,
        kind: str = "webhook",
        description: str | None = None,
        enabled: bool = True,
        project: str | None = None,
    ) -> models.Webhook:
        """Register an endpoint; ``.secret`` (``whsec_...``) is shown only this once."""
        return await self._client.send(
            _calls.create_webhook(url, events, kind, description, enabled, project)
        )

    async def list(self) -> models.Page[models.Webhook]:
        """Every endpoint the management key reaches."""
        return await self._client.send(_calls.list_webhooks())

    async def get(self, endpoint_id: str) -> models.Webhook:
        """One endpoint (never its secret)."""
        return await self._client.send(_calls.get_webhook(endpoint_id))

    async def update(
        self, endpoint_id: str, **changes: Unpack[_calls.WebhookChanges]
    ) -> models.Webhook:
        """Change ``url``, ``events``, ``description`` or ``enabled``."""
        return await self._client.send(_calls.update_webhook(endpoint_id, changes))

    async def delete(self, endpoint_id: str) -> models.Webhook:
        """Delete an endpoint and its delivery log."""
        return await self._client.send(_calls.delete_webhook(endpoint_id))

    async def rotate_secret(self, endpoint_id: str) -> models.Webhook:
        """A new secret (``.secret``, shown once); the old one keeps signing for the overlap."""
        return await self._client.send(_calls.rotate_webhook_secret(endpoint_id))

    async def deliveries(
        self, endpoint_id: str, *, cursor: str | None = None, limit: int | None = None
    ) -> models.Page[models.Delivery]:
        """One page of the endpoint's deliveries, newest first, with their attempts."""
        return await self._client.send(_calls.list_deliveries(endpoint_id, cursor, limit))

    async def replay(self, endpoint_id: str, delivery_id: str) -> models.DeliveryRef:
        """Send a delivery again, with its original ``webhook-id``."""
        return await self._client.send(_calls.replay_delivery(endpoint_id, delivery_id))

    async def test(self, endpoint_id: str) -> models.DeliveryRef:
        """Queue a ``ping`` to the endpoint."""
        return await self._client.send(_calls.test_webhook(endpoint_id))


class AsyncSigningSecrets(_Resource):
    """``/v1/signing-secrets``: Standard Webhooks secrets Keyplane keeps sealed for your
    customers (owners), and signs with on request."""

    async def create(
        self,
        owner: str,
        *,
        description: str | None = None,
        idempotency_key: str | None = None,
    ) -> models.SigningSecretCreated:
        """Create a secret for ``owner``; ``.secret`` (``whsec_...``) is shown only this once."""
        return await self._client.send(
            _calls.create_signing_secret(owner, description, idempotency_key)
        )

    async def list(
        self, *, owner: str | None = None, cursor: str | None = None, limit: int | None = None
    ) -> models.Page[models.SigningSecret]:
        """One page of secrets in creation order (one owner's when ``owner`` is given)."""
        return await self._client.send(_calls.list_signing_secrets(owner, cursor, limit))

    async def get(self, secret_id: str) -> models.SigningSecret:
        """One secret's record (never the secret)."""
        return await self._client.send(_calls.get_signing_secret(secret_id))

    async def rotate(
        self, secret_id: str, *, overlap_seconds: int | None = None
    ) -> models.SigningSecretCreated:
        """A new secret; the previous one keeps signing for ``overlap_seconds`` (default a
        day, 0 to retire it at once)."""
        return await self._client.send(_calls.rotate_signing_secret(secret_id, overlap_seconds))

    async def delete(self, secret_id: str) -> models.SigningSecret | models.Ack:
        """Delete a secret; nothing signs with it any more."""
        return await self._client.send(_calls.delete_signing_secret(secret_id))

    async def sign(
        self,
        secret_id: str,
        payload: str,
        *,
        msg_id: str | None = None,
        timestamp: int | None = None,
    ) -> models.Signature:
        """Standard Webhooks headers for ``payload``; send them with exactly this payload."""
        return await self._client.send(_calls.sign_payload(secret_id, payload, msg_id, timestamp))


class AsyncPlans(_Resource):
    """``/v1/plans``: named policy templates."""

    async def create(
        self,
        name: str,
        *,
        description: str | None = None,
        policy: Policy | None = None,
        idempotency_key: str | None = None,
    ) -> models.Plan:
        """Create a plan."""
        return await self._client.send(
            _calls.create_plan(name, description, policy, idempotency_key)
        )

    async def list(self) -> builtins.list[models.Plan]:
        """Every plan of the organization, by name."""
        return await self._client.send(_calls.list_plans())

    async def get(self, id_or_name: str) -> models.Plan:
        """One plan by name or id."""
        return await self._client.send(_calls.get_plan(id_or_name))

    async def update(self, id_or_name: str, **changes: Unpack[PlanChanges]) -> models.Plan:
        """Change a plan; every key on it follows."""
        return await self._client.send(_calls.update_plan(id_or_name, changes))

    async def delete(self, id_or_name: str) -> models.Plan:
        """Delete a plan no key uses (ConflictError ``PLAN_IN_USE`` otherwise)."""
        return await self._client.send(_calls.delete_plan(id_or_name))


class AsyncManagementKeys(_Resource):
    """``/v1/management-keys``."""

    async def create(
        self,
        name: str,
        scopes: Sequence[str],
        *,
        project_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> models.ManagementKeyCreated:
        """Create a management key with at most the caller's scopes; shown only once."""
        return await self._client.send(
            _calls.create_management_key(name, scopes, project_id, idempotency_key)
        )

    async def list(
        self, *, cursor: str | None = None, limit: int | None = None
    ) -> models.Page[models.ManagementKey]:
        """One page of management keys in creation order."""
        return await self._client.send(_calls.list_management_keys(cursor, limit))

    def iterate(self, *, page_size: int = 100) -> AsyncIterator[models.ManagementKey]:
        """Every management key, fetching pages as the iteration goes."""
        return _pages(lambda cursor: self.list(cursor=cursor, limit=page_size))

    async def get(self, key_id: str) -> models.ManagementKey:
        """One management key."""
        return await self._client.send(_calls.get_management_key(key_id))

    async def revoke(self, key_id: str) -> models.ManagementKey:
        """Revoke a management key; it stops working at once."""
        return await self._client.send(_calls.revoke_management_key(key_id))


class AsyncProjects(_Resource):
    """``/v1/projects``."""

    async def create(
        self, name: str, *, key_prefix: str | None = None, idempotency_key: str | None = None
    ) -> models.Project:
        """Create a project (needs an org-wide management key)."""
        return await self._client.send(_calls.create_project(name, key_prefix, idempotency_key))

    async def list(self) -> builtins.list[models.Project]:
        """The projects this management key reaches."""
        return await self._client.send(_calls.list_projects())

    async def get(self, project_id: str) -> models.Project:
        """One project."""
        return await self._client.send(_calls.get_project(project_id))


class AsyncReports(_Resource):
    """``/v1/reports``: the security report (needs ``reports:read``)."""

    async def security(
        self,
        *,
        dormant_days: int | None = None,
        stale_days: int | None = None,
        expiring_days: int | None = None,
        management_unused_days: int | None = None,
        types: builtins.list[str] | None = None,
        limit: int | None = None,
    ) -> models.SecurityReport:
        """Dormant, unlimited, stale, wildcard, open-network and expiring keys, and idle or
        all-powerful management keys; thresholds in days (server defaults when omitted)."""
        thresholds = {
            name: value
            for name, value in (
                ("dormant_days", dormant_days),
                ("stale_days", stale_days),
                ("expiring_days", expiring_days),
                ("management_unused_days", management_unused_days),
            )
            if value is not None
        }
        return await self._client.send(_calls.security_report(thresholds, types, limit))


class AsyncAudit(_Resource):
    """``/v1/audit``: the organization's audit log."""

    async def verify(self) -> models.AuditVerification:
        """Check the audit chain from its latest checkpoint (needs ``audit:read``): ``ok``, how
        many entries were checked, and the first broken link if any."""
        return await self._client.send(_calls.verify_audit())

    async def list(
        self,
        *,
        cursor: str | None = None,
        limit: int | None = None,
        **filters: Unpack[AuditFilters],
    ) -> models.Page[models.AuditEntry]:
        """One page of matching entries, newest first (needs ``audit:read``)."""
        return await self._client.send(_calls.list_audit(filters, cursor, limit))

    async def iterate(
        self, *, page_size: int = 100, **filters: Unpack[AuditFilters]
    ) -> AsyncIterator[models.AuditEntry]:
        """Every matching entry, newest first, fetching pages as the iteration goes."""
        cursor: str | None = None
        while True:
            page = await self.list(cursor=cursor, limit=page_size, **filters)
            for entry in page.data:
                yield entry
            if not page.has_more or page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def get(self, entry_id: str) -> models.AuditEntry:
        """One entry by its id."""
        return await self._client.send(_calls.get_audit_entry(entry_id))

    async def export(
        self,
        format: str,
        *,
        to: _export.Destination,
        period: str | None = None,
        include_pii: bool = False,
        on_progress: Callable[[int], None] | None = None,
        **filters: Unpack[AuditFilters],
    ) -> int:
        """Stream an export (``csv``, ``json`` for NDJSON, ``parquet``) into ``to``; the bytes
        written.

        ``to`` is a path (written as ``<path>.part`` and renamed into place once complete) or
        a binary file open for writing. ``period`` is a preset (``last_quarter``,
        ``last_7_days``, ...) instead of ``start``/``end``; ``include_pii=False`` masks
        addresses and drops user agents. ``on_progress`` is called with the bytes written so
        far after each chunk. The download is not retried: call again if it fails.
        """
        call = _calls.export_audit(format, period, include_pii, filters)
        request = self._client._http.build_request(**_core.request_options(call, None))
        try:
            response = await self._client._http.send(request, stream=True)
        except httpx.RequestError as exc:
            raise _core.transport_error(exc, self._client.url) from exc
        written = 0
        try:
            if response.status_code >= 400:
                await response.aread()
                raise _core.api_error(response)
            with _export.sink(to) as file:
                async for chunk in response.aiter_bytes():
                    file.write(chunk)
                    written += len(chunk)
                    if on_progress is not None:
                        on_progress(written)
        except httpx.RequestError as exc:
            raise _core.transport_error(exc, self._client.url) from exc
        finally:
            await response.aclose()
        return written


__all__ = [
    "AsyncAudit",
    "AsyncClient",
    "AsyncKeys",
    "AsyncManagementKeys",
    "AsyncPlans",
    "AsyncProjects",
    "AsyncSigningSecrets",
    "AsyncUsageReports",
    "AsyncWebhooks",
]
