"""``/parrotrouter/v1``: ParrotRouter's key management API over Keyplane's keys (seed 004).

Management-key authenticated like ``/v1``. ParrotRouter documents no error body, so errors
are Keyplane's own problem+json with the native statuses (a bad request is 422).

A request's shape is checked here (sizes bounded before any work), translated by the pure
``parrotrouter_map`` into the native ``/v1/keys`` body, which the native model then validates
like any ``/v1`` request: one set of rules, and a seed field whose native field this Keyplane
lacks is a 422 naming both. Mapping: docs/compatibility.md (ParrotRouter).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

import pydantic
from fastapi import APIRouter, Body, Query, Request, WebSocket
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import AfterValidator, BaseModel, Field, StrictBool, StringConstraints

from keyplane.api.compat import parrotrouter_map as mapping
from keyplane.api.deps import (
    AnalyticsDep,
    AuditExporter,
    AuditReadDep,
    KeyRoutes,
    KeyRoutesDep,
    KeysWriter,
    PrincipalDep,
    RotationsDep,
    SettingsDep,
)
from keyplane.api.exact import ExactJsonRoute
from keyplane.api.fields import Input
from keyplane.api.openapi import PARROT_TAG
from keyplane.api.params import CursorParam, check_id, check_key_ref, reject_unknown_params
from keyplane.api.policy import Count, Credits, to_api, to_document
from keyplane.api.rotation_schemas import RotationOut
from keyplane.api.routes import analytics as native_analytics
from keyplane.api.routes import audit as native_audit
from keyplane.api.routes import streams as native_streams
from keyplane.api.schemas import KeyCreate, KeyOut, KeyUpdate, LongText, Metadata, Name, Reason
from keyplane.domain import validation
from keyplane.domain.keys import KeyRecord, effective_status
from keyplane.domain.tenancy import Principal
from keyplane.errors import ConflictError, ValidationError
from keyplane.services.audit_read import AuditQuery
from keyplane.services.authz import may_read
from keyplane.services.keys import NewKey

router = APIRouter(prefix="/parrotrouter/v1", tags=[PARROT_TAG], route_class=ExactJsonRoute)

MAX_LIST = 200
#: Tries of a rule merge that keeps meeting a concurrent change of the same key's rules.
MERGE_ATTEMPTS = 5
MAX_NETWORKS = 1000


def _text(value: str) -> str:
    return validation.check_text(value)


Word = Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(_text)]
Words = Annotated[list[Word], Field(max_length=MAX_LIST)]
Networks = Annotated[list[Word], Field(max_length=MAX_NETWORKS)]
Flags = Annotated[dict[Word, StrictBool], Field(max_length=MAX_LIST)]
Hours = Annotated[int, pydantic.Strict(), Field(ge=0, le=30 * 24)]
Fraction = Annotated[float, Field(gt=0, le=10)]
Environment = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]
#: An instant as the native API reads it (``UtcDatetime``); validated there.
Instant = Annotated[str, StringConstraints(min_length=1, max_length=40), AfterValidator(_text)]


class ModelCostLimit(Input):
    max_requests_per_day: Count | None = None
    max_tokens_per_request: Count | None = None
    max_cost_per_day: Credits | None = None


class ModelRules(Input):
    allowed: Words | None = None
    denied: Words | None = None
    cost_limits: Annotated[dict[Word, ModelCostLimit], Field(max_length=50)] | None = None


class Routing(Input):
    allow_auto_routing: StrictBool | None = None
    allowed_providers: Words | None = None
    force_provider: Word | None = None
    fallback_allowed: StrictBool | None = None


class DataAccess(Input):
    log_requests: StrictBool | None = None
    log_responses: StrictBool | None = None
    export_data: StrictBool | None = None
    delete_data: StrictBool | None = None


class Permissions(Input):
    """Seed 004's three shapes of ``permissions`` (flat, fine-grained, per environment)."""

    models: Words | ModelRules | None = None
    all_models: StrictBool | None = None
    features: Words | Flags | None = None
    all_features: StrictBool | None = None
    advanced_features: Flags | None = None
    data_access: DataAccess | None = None
    operations: Annotated[list[Word], Field(max_length=10)] | None = None
    routing: Routing | None = None
    require_approval: StrictBool | None = None
    max_requests_per_minute: Count | None = None
    max_requests_per_day: Count | None = None
    max_cost_per_day: Credits | None = None
    # Team keys (refused with a 422 naming teams: Keyplane has none yet).
    inherit_from: Word | None = None
    overrides: Permissions | None = None


