"""``/v1/keys``: the API key lifecycle."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Header, Query, Request, Response

from keyplane.api.deps import KeyRoutes, KeyRoutesDep, KeysApprover, KeysWriter, PrincipalDep
from keyplane.api.exact import ExactJsonRoute, credits
from keyplane.api.params import (
    CLEAN_TEXT,
    ConfirmWait,
    CursorParam,
    LimitParam,
    check_key_ref,
    check_query_text,
    metadata_filters,
    reject_unknown_params,
)
from keyplane.api.policy import to_document
from keyplane.api.schemas import (
    Ack,
    AckConfirmedEnvelope,
    AckCreated,
    AckEnvelope,
    AckRotated,
    AckRotatedConfirmed,
    ConfirmationOut,
    KeyConfirmedEnvelope,
    KeyCreate,
    KeyCreated,
    KeyDisable,
    KeyEnvelope,
    KeyOut,
    KeyPage,
    KeyRevoke,
    KeyRotate,
    KeyRotated,
    KeyRotatedConfirmed,
    KeyUpdate,
    PeriodUsage,
    RequestId,
)
from keyplane.domain.keys import Environment, KeyRecord, KeyStatus, effective_status
from keyplane.domain.tenancy import Principal
from keyplane.errors import ValidationError
from keyplane.services.authz import may_read
from keyplane.services.instances import confirmed_after
from keyplane.services.keys import Idempotency, IssuedKey, NewKey
from keyplane.store.base import KeyFilter

router = APIRouter(prefix="/v1/keys", tags=["keys"], route_class=ExactJsonRoute)

_LIST_PARAMS = {
    "owner",
    "tag",
    "environment",
    "status",
    "project",
    "name",
    "cursor",
    "limit",
    "include",
    "period",
}


async def _out(ctx: KeyRoutes, principal: Principal, record: KeyRecord) -> KeyOut:
    [view] = await ctx.keys.views(principal, [record])
    return KeyOut.of(view, ctx.clock.now())


async def _envelope(
    ctx: KeyRoutes, principal: Principal, record: KeyRecord
) -> KeyEnvelope | AckEnvelope:
    """The record for a caller with ``keys:read``; only its id and status for a write-only one."""
    if not may_read(principal, "keys:read"):
        return AckEnvelope(data=_ack(ctx, record))
    return KeyEnvelope(data=await _out(ctx, principal, record))


async def _issued(
    ctx: KeyRoutes, principal: Principal, issued: IssuedKey
) -> KeyCreated | AckCreated:
    if not may_read(principal, "keys:read"):
        return AckCreated(
            key=issued.secret,
            data=_ack(ctx, issued.record),
            signing_secret=issued.signing_secret,
        )
    return KeyCreated(
        key=issued.secret,
        data=await _out(ctx, principal, issued.record),
        signing_secret=issued.signing_secret,
    )


def _ack(ctx: KeyRoutes, record: KeyRecord) -> Ack:
    return Ack(id=record.id, status=effective_status(record, ctx.clock.now()).value)


async def _confirmation(ctx: KeyRoutes, record: KeyRecord, timeout: float) -> ConfirmationOut:
    """Wait (``?wait=confirmed``) until every live instance dropped the written key."""
    confirmation = await ctx.confirm_eviction("keys", record.id, (record.hash,), timeout)
    return ConfirmationOut.of(confirmation, timeout)


async def _answer(
    ctx: KeyRoutes, principal: Principal, record: KeyRecord, wait: float | None
) -> KeyEnvelope | AckEnvelope:
    envelope = await _envelope(ctx, principal, record)
    if wait is None:
        return envelope
    confirmation = await _confirmation(ctx, record, wait)
    if isinstance(envelope, AckEnvelope):
        return AckConfirmedEnvelope(data=envelope.data, confirmation=confirmation)
    return KeyConfirmedEnvelope(data=envelope.data, confirmation=confirmation)


def create_fingerprint(body: KeyCreate) -> str:
    """What an idempotent create is bound to (the gRPC API uses it too: keyplane/grpc/keys.py)."""
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@router.post(
    "",
    status_code=201,
    response_model=KeyCreated | AckCreated,
    responses={
        200: {
            "model": KeyCreated | AckCreated,
            "description": "an idempotent retry: the key the first request made "
            "(header Idempotent-Replayed: true)",
        }
    },
)
async def create_key(
    body: KeyCreate,
    principal: KeysWriter,
    ctx: KeyRoutesDep,
    response: Response,
    idempotency_key: Annotated[RequestId | None, Header()] = None,
    source: Annotated[
        Literal["import"] | None,
        Query(description="`import`: a row of a bulk import, audited as `key.imported`."),
    ] = None,
) -> KeyCreated | AckCreated:
    """Create an API key; the response holds its plaintext, shown only this once.

    With ``Idempotency-Key``, a retry of the same request answers the same key (200,
    ``Idempotent-Replayed: true``); the same key with another body is 409
    ``IDEMPOTENCY_KEY_REUSED``.
    """
    idempotency = (
        None if idempotency_key is None else Idempotency(idempotency_key, create_fingerprint(body))
    )
    issued = await ctx.keys.create(
        principal,
        NewKey(
            name=body.name,
            environment=body.environment,
            project_id=body.project_id,
            label=body.label,
            description=body.description,
            owner=body.owner,
            tags=tuple(body.tags),
            metadata=body.metadata,
            scopes=tuple(body.scopes),
            expires_at=body.expires_at,
            plan=body.plan,
            policy=to_document(body.policy),
            imported=source == "import",
        ),
        idempotency,
    )
    if issued.replayed:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    return await _issued(ctx, principal, issued)


@router.get("", response_model=KeyPage)
async def list_keys(
    request: Request,
    principal: PrincipalDep,
    ctx: KeyRoutesDep,
    owner: Annotated[str | None, Query(max_length=200, json_schema_extra=CLEAN_TEXT)] = None,
    tag: Annotated[str | None, Query(max_length=100, json_schema_extra=CLEAN_TEXT)] = None,
    environment: Environment | None = None,
    status: KeyStatus | None = None,
    project: Annotated[str | None, Query(max_length=40, json_schema_extra=CLEAN_TEXT)] = None,
    name: Annotated[
        str | None, Query(max_length=200, json_schema_extra=CLEAN_TEXT, description="name contains")
    ] = None,
    cursor: CursorParam = None,
    limit: LimitParam = 50,
    include: Annotated[
        Literal["usage"] | None,
        Query(description="`usage`: each key's requests and cost in `period` (usage:read)"),
    ] = None,
    period: Annotated[
        str | None,
        Query(
            pattern=r"^[0-9]{1,5}[mhd]$",
            description="with include=usage only: the period, 30m, 24h, 30d (default 30d)",
        ),
    ] = None,
) -> KeyPage:
    """List keys in creation order. Filter by ``metadata.<dot.path>=value`` as well."""
    reject_unknown_params(request, _LIST_PARAMS, metadata_filters=True)
    filters = KeyFilter(
        owner=check_query_text("owner", owner),
        tag=check_query_text("tag", tag),
        environment=environment,
        status=status,
        project_id=check_query_text("project", project),
        name_contains=check_query_text("name", name),
        metadata=metadata_filters(request),
    )
    records = await ctx.keys.list(principal, filters, cursor, limit + 1)
    page = records[:limit]
    has_more = len(records) > limit
    now = ctx.clock.now()
    views = await ctx.keys.views(principal, page)
    data = [KeyOut.of(view, now) for view in views]
    if include == "usage":
        shown = period or "30d"
        window, totals = await ctx.analytics.usage_of_keys(
            principal, [record.id for record in page], shown
        )
        for out in data:
            sums = totals[out.id]
            out.period_usage = PeriodUsage(
                period=shown,
                start=window.start,
                requests=sums.requests,
                errors=sums.errors,
                cost=credits(sums.cost_micros),
            )
    elif period is not None:
        raise ValidationError(
            "period: only allowed with include=usage",
            errors=[{"loc": "query.period", "msg": "only allowed with include=usage"}],
        )
    return KeyPage(
        data=data,
        next_cursor=page[-1].id if has_more and page else None,
        has_more=has_more,
    )


@router.get("/{id_or_hash}", response_model=KeyEnvelope)
async def get_key(id_or_hash: str, principal: PrincipalDep, ctx: KeyRoutesDep) -> KeyEnvelope:
    """Fetch one key by its id or its hash."""
    record = await ctx.keys.get(principal, check_key_ref(id_or_hash))
    return KeyEnvelope(data=await _out(ctx, principal, record))


@router.patch("/{id_or_hash}", response_model=KeyEnvelope | AckEnvelope)
async def update_key(
    id_or_hash: str, body: KeyUpdate, principal: KeysWriter, ctx: KeyRoutesDep
) -> KeyEnvelope | AckEnvelope:
    """Change a key's descriptive fields, scopes or expiry; absent fields stay as they are."""
    changes: dict[str, Any] = body.model_dump(exclude_unset=True)
    for field in ("tags", "scopes"):
        if field in changes:
            changes[field] = tuple(changes[field] or ())
    for field in ("name", "metadata"):
        if field in changes and changes[field] is None:
            changes.pop(field)
    if "policy" in changes:
        changes["policy"] = to_document(body.policy)
    record = await ctx.keys.update(principal, check_key_ref(id_or_hash), changes)
    return await _envelope(ctx, principal, record)


