"""Every ``/v1`` operation as a :class:`~keyplane.client._core.Call`, built once for both clients.

The sync and async resources only forward their arguments here and send the result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any, TypedDict, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from keyplane.client import models
from keyplane.client._core import REPLAYED_HEADER, Call, credits, jsonable

M = TypeVar("M", bound=BaseModel)

Policy = Mapping[str, Any]


class KeyFields(TypedDict, total=False):
    """Optional fields of a new key (see the API guide for each)."""

    environment: str
    project_id: str
    label: str
    description: str
    owner: str
    tags: Sequence[str]
    metadata: Mapping[str, Any]
    scopes: Sequence[str]
    expires_at: datetime | str
    plan: str
    policy: Policy


class KeyChanges(TypedDict, total=False):
    """Fields of a key update: absent fields stay, ``None`` clears where the API allows it."""

    name: str
    label: str | None
    description: str | None
    owner: str | None
    tags: Sequence[str] | None
    metadata: Mapping[str, Any]
    scopes: Sequence[str] | None
    expires_at: datetime | str | None
    plan: str | None
    policy: Policy | None


class KeyFilters(TypedDict, total=False):
    """Filters of the key list; ``metadata`` matches ``metadata.<dot.path>=value`` pairs."""

    owner: str
    tag: str
    environment: str
    status: str
    project: str
    name: str
    metadata: Mapping[str, str]


class AuditFilters(TypedDict, total=False):
    """Filters of the audit log; each may be one value or several (any of them matches).

    ``key_id`` is any target id, ``actor`` a management key id (or ``system``, ``root``),
    ``action`` / ``event_types`` exact names or prefixes such as ``key.*``, ``outcome`` one of
    ``success``, ``failure``, ``denied``; ``start <= occurred_at < end`` (a date as ``end``
    includes that day).
    """

    key_id: str | Sequence[str]
    actor: str | Sequence[str]
    action: str | Sequence[str]
    event_types: str | Sequence[str]
    outcome: str | Sequence[str]
    start: datetime | date | str
    end: datetime | date | str


class PlanChanges(TypedDict, total=False):
    """Fields of a plan update; absent fields stay."""

    name: str
    description: str | None
    policy: Policy


class CredentialFields(TypedDict, total=False):
    """Optional fields of a new vault credential (limits: ``None`` is unlimited, 0 blocks)."""

    environment: str
    tags: Sequence[str]
    metadata: Mapping[str, Any]
    weight: int
    daily_limit: int | None
    monthly_limit: int | None
    max_concurrent: int | None
    #: The project it belongs to; absent or ``None``: the whole organization.
    project_id: str | None
    #: Org-wide credentials only: project-bound management keys may use it too.
    shared_with_projects: bool


class CredentialChanges(TypedDict, total=False):
    """Fields of a credential update: absent fields stay, a ``None`` limit means unlimited.

    ``status`` is ``"active"`` (also ends a cool-down) or ``"disabled"``.
    """

    provider: str
    alias: str
    secret: str
    environment: str | None
    tags: Sequence[str]
    metadata: Mapping[str, Any]
    weight: int
    daily_limit: int | None
    monthly_limit: int | None
    max_concurrent: int | None
    status: str
    #: ``None`` makes it org-wide.
    project_id: str | None
    shared_with_projects: bool


class CredentialFilters(TypedDict, total=False):
    """Filters of the credential list; ``metadata`` matches ``metadata.<dot.path>=value``."""

    provider: str
    environment: str
    tags: Sequence[str]
    status: str
    has_capacity: bool
    metadata: Mapping[str, str]


def _model(model: type[M]) -> Any:
    def parse(response: httpx.Response) -> M:
        return model.model_validate(models.parse_json(response.content))

    return parse


def _data(model: type[M]) -> Any:
    """Parse ``{"data": {...}}`` into ``model``."""

    def parse(response: httpx.Response) -> M:
        return model.model_validate(models.parse_json(response.content)["data"])

    return parse


def _page(model: type[M]) -> Any:
    def parse(response: httpx.Response) -> models.Page[M]:
        page = models.parse_json(response.content)
        return models.Page[model].model_validate(page)  # type: ignore[valid-type]

    return parse


def _items(model: type[M]) -> Any:
    """Parse an unpaginated ``{"data": [...]}`` list."""

    def parse(response: httpx.Response) -> list[M]:
        return [model.model_validate(item) for item in models.parse_json(response.content)["data"]]

    return parse


def _created(model: type[M]) -> Any:
    """Parse a create answer, noting whether it replays an earlier one."""

    def parse(response: httpx.Response) -> M:
        replayed = response.headers.get(REPLAYED_HEADER, "").lower() == "true"
        return model.model_validate({**models.parse_json(response.content), "replayed": replayed})

    return parse


def _data_either(model: type[M]) -> Any:
    """Parse ``{"data": {...}}`` into ``model``, or an ``Ack`` for a write-only caller."""

    def parse(response: httpx.Response) -> M | models.Ack:
        data = models.parse_json(response.content)["data"]
        if set(data) <= {"id", "status"}:
            return models.Ack.model_validate(data)
        return model.model_validate(data)

    return parse


def _segment(value: str) -> str:
    # Ids and hashes are plain ASCII; quoting keeps a hostile value from changing the path.
    return quote(value, safe="")


def _paging(cursor: str | None, limit: int | None) -> list[tuple[str, str]]:
    params = []
    if cursor is not None:
        params.append(("cursor", cursor))
    if limit is not None:
        params.append(("limit", str(limit)))
    return params


# -- health -----------------------------------------------------------------------------------


def health() -> Call[models.Health]:
    return Call("GET", "/healthz", _model(models.Health))


def ready() -> Call[models.Health]:
    return Call("GET", "/readyz", _model(models.Health))


# -- keys -------------------------------------------------------------------------------------


def create_key(
    name: str, fields: KeyFields, idempotency_key: str | None, imported: bool = False
) -> Call[models.KeyCreated]:
    body = {"name": name, **fields}
    params = (("source", "import"),) if imported else ()
    return Call("POST", "/v1/keys", _created(models.KeyCreated), params, body, idempotency_key)


def list_keys(
    filters: KeyFilters, cursor: str | None, limit: int | None
) -> Call[models.Page[models.Key]]:
    params: list[tuple[str, str]] = []
    for name, value in filters.items():
        if isinstance(value, Mapping):  # metadata: {"billing.tier": "pro"}
            params.extend((f"{name}.{path}", str(v)) for path, v in value.items())
        elif value is not None:
            params.append((name, str(value)))
    params.extend(_paging(cursor, limit))
    return Call("GET", "/v1/keys", _page(models.Key), params)


def get_key(ref: str) -> Call[models.Key]:
    return Call("GET", f"/v1/keys/{_segment(ref)}", _data(models.Key))


def update_key(ref: str, changes: KeyChanges) -> Call[models.Key]:
    return Call("PATCH", f"/v1/keys/{_segment(ref)}", _data(models.Key), (), dict(changes))


def rotate_key(
    ref: str, grace_period_seconds: int | None, idempotency_key: str | None
) -> Call[models.KeyCreated]:
    body = {} if grace_period_seconds is None else {"grace_period_seconds": grace_period_seconds}
    path = f"/v1/keys/{_segment(ref)}/rotate"
    return Call("POST", path, _created(models.KeyCreated), (), body, idempotency_key)


def disable_key(
    ref: str, reason: str | None, auto_enable_after: int | str | None
) -> Call[models.Key]:
    body: dict[str, Any] = {}
    if reason is not None:
        body["reason"] = reason
    if auto_enable_after is not None:
        body["auto_enable_after"] = auto_enable_after
    return Call("POST", f"/v1/keys/{_segment(ref)}/disable", _data(models.Key), (), body)


def reset_key_limits(
    ref: str, windows: Sequence[str] | None, concurrency: bool
) -> Call[models.LimitsReset]:
    body: dict[str, Any] = {"concurrency": concurrency}
    if windows is not None:
        body["windows"] = list(windows)
    path = f"/v1/keys/{_segment(ref)}/limits/reset"
    return Call("POST", path, _data(models.LimitsReset), (), body)


def adjust_key_credits(
    ref: str, amount: Decimal | int | float | str, reason: str, idempotency_key: str | None
) -> Call[models.CreditAdjustment]:
    body = {"amount": credits(amount), "reason": reason}
    path = f"/v1/keys/{_segment(ref)}/credits"

    def parse(response: httpx.Response) -> models.CreditAdjustment:
        replayed = response.headers.get(REPLAYED_HEADER, "").lower() == "true"
        data = models.parse_json(response.content)["data"]
        return models.CreditAdjustment.model_validate({**data, "replayed": replayed})

    return Call("POST", path, parse, (), body, idempotency_key)


def enable_key(ref: str) -> Call[models.Key]:
    return Call("POST", f"/v1/keys/{_segment(ref)}/enable", _data(models.Key))


def approve_key(ref: str) -> Call[models.Key]:
    return Call("POST", f"/v1/keys/{_segment(ref)}/approve", _data(models.Key))


def reject_key(ref: str, reason: str | None) -> Call[models.Key]:
    body = None if reason is None else {"reason": reason}
    return Call("POST", f"/v1/keys/{_segment(ref)}/reject", _data(models.Key), (), body)


def revoke_key(ref: str, reason: str | None) -> Call[models.Key]:
    params = [] if reason is None else [("reason", reason)]
    return Call("DELETE", f"/v1/keys/{_segment(ref)}", _data(models.Key), params)


# -- verify and usage -------------------------------------------------------------------------


def verify(
    key: str,
    *,
    model: str | None,
    scopes: Sequence[str] | None,
    ip: str | None,
    origin: str | None,
    referrer: str | None,
    user_agent: str | None,
    cost: Decimal | int | float | str | None,
    tokens: Mapping[str, int] | None,
    acquire_concurrency: bool | None,
    request_id: str | None,
    scheme: str | None = None,
    country: str | None = None,
    signature: Mapping[str, str] | None = None,
    features: Sequence[str] | None = None,
    operation: str | None = None,
    provider: str | None = None,
    wait_ms: int | None = None,
) -> Call[models.Verdict]:
    body: dict[str, Any] = {"key": key}
    optional: dict[str, Any] = {
        "model": model,
        "scopes": None if scopes is None else list(scopes),
        "ip": ip,
        "origin": origin,
        "referrer": referrer,
        "user_agent": user_agent,
        "cost": None if cost is None else credits(cost),
        "tokens": None if tokens is None else dict(tokens),
        "acquire_concurrency": acquire_concurrency,
        "request_id": request_id,
        "scheme": scheme,
        "country": country,
        "signature": None if signature is None else dict(signature),
        "features": None if features is None else list(features),
        "operation": operation,
        "provider": provider,
        "wait_ms": wait_ms,
    }
    body.update({name: value for name, value in optional.items() if value is not None})
    return Call("POST", "/v1/verify", _model(models.Verdict), (), body)


def report_usage(
    *,
    key_id: str | None,
    key: str | None,
    request_id: str | None,
    cost: Decimal | int | float | str | None,
    input_tokens: int | None,
    output_tokens: int | None,
    model: str | None,
    latency_ms: int | None,
    status: int | None,
    idempotency_key: str | None,
    feature: str | None = None,
) -> Call[models.UsageRecorded]:
    optional: dict[str, Any] = {
        "key_id": key_id,
        "key": key,
        "request_id": request_id,
        "cost": None if cost is None else credits(cost),
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "model": model,
        "latency_ms": latency_ms,
        "status": status,
        "feature": feature,
    }
    body = {name: value for name, value in optional.items() if value is not None}
    # A request_id already identifies the report; reuse it so a retry is counted once even
    # across separate calls of the caller's own retry loop.
    idem = idempotency_key or request_id
    return Call("POST", "/v1/usage", _model(models.UsageRecorded), (), body, idem)


def list_events(
    key_id: str | None, cursor: str | None, limit: int | None
) -> Call[models.Page[models.Event]]:
    params = [] if key_id is None else [("key_id", key_id)]
    params.extend(_paging(cursor, limit))
    return Call("GET", "/v1/events", _page(models.Event), params)


# -- analytics --------------------------------------------------------------------------------


def _exact(value: Any) -> Any:
    """Numbers with a fraction as Decimal (credits stay exact), recursively."""
    if isinstance(value, float):
        return models.exact_decimal(value)
    if isinstance(value, list):
        return [_exact(item) for item in value]
    if isinstance(value, dict):
        return {name: _exact(item) for name, item in value.items()}
    return value


def _document(response: httpx.Response) -> dict[str, Any]:
    document: dict[str, Any] = _exact(models.parse_json(response.content))
    return document


def key_analytics(key_id: str, period: str, granularity: str) -> Call[dict[str, Any]]:
    params = [("period", period), ("granularity", granularity)]
    return Call("GET", f"/v1/keys/{_segment(key_id)}/analytics", _document, params)


def analytics(
    group_by: str,
    period: str,
    granularity: str,
    order_by: str,
    limit: int,
    filters: Mapping[str, Sequence[str]],
    project: str | None,
) -> Call[dict[str, Any]]:
    params = [
        ("group_by", group_by),
        ("period", period),
        ("granularity", granularity),
        ("order_by", order_by),
        ("limit", str(limit)),
    ]
    if project is not None:
        params.append(("project", project))
    for name, values in filters.items():
        params.extend((name, value) for value in values)
    return Call("GET", "/v1/analytics", _document, params)


def export_usage(
    format: str,
    period: str,
    granularity: str,
    project: str | None,
) -> Call[bytes]:
    params = [("format", format), ("period", period), ("granularity", granularity)]
    if project is not None:
        params.append(("project", project))
    return Call("GET", "/v1/usage/export", lambda response: response.content, params)


# -- plans ------------------------------------------------------------------------------------


def create_plan(
    name: str, description: str | None, policy: Policy | None, idempotency_key: str | None
) -> Call[models.Plan]:
    body: dict[str, Any] = {"name": name}
    if description is not None:
        body["description"] = description
    if policy is not None:
        body["policy"] = policy
    return Call("POST", "/v1/plans", _data(models.Plan), (), body, idempotency_key)


def list_plans() -> Call[list[models.Plan]]:
    return Call("GET", "/v1/plans", _items(models.Plan))


def get_plan(ref: str) -> Call[models.Plan]:
    return Call("GET", f"/v1/plans/{_segment(ref)}", _data(models.Plan))


def update_plan(ref: str, changes: PlanChanges) -> Call[models.Plan]:
    return Call("PATCH", f"/v1/plans/{_segment(ref)}", _data(models.Plan), (), dict(changes))


def delete_plan(ref: str) -> Call[models.Plan]:
    return Call("DELETE", f"/v1/plans/{_segment(ref)}", _data(models.Plan))


# -- management keys --------------------------------------------------------------------------


def create_management_key(
    name: str, scopes: Sequence[str], project_id: str | None, idempotency_key: str | None
) -> Call[models.ManagementKeyCreated]:
    body: dict[str, Any] = {"name": name, "scopes": list(scopes)}
    if project_id is not None:
        body["project_id"] = project_id
    parse = _created(models.ManagementKeyCreated)
    return Call("POST", "/v1/management-keys", parse, (), body, idempotency_key)


def list_management_keys(
    cursor: str | None, limit: int | None
) -> Call[models.Page[models.ManagementKey]]:
    return Call("GET", "/v1/management-keys", _page(models.ManagementKey), _paging(cursor, limit))


def get_management_key(key_id: str) -> Call[models.ManagementKey]:
    return Call("GET", f"/v1/management-keys/{_segment(key_id)}", _data(models.ManagementKey))


def revoke_management_key(key_id: str) -> Call[models.ManagementKey]:
    return Call("DELETE", f"/v1/management-keys/{_segment(key_id)}", _data(models.ManagementKey))


# -- webhooks ---------------------------------------------------------------------------------


class WebhookChanges(TypedDict, total=False):
    url: str
    events: list[str]
    description: str | None
    enabled: bool


def create_webhook(
    url: str,
    events: list[str],
    kind: str,
    description: str | None,
    enabled: bool,
    project: str | None,
) -> Call[models.Webhook]:
    body: dict[str, Any] = {"url": url, "events": events, "kind": kind, "enabled": enabled}
    if description is not None:
        body["description"] = description
    if project is not None:
        body["project"] = project
    return Call("POST", "/v1/webhooks", _data(models.Webhook), (), body)


def list_webhooks() -> Call[models.Page[models.Webhook]]:
    return Call("GET", "/v1/webhooks", _page(models.Webhook))


def get_webhook(endpoint_id: str) -> Call[models.Webhook]:
    return Call("GET", f"/v1/webhooks/{_segment(endpoint_id)}", _data(models.Webhook))


def update_webhook(endpoint_id: str, changes: WebhookChanges) -> Call[models.Webhook]:
    path = f"/v1/webhooks/{_segment(endpoint_id)}"
    return Call("PATCH", path, _data(models.Webhook), (), dict(changes))


def delete_webhook(endpoint_id: str) -> Call[models.Webhook]:
    return Call("DELETE", f"/v1/webhooks/{_segment(endpoint_id)}", _data(models.Webhook))


def rotate_webhook_secret(endpoint_id: str) -> Call[models.Webhook]:
    path = f"/v1/webhooks/{_segment(endpoint_id)}/rotate-secret"
    return Call("POST", path, _data(models.Webhook), (), {})


def list_deliveries(
    endpoint_id: str, cursor: str | None, limit: int | None
) -> Call[models.Page[models.Delivery]]:
    path = f"/v1/webhooks/{_segment(endpoint_id)}/deliveries"
    return Call("GET", path, _page(models.Delivery), _paging(cursor, limit))


def replay_delivery(endpoint_id: str, delivery_id: str) -> Call[models.DeliveryRef]:
    path = f"/v1/webhooks/{_segment(endpoint_id)}/deliveries/{_segment(delivery_id)}/replay"
    return Call("POST", path, _data(models.DeliveryRef), (), {})


def test_webhook(endpoint_id: str) -> Call[models.DeliveryRef]:
    path = f"/v1/webhooks/{_segment(endpoint_id)}/test"
    return Call("POST", path, _data(models.DeliveryRef), (), {})


# -- signing secrets --------------------------------------------------------------------------


def create_signing_secret(
    owner: str, description: str | None, idempotency_key: str | None
) -> Call[models.SigningSecretCreated]:
    body: dict[str, Any] = {"owner": owner}
    if description is not None:
        body["description"] = description
    parse = _model(models.SigningSecretCreated)
    return Call("POST", "/v1/signing-secrets", parse, (), body, idempotency_key)


def list_signing_secrets(
    owner: str | None, cursor: str | None, limit: int | None
) -> Call[models.Page[models.SigningSecret]]:
    params = _paging(cursor, limit)
    if owner is not None:
        params.append(("owner", owner))
    return Call("GET", "/v1/signing-secrets", _page(models.SigningSecret), params)


def get_signing_secret(secret_id: str) -> Call[models.SigningSecret]:
    return Call("GET", f"/v1/signing-secrets/{_segment(secret_id)}", _data(models.SigningSecret))


def rotate_signing_secret(
    secret_id: str, overlap_seconds: int | None
) -> Call[models.SigningSecretCreated]:
    body: dict[str, Any] = {}
    if overlap_seconds is not None:
        body["overlap_seconds"] = overlap_seconds
    path = f"/v1/signing-secrets/{_segment(secret_id)}/rotate"
    return Call("POST", path, _model(models.SigningSecretCreated), (), body)


def delete_signing_secret(secret_id: str) -> Call[models.SigningSecret | models.Ack]:
    path = f"/v1/signing-secrets/{_segment(secret_id)}"
    return Call("DELETE", path, _data_either(models.SigningSecret))


def sign_payload(
    secret_id: str, payload: str, msg_id: str | None, timestamp: int | None
) -> Call[models.Signature]:
    body: dict[str, Any] = {"payload": payload}
    if msg_id is not None:
        body["msg_id"] = msg_id
    if timestamp is not None:
        body["timestamp"] = timestamp
    path = f"/v1/signing-secrets/{_segment(secret_id)}/sign"
    return Call("POST", path, _data(models.Signature), (), body)


# -- audit ------------------------------------------------------------------------------------


def security_report(
    thresholds: Mapping[str, int], types: Sequence[str] | None, limit: int | None
) -> Call[models.SecurityReport]:
    params: list[tuple[str, Any]] = [(name, value) for name, value in thresholds.items()]
    params += [("type", name) for name in types or ()]
    if limit is not None:
        params.append(("limit", limit))
    return Call("GET", "/v1/reports/security", _data(models.SecurityReport), tuple(params))


def verify_audit() -> Call[models.AuditVerification]:
    return Call("GET", "/v1/audit/verify", _model(models.AuditVerification))


def _many(value: Any) -> list[Any]:
    return [value] if isinstance(value, str | datetime | date) else list(value)


def _bound_text(value: datetime | date | str) -> str:
    if isinstance(value, datetime):
        return str(jsonable(value))
    if isinstance(value, date):
        return value.isoformat()
    return value


def _audit_params(filters: Mapping[str, Any]) -> list[tuple[str, str]]:
    params: list[tuple[str, str]] = []
    for name, value in filters.items():
        if value is None:
            continue
        if name in ("start", "end"):
            params.append((name, _bound_text(value)))
        else:
            params.extend((name, str(v)) for v in _many(value))
    return params


def list_audit(
    filters: AuditFilters, cursor: str | None, limit: int | None
) -> Call[models.Page[models.AuditEntry]]:
    params = _audit_params(filters)
    params.extend(_paging(cursor, limit))
    return Call("GET", "/v1/audit", _page(models.AuditEntry), params)


def get_audit_entry(entry_id: str) -> Call[models.AuditEntry]:
    return Call("GET", f"/v1/audit/entries/{_segment(entry_id)}", _data(models.AuditEntry))


def key_audit(
    key_id: str,
    event_types: str | Sequence[str] | None,
    start: datetime | date | str | None,
    end: datetime | date | str | None,
    cursor: str | None,
    limit: int | None,
) -> Call[models.KeyAudit]:
    filters = {"event_types": event_types, "start": start, "end": end}
    params = _audit_params(filters)
    params.extend(_paging(cursor, limit))
    return Call("GET", f"/v1/keys/{_segment(key_id)}/audit", _model(models.KeyAudit), params)


def export_audit(
    format: str, period: str | None, include_pii: bool, filters: AuditFilters
) -> Call[None]:
    """The export request; its answer is streamed by the clients, not parsed."""
    body: dict[str, Any] = {"format": format, "include_pii": include_pii}
    if period is not None:
        body["period"] = period
    given: Mapping[str, Any] = filters
    for name, value in given.items():
        if value is None:
            continue
        body[name] = _bound_text(value) if name in ("start", "end") else _many(value)
    if "action" in body:  # the export takes every event-type filter as event_types
        body["event_types"] = [*body.pop("action"), *body.get("event_types", [])]
    return Call("POST", "/v1/audit/export", lambda response: None, (), body)


# -- projects ---------------------------------------------------------------------------------


def create_project(
    name: str, key_prefix: str | None, idempotency_key: str | None
) -> Call[models.Project]:
    body: dict[str, Any] = {"name": name}
    if key_prefix is not None:
        body["key_prefix"] = key_prefix
    return Call("POST", "/v1/projects", _data(models.Project), (), body, idempotency_key)


def list_projects() -> Call[list[models.Project]]:
    return Call("GET", "/v1/projects", _items(models.Project))


def get_project(project_id: str) -> Call[models.Project]:
    return Call("GET", f"/v1/projects/{_segment(project_id)}", _data(models.Project))


# -- vault ------------------------------------------------------------------------------------


def _credential_body(provider: str, alias: str, secret: str, fields: CredentialFields) -> Any:
    return {"provider": provider, "alias": alias, "secret": secret, **fields}


def create_credential(
    provider: str, alias: str, secret: str, fields: CredentialFields, idempotency_key: str | None
) -> Call[models.Credential]:
    body = _credential_body(provider, alias, secret, fields)
    parse = _data(models.Credential)
    return Call("POST", "/v1/vault/credentials", parse, (), body, idempotency_key)


def create_credentials(
    credentials: Sequence[Mapping[str, Any]], idempotency_key: str | None
) -> Call[list[models.Credential]]:
    body = {"credentials": [dict(item) for item in credentials]}
    parse = _items(models.Credential)
    return Call("POST", "/v1/vault/credentials/bulk", parse, (), body, idempotency_key)


def list_credentials(
    filters: CredentialFilters, cursor: str | None, limit: int | None
) -> Call[models.Page[models.Credential]]:
    params: list[tuple[str, str]] = []
    for name, value in filters.items():
        if value is None:
            continue
        if isinstance(value, Mapping):  # metadata: {"billing.tier": "enterprise"}
            params.extend((f"metadata.{path}", str(v)) for path, v in value.items())
        elif isinstance(value, list | tuple):  # tags: all must match
            params.extend((name, str(item)) for item in value)
        elif isinstance(value, bool):
            params.append((name, "true" if value else "false"))
        else:
            params.append((name, str(value)))
    params.extend(_paging(cursor, limit))
    return Call("GET", "/v1/vault/credentials", _page(models.Credential), params)


def get_credential(credential_id: str) -> Call[models.Credential]:
    path = f"/v1/vault/credentials/{_segment(credential_id)}"
    return Call("GET", path, _data(models.Credential))


def update_credential(credential_id: str, changes: CredentialChanges) -> Call[models.Credential]:
    path = f"/v1/vault/credentials/{_segment(credential_id)}"
    return Call("PATCH", path, _data(models.Credential), (), dict(changes))


def delete_credential(credential_id: str, hard: bool) -> Call[models.Credential]:
    path = f"/v1/vault/credentials/{_segment(credential_id)}"
    params = [("hard", "true")] if hard else []
    return Call("DELETE", path, _data(models.Credential), params)


def credential_stats(credential_id: str) -> Call[models.CredentialStats]:
    path = f"/v1/vault/credentials/{_segment(credential_id)}/stats"
    return Call("GET", path, _model(models.CredentialStats))


def provider_stats(provider: str) -> Call[models.ProviderStats]:
    params = [("provider", provider)]
    return Call("GET", "/v1/vault/stats", _model(models.ProviderStats), params)


def lease(
    provider: str,
    *,
    environment: str | None,
    tags: Sequence[str],
    metadata_filter: Mapping[str, str | int | float | bool] | None,
    ttl_seconds: int | None,
    strategy: str | None,
) -> Call[models.Lease]:
    body: dict[str, Any] = {"provider": provider, "tags": list(tags)}
    if environment is not None:
        body["environment"] = environment
    if metadata_filter:
        body["metadata_filter"] = dict(metadata_filter)
    if ttl_seconds is not None:
        body["ttl_seconds"] = ttl_seconds
    if strategy is not None:
        body["strategy"] = str(strategy)
    # The server does not deduplicate leases by Idempotency-Key: a blind retry could take a
    # second lease (and a concurrency slot) that nobody releases until it expires.
    return Call("POST", "/v1/vault/leases", _model(models.Lease), (), body, retry_after_send=False)


def release(
    lease_id: str, outcome: str | None, retry_after: int | None
) -> Call[models.LeaseReleased]:
    body: dict[str, Any] = {}
    if outcome is not None:
        body["outcome"] = str(outcome)
    if retry_after is not None:
        body["retry_after"] = retry_after
    reported = str(outcome or "ok")

    def gone() -> models.LeaseReleased:
        return models.LeaseReleased(lease_id=lease_id, outcome=reported, already_released=True)

    path = f"/v1/vault/leases/{_segment(lease_id)}"
    return Call("DELETE", path, _model(models.LeaseReleased), (), body, gone=gone)