class Restrictions(Input):
    ip_whitelist: Networks | None = None
    ip_blacklist: Networks | None = None
    domains: Words | None = None
    referrers: Words | None = None
    user_agents: Words | None = None
    allowed_origins: Words | None = None


class NetworkRestrictions(Input):
    ip_whitelist: Networks | None = None
    ip_blacklist: Networks | None = None
    require_https: StrictBool | None = None
    allowed_origins: Words | None = None
    allowed_countries: Words | None = None
    blocked_countries: Words | None = None


class Authentication(Input):
    require_signature: StrictBool | None = None
    signature_algorithm: Word | None = None
    require_timestamp: StrictBool | None = None
    max_timestamp_age: Annotated[int, pydantic.Strict(), Field(ge=1, le=86_400)] | None = None
    require_nonce: StrictBool | None = None


class DomainRestrictions(Input):
    allowed_domains: Words | None = None
    allowed_referrers: Words | None = None
    user_agent_pattern: Annotated[str, StringConstraints(min_length=1, max_length=500)] | None = (
        None
    )


class AuditSettings(Input):
    log_all_requests: StrictBool | None = None
    log_failures: StrictBool | None = None
    alert_on_suspicious: StrictBool | None = None
    retention_days: Annotated[int, pydantic.Strict(), Field(ge=1, le=36_500)] | None = None


class Security(Input):
    network_restrictions: NetworkRestrictions | None = None
    authentication: Authentication | None = None
    domain_restrictions: DomainRestrictions | None = None
    audit: AuditSettings | None = None


class RequestLimits(Input):
    per_second: Count | None = None
    per_minute: Count | None = None
    per_hour: Count | None = None
    per_day: Count | None = None
    burst_size: Count | None = None


class TokenLimits(Input):
    input_per_minute: Count | None = None
    output_per_minute: Count | None = None
    total_per_minute: Count | None = None
    total_per_day: Count | None = None


class CostLimits(Input):
    per_request_max: Credits | None = None
    per_hour_max: Credits | None = None
    per_day_max: Credits | None = None
    per_month_max: Credits | None = None
    alert_threshold: Fraction | None = None


class ConcurrencyLimits(Input):
    max_parallel_requests: Count | None = None
    max_queued_requests: Count | None = None


class RateLimits(Input):
    requests: RequestLimits | None = None
    tokens: TokenLimits | None = None
    costs: CostLimits | None = None
    concurrency: ConcurrencyLimits | None = None


class Member(Input):
    user_id: Word
    role: Word | None = None
    can_manage_key: StrictBool | None = None


class TeamScope(Input):
    organization_id: Word | None = None
    team_id: Word | None = None
    projects: Words | None = None


class _Rules(Input):
    permissions: Permissions | None = None
    restrictions: Restrictions | None = None
    security: Security | None = None
    rate_limits: RateLimits | None = None
    metadata: Metadata | None = None
    expires_at: Instant | None = None
    description: LongText | None = None


class ParrotKeyCreate(_Rules):
    name: Name
    environment: Environment | None = None
    type: Word | None = Field(default=None, description="team keys: needs teams (refused)")
    scope: TeamScope | None = Field(default=None, description="needs teams (refused)")
    members: Annotated[list[Member], Field(max_length=100)] | None = Field(
        default=None, description="needs teams (refused)"
    )


class ParrotKeyUpdate(_Rules):
    name: Name | None = None


class ParrotDisable(Input):
    reason: Reason | None = None
    auto_enable_after: (
        Annotated[str, StringConstraints(max_length=16)]
        | Annotated[int, pydantic.Strict(), Field(ge=1)]
        | None
    ) = Field(default=None, description='"30m", "1h", "2d" or seconds, up to 30 days')


class ParrotDelete(Input):
    reason: Reason | None = None
    revoke_immediately: StrictBool = True


class ParrotRotate(Input):
    invalidate_old: StrictBool | None = None
    grace_period_hours: Hours | None = None


class ParrotRotation(Input):
    enabled: StrictBool | None = None
    schedule: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None
    max_age_days: Annotated[int, pydantic.Strict(), Field(ge=1, le=3660)] | None = None
    strategy: Literal["gradual", "immediate"] | None = None
    notification_channels: Annotated[list[Word], Field(max_length=20)] | None = None
    grace_period_hours: Hours | None = None
    auto_update_apps: StrictBool | None = None