@router.delete(
    "/{id_or_hash}",
    response_model=KeyConfirmedEnvelope | KeyEnvelope | AckConfirmedEnvelope | AckEnvelope,
)
async def revoke_key(
    id_or_hash: str,
    principal: KeysWriter,
    ctx: KeyRoutesDep,
    wait: ConfirmWait,
    body: Annotated[KeyRevoke | None, Body()] = None,
    reason: Annotated[str | None, Query(max_length=500, json_schema_extra=CLEAN_TEXT)] = None,
) -> KeyEnvelope | AckEnvelope:
    """Revoke a key for good; the record stays for audit."""
    why = body.reason if body is not None and body.reason is not None else reason
    with confirmed_after(wait):
        record = await ctx.keys.revoke(
            principal, check_key_ref(id_or_hash), check_query_text("reason", why)
        )
    return await _answer(ctx, principal, record, wait)


@router.post(
    "/{id_or_hash}/rotate",
    response_model=KeyRotatedConfirmed | KeyRotated | AckRotatedConfirmed | AckRotated,
)
async def rotate_key(
    id_or_hash: str,
    principal: KeysWriter,
    ctx: KeyRoutesDep,
    wait: ConfirmWait,
    body: Annotated[KeyRotate | None, Body()] = None,
) -> KeyCreated | AckCreated:
    """Issue a new secret for the key (same id and settings); shown only this once."""
    grace = (body or KeyRotate()).grace_period()
    with confirmed_after(wait):
        issued = await ctx.keys.rotate(principal, check_key_ref(id_or_hash), grace)
    answer = await _issued(ctx, principal, issued)
    expires = issued.old_key_expires_at or ctx.clock.now()
    # Every cached hash of the key goes, the rotated-out one included: each instance reloads
    # it and sees its grace period (none: refused at once).
    confirmation = None if wait is None else await _confirmation(ctx, issued.record, wait)
    if isinstance(answer, AckCreated):
        if confirmation is None:
            return AckRotated(
                key=answer.key,
                data=answer.data,
                signing_secret=answer.signing_secret,
                old_key_expires_at=expires,
            )
        return AckRotatedConfirmed(
            key=answer.key,
            data=answer.data,
            signing_secret=answer.signing_secret,
            confirmation=confirmation,
            old_key_expires_at=expires,
        )
    if confirmation is None:
        return KeyRotated(
            key=answer.key,
            data=answer.data,
            signing_secret=answer.signing_secret,
            old_key_expires_at=expires,
        )
    return KeyRotatedConfirmed(
        key=answer.key,
        data=answer.data,
        signing_secret=answer.signing_secret,
        confirmation=confirmation,
        old_key_expires_at=expires,
    )


@router.post(
    "/{id_or_hash}/disable",
    response_model=KeyConfirmedEnvelope | KeyEnvelope | AckConfirmedEnvelope | AckEnvelope,
)
async def disable_key(
    id_or_hash: str,
    principal: KeysWriter,
    ctx: KeyRoutesDep,
    wait: ConfirmWait,
    body: Annotated[KeyDisable | None, Body()] = None,
) -> KeyEnvelope | AckEnvelope:
    """Disable a key, optionally until ``auto_enable_after`` ("600", "30m", "2d") has passed."""
    request = body or KeyDisable()
    after = (
        None if request.auto_enable_after is None else timedelta(seconds=request.auto_enable_after)
    )
    with confirmed_after(wait):
        record = await ctx.keys.disable(principal, check_key_ref(id_or_hash), request.reason, after)
    return await _answer(ctx, principal, record, wait)


@router.post(
    "/{id_or_hash}/approve",
    response_model=KeyConfirmedEnvelope | KeyEnvelope | AckConfirmedEnvelope | AckEnvelope,
)
async def approve_key(
    id_or_hash: str, principal: KeysApprover, ctx: KeyRoutesDep, wait: ConfirmWait
) -> KeyEnvelope | AckEnvelope:
    """Approve a key pending approval; only a management key other than its creator's."""
    with confirmed_after(wait):
        record = await ctx.keys.approve(principal, check_key_ref(id_or_hash))
    return await _answer(ctx, principal, record, wait)


@router.post(
    "/{id_or_hash}/reject",
    response_model=KeyConfirmedEnvelope | KeyEnvelope | AckConfirmedEnvelope | AckEnvelope,
)
async def reject_key(
    id_or_hash: str,
    principal: KeysApprover,
    ctx: KeyRoutesDep,
    wait: ConfirmWait,
    body: Annotated[KeyRevoke | None, Body()] = None,
) -> KeyEnvelope | AckEnvelope:
    """Reject a key pending approval: it is revoked for good."""
    reason = None if body is None else body.reason
    with confirmed_after(wait):
        record = await ctx.keys.reject(principal, check_key_ref(id_or_hash), reason)
    return await _answer(ctx, principal, record, wait)


@router.post("/{id_or_hash}/enable", response_model=KeyEnvelope | AckEnvelope)
async def enable_key(
    id_or_hash: str, principal: PrincipalDep, ctx: KeyRoutesDep
) -> KeyEnvelope | AckEnvelope:
    """Enable a disabled key."""
    record = await ctx.keys.enable(principal, check_key_ref(id_or_hash))
    return await _envelope(ctx, principal, record)