class ParrotKey(KeyOut):
    """A key as this surface shows it: the native key object."""


class ParrotKeyCreated(KeyOut):
    key: str = Field(description="the plaintext key, shown only in this response")


class ParrotKeyRotated(ParrotKeyCreated):
    old_key_expires_at: datetime = Field(description="when the previous secret stops verifying")


class ParrotAck(BaseModel):
    """What a write-only caller (``keys:write`` without ``keys:read``) is told of the key."""

    id: str
    status: str
    created_at: datetime


class ParrotAckCreated(ParrotAck):
    key: str = Field(description="the plaintext key, shown only in this response")


class ParrotAckRotated(ParrotAckCreated):
    old_key_expires_at: datetime


class ParrotRotationOut(BaseModel):
    id: str
    rotation: dict[str, Any]


def _native(model: type[pydantic.BaseModel], document: dict[str, Any]) -> Any:
    """The native request model of ``document``; a 422 naming the native field otherwise.

    The native model is the one set of rules (``/v1``). A seed field whose native field this
    Keyplane does not have is named as such, not dropped.
    """
    try:
        return model.model_validate(document)
    except pydantic.ValidationError as exc:
        details = []
        for error in exc.errors():
            location = ".".join(str(part) for part in error["loc"])
            if error["type"] == "extra_forbidden":
                message = "this Keyplane has no such native field (not supported)"
            else:
                message = str(error["msg"])
            details.append({"loc": f"native.{location}", "msg": message})
        summary = "; ".join(f"{d['loc']}: {d['msg']}" for d in details[:5])
        raise ValidationError(
            f"invalid request once mapped to the native API: {summary}", errors=details
        ) from None


def _given(model: pydantic.BaseModel) -> dict[str, Any]:
    # Python values (Decimal credits stay exact); only what the request gave.
    return model.model_dump(exclude_unset=True)


async def _shown(
    ctx: KeyRoutes,
    principal: Principal,
    record: KeyRecord,
    full: type[KeyOut],
    ack: type[ParrotAck],
    **extra: Any,
) -> KeyOut | ParrotAck:
    """The key object (with ``extra``), or only its id and status for a write-only caller:
    write does not imply read, as on /v1."""
    now = ctx.clock.now()
    if not may_read(principal, "keys:read"):
        status = effective_status(record, now).value
        return ack(id=record.id, status=status, created_at=record.created_at, **extra)
    [view] = await ctx.keys.views(principal, [record])
    return full(**dict(KeyOut.of(view, now)), **extra)


@router.post(
    "/keys",
    status_code=201,
    response_model=ParrotKeyCreated | ParrotAckCreated,
    operation_id="parrot_create_key",
)
async def create_key(
    body: ParrotKeyCreate, principal: KeysWriter, ctx: KeyRoutesDep, settings: SettingsDep
) -> KeyOut | ParrotAck:
    """Create a key from seed 004's request; ``key`` is its plaintext, shown only here."""
    document = mapping.key_document(
        _given(body), audit_retention_days=settings.audit_retention_days
    )
    native: KeyCreate = _native(KeyCreate, document)
    issued = await ctx.keys.create(
        principal,
        NewKey(
            name=native.name,
            environment=native.environment,
            description=native.description,
            tags=tuple(native.tags),
            metadata=native.metadata,
            expires_at=native.expires_at,
            policy=to_document(native.policy),
        ),
    )
    return await _shown(
        ctx, principal, issued.record, ParrotKeyCreated, ParrotAckCreated, key=issued.secret
    )


@router.get("/keys/{key_id}", response_model=ParrotKey, operation_id="parrot_get_key")
async def get_key(key_id: str, principal: PrincipalDep, ctx: KeyRoutesDep) -> KeyOut | ParrotAck:
    """One key by its id (or hash)."""
    record = await ctx.keys.get(principal, check_key_ref(key_id))
    return await _shown(ctx, principal, record, ParrotKey, ParrotAck)


@router.patch(
    "/keys/{key_id}", response_model=ParrotKey | ParrotAck, operation_id="parrot_update_key"
)
async def update_key(
    key_id: str,
    body: ParrotKeyUpdate,
    principal: KeysWriter,
    ctx: KeyRoutesDep,
    settings: SettingsDep,
) -> KeyOut | ParrotAck:
    """Change the rules a request names; the key's other rules stay as they are."""
    given = _given(body)
    retention = settings.audit_retention_days
    if not any(given.get(section) is not None for section in mapping.RULE_SECTIONS):
        # No rule changes: name, description, metadata or expiry need keys:write only.
        document = mapping.update_document(given, {}, audit_retention_days=retention)
        record = await _apply(ctx, principal, check_key_ref(key_id), document)
        return await _shown(ctx, principal, record, ParrotKey, ParrotAck)

    # Merging a partial rule change reads the key's rules (keys:read, as a GET would).
    def merged(current: dict[str, Any]) -> dict[str, Any]:
        return mapping.update_document(given, current, audit_retention_days=retention)

    record = await _merge(ctx, principal, key_id, merged)
    return await _shown(ctx, principal, record, ParrotKey, ParrotAck)


async def _merge(
    ctx: KeyRoutes,
    principal: Principal,
    key_id: str,
    document_of: Callable[[dict[str, Any]], dict[str, Any]],
) -> KeyRecord:
    """Read the key's rules, merge the change in, write it unless they changed meanwhile.

    The write is conditional on the rules read (``expected_policy``, checked under the key's
    lock): two concurrent merges never lose one another's change; the loser reads again.
    """
    for attempt in range(MERGE_ATTEMPTS):
        record = await ctx.keys.get(principal, check_key_ref(key_id))
        changes = _changes(document_of(to_api(record.policy)))
        try:
            return await ctx.keys.update(
                principal, record.id, changes, expected_policy=record.policy
            )
        except ConflictError as exc:
            if exc.code != "POLICY_CHANGED" or attempt == MERGE_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


async def _apply(
    ctx: KeyRoutes, principal: Principal, key_ref: str, document: dict[str, Any]
) -> KeyRecord:
    # An empty change still goes through: it finds the key (404) and checks keys:write.
    return await ctx.keys.update(principal, key_ref, _changes(document))


def _changes(document: dict[str, Any]) -> dict[str, Any]:
    """The key service's changes of a native PATCH body, as ``PATCH /v1/keys`` makes them."""
    native: KeyUpdate = _native(KeyUpdate, document)
    changes: dict[str, Any] = native.model_dump(exclude_unset=True)
    if "policy" in changes:
        changes["policy"] = to_document(native.policy)
    for field in ("name", "metadata"):
        if field in changes and changes[field] is None:
            changes.pop(field)  # null is "unchanged" for these, as on /v1
    return changes


@router.post(
    "/keys/{key_id}/disable",
    response_model=ParrotKey | ParrotAck,
    operation_id="parrot_disable_key",
)
async def disable_key(
    key_id: str,
    principal: KeysWriter,
    ctx: KeyRoutesDep,
    body: Annotated[ParrotDisable | None, Body()] = None,
) -> KeyOut | ParrotAck:
    """Disable a key, optionally until ``auto_enable_after`` (``"1h"``) has passed."""
    request = body or ParrotDisable()
    after = (
        None
        if request.auto_enable_after is None
        else mapping.auto_enable_after(request.auto_enable_after)
    )
    record = await ctx.keys.disable(principal, check_key_ref(key_id), request.reason, after)
    return await _shown(ctx, principal, record, ParrotKey, ParrotAck)


@router.delete(
    "/keys/{key_id}", response_model=ParrotKey | ParrotAck, operation_id="parrot_revoke_key"
)
async def revoke_key(
    key_id: str,
    principal: KeysWriter,
    ctx: KeyRoutesDep,
    body: Annotated[ParrotDelete | None, Body()] = None,
) -> KeyOut | ParrotAck:
    """Revoke a key for good, at once; the record stays for audit."""
    request = body or ParrotDelete()
    if not request.revoke_immediately:
        raise ValidationError(
            "revoke_immediately: Keyplane revokes at once; to let a key run out later, PATCH "
            "its expires_at instead",
            code="UNSUPPORTED_FIELD",
            errors=[{"loc": "body.revoke_immediately", "msg": "only true is supported"}],
        )
    record = await ctx.keys.revoke(principal, check_key_ref(key_id), request.reason)
    return await _shown(ctx, principal, record, ParrotKey, ParrotAck)


@router.post(
    "/keys/{key_id}/rotate",
    response_model=ParrotKeyRotated | ParrotAckRotated,
    operation_id="parrot_rotate_key",
)
async def rotate_key(
    key_id: str,
    principal: KeysWriter,
    ctx: KeyRoutesDep,
    body: Annotated[ParrotRotate | None, Body()] = None,
) -> KeyOut | ParrotAck:
    """Issue a new secret; the old one verifies for ``grace_period_hours`` unless
    ``invalidate_old``."""
    request = body or ParrotRotate()
    grace = mapping.rotation_grace(request.invalidate_old, request.grace_period_hours)
    issued = await ctx.keys.rotate(principal, check_key_ref(key_id), grace)
    return await _shown(
        ctx,
        principal,
        issued.record,
        ParrotKeyRotated,
        ParrotAckRotated,
        key=issued.secret,
        old_key_expires_at=mapping.old_key_expires_at(issued.record.updated_at, grace),
    )


@router.post(
    "/keys/{key_id}/rotation", response_model=ParrotRotationOut, operation_id="parrot_set_rotation"
)
async def set_rotation(
    key_id: str, body: ParrotRotation, principal: KeysWriter, rotations: RotationsDep
) -> ParrotRotationOut:
    """Set the key's automatic rotation: the native rotation policy
    (``POST /v1/keys/{id}/rotation``, docs/lifecycle.md), in the seed's shape."""
    schedule = await rotations.set_policy(
        principal, check_key_ref(key_id), mapping.rotation_document(_given(body))["rotation"]
    )
    shown = RotationOut.of(schedule, None).model_dump(mode="json")
    return ParrotRotationOut(id=schedule.key_id, rotation=shown)


@router.get(
    "/keys/{key_id}/analytics", response_class=JSONResponse, operation_id="parrot_key_analytics"
)
async def key_analytics(
    request: Request,
    key_id: str,
    principal: PrincipalDep,
    service: AnalyticsDep,
    period: native_analytics.PeriodParam = "7d",
    granularity: native_analytics.Granularity = "hour",
) -> Any:
    """One key's usage over a period: the native report, already in seed 004's shape."""
    return await native_analytics.key_analytics(
        request, key_id, principal, service, period, granularity
    )


@router.websocket("/keys/{key_id}/usage/stream")
async def key_usage_socket(websocket: WebSocket, key_id: str) -> None:
    await native_streams.key_usage_socket(websocket, key_id)


#: A seed event type (``usage``) or a Keyplane action or prefix (``key.updated``, ``key.*``).
SEED_EVENT_TYPE = r"^[a-z][a-z0-9_]{0,31}(?:\.(?:[a-z][a-z0-9_]{0,31}|\*)){0,3}$"
SeedEventType = Annotated[str, StringConstraints(max_length=100, pattern=SEED_EVENT_TYPE)]


@router.get("/keys/{key_id}/audit", operation_id="parrot_key_audit")
async def key_audit(
    key_id: str,
    request: Request,
    principal: PrincipalDep,
    audit: AuditReadDep,
    event_types: Annotated[
        list[SeedEventType] | None,
        Query(
            max_length=20,
            description="usage, permission_change, security_alert or Keyplane action names",
        ),
    ] = None,
    start_date: native_audit.Bound = None,
    end_date: native_audit.Bound = None,
    cursor: CursorParam = None,
    limit: native_audit.PageLimit = 50,
) -> dict[str, Any]:
    """The key's audit events, newest first; seed event types map to Keyplane actions."""
    reject_unknown_params(request, {"event_types", "start_date", "end_date", "cursor", "limit"})
    actions = mapping.audit_actions(event_types or ())
    query = AuditQuery(
        event_types=actions,
        start=native_audit._bound("start_date", start_date),
        end=native_audit._bound("end_date", end_date),
    )
    page = await audit.for_key(principal, check_id(key_id, "key", "key"), query, cursor, limit)
    return {
        "events": [
            {
                "timestamp": row["occurred_at"],
                "event_type": mapping.event_category(row["action"]) or row["action"],
                "action": row["action"],
                "user_id": row["actor_id"],
                "ip_address": row["actor_ip"],
                "details": row["details"],
                "outcome": row["outcome"],
                "count": row["count"],
            }
            for row in page.entries
        ],
        "next_cursor": page.next_cursor,
        "has_more": page.next_cursor is not None,
    }


@router.post(
    "/keys/{key_id}/audit/export",
    response_class=StreamingResponse,
    responses=native_audit._EXPORT_RESPONSES,
    operation_id="parrot_export_key_audit",
)
async def export_key_audit(
    key_id: str,
    body: native_audit.KeyAuditExportIn,
    principal: AuditExporter,
    audit: AuditReadDep,
) -> Any:
    """Export the key's audit events (``format``, ``period``, ``include_pii``)."""
    return await native_audit.export_key_audit(key_id, body, principal, audit)
