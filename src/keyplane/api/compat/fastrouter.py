"""``/prod``: the FastRouter service-key API over Keyplane's keys (seed 001).

Management-key authenticated like ``/v1``. Errors are OpenAI-style, as FastRouter's gateway
answers: ``{"error": {"message": ..., "type": ..., "code": <Keyplane's stable code>}}``.
Mapping: docs/compatibility.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, Field, StringConstraints, model_validator

from keyplane.api.compat import fastrouter_map as mapping
from keyplane.api.compat.errors import Failure, add_fallback, error_route
from keyplane.api.deps import KeyRoutes, KeyRoutesDep, KeysWriter, PrincipalDep, ProjectsDep
from keyplane.api.fields import Input
from keyplane.api.params import check_key_ref, check_query_text, reject_unknown_params
from keyplane.api.policy import Count, Credits, ModelPattern
from keyplane.api.schemas import Metadata, Name, ShortText, Tags
from keyplane.domain import money
from keyplane.domain.keys import KeyRecord, KeyStatus, effective_status
from keyplane.domain.tenancy import Principal
from keyplane.errors import NotFoundError, PermissionDeniedError, ValidationError
from keyplane.services.authz import may_read
from keyplane.services.compat import MAX_OFFSET, live_keys_page
from keyplane.services.keys import NewKey
from keyplane.services.projects import Projects

MAX_PAGE = 1000
MAX_TAG_FILTERS = 20
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
}


def render(failure: Failure) -> JSONResponse:
    kind = _ERROR_TYPES.get(failure.status, "api_error")
    body = {"error": {"message": failure.message, "type": kind, "code": failure.code}}
    headers = {"WWW-Authenticate": "Bearer"} if failure.status == 401 else None
    return JSONResponse(body, status_code=failure.status, headers=headers)


router = APIRouter(prefix="/prod", tags=["compat: FastRouter"], route_class=error_route(render))

Interval = Literal["daily", "weekly", "monthly", "never"]
KeyHash = Annotated[str, StringConstraints(min_length=1, max_length=100)]


def _expiry(value: str) -> str:
    mapping.parse_expire_key(value)
    return value


ExpireKey = Annotated[str, StringConstraints(max_length=40), AfterValidator(_expiry)]
Models = Annotated[list[ModelPattern], Field(max_length=200)]


class _Settings(Input):
    """The fields a service key is created with and later changed by."""

    org_id: ShortText | None = None
    credit_limit: Credits | None = None
    reset_budget_interval: Interval | None = None
    expire_key: ExpireKey | None = None
    models: Models | None = None
    tpm_limit: Count | None = None
    rpm_limit: Count | None = None
    metadata: Metadata | None = None
    meta_data: Metadata | None = Field(default=None, description="alias of metadata")
    tags: Tags | None = None

    @model_validator(mode="after")
    def _one_metadata(self) -> _Settings:
        if self.metadata is not None and self.meta_data is not None:
            raise ValueError("give metadata or meta_data, not both")
        return self

    def given_metadata(self) -> dict[str, Any] | None:
        return self.metadata if self.metadata is not None else self.meta_data

    def policy_changes(self) -> dict[str, Any]:
        """The policy fields given, credit_limit in micro-credits."""
        given = self.model_fields_set
        changes: dict[str, Any] = {
            name: getattr(self, name)
            for name in ("models", "tpm_limit", "rpm_limit", "reset_budget_interval")
            if name in given
        }
        if "credit_limit" in given:
            limit = self.credit_limit
            changes["credit_limit"] = None if limit is None else money.to_micros(limit)
        return changes


class ServiceKeyCreate(_Settings):
    project_id: ShortText | None = None
    project_name: ShortText | None = None
    api_key_name: Name


class ServiceKeyUpdate(_Settings):
    api_key_id_hash: KeyHash
    api_key_name: Name | None = None


class ServiceKeyDelete(Input):
    api_key_id_hash: KeyHash
    org_id: ShortText | None = None


async def _check_org(projects: Projects, principal: Principal, org_id: str | None) -> None:
    """``org_id`` may be the organization's id or one of its aliases (FastRouter's org id).

    Another organization's is refused, not ignored: the caller meant to act somewhere else.
    """
    if org_id is not None and not await projects.names_own_org(principal, org_id):
        raise PermissionDeniedError(
            "org_id is neither this provisioning key's organization nor one of its aliases",
            code="ORG_MISMATCH",
        )


@dataclass(frozen=True, slots=True)
class _Deps:
    """What the service-key routes use: the key routes' services and the projects."""

    routes: KeyRoutes
    projects: Projects


async def _deps(routes: KeyRoutesDep, projects: ProjectsDep) -> _Deps:
    return _Deps(routes, projects)


_DepsDep = Annotated[_Deps, Depends(_deps)]


async def _object(ctx: _Deps, principal: Principal, record: KeyRecord) -> dict[str, Any]:
    [view] = await ctx.routes.keys.views(principal, [record])
    names = await ctx.projects.names(principal)
    return mapping.service_key(
        view, principal.org_id, names.get(record.project_id), ctx.routes.clock.now()
    )


def _tag_filter(given: list[str] | None) -> tuple[str, ...]:
    """``?tags=a&tags=b`` or ``?tags=a,b``: the tags a listed key must all carry."""
    found: list[str] = []
    for value in given or ():
        if len(value) > 200 * MAX_TAG_FILTERS:
            raise ValidationError("tags: too long", code="INVALID_FILTER")
        for part in (check_query_text("tags", value) or "").split(","):
            tag = part.strip()
            if tag and tag not in found:
                found.append(tag)
    if len(found) > MAX_TAG_FILTERS:
        raise ValidationError(f"filter by at most {MAX_TAG_FILTERS} tags", code="INVALID_FILTER")
    return tuple(found)


async def _live(ctx: _Deps, principal: Principal, key_hash: str) -> KeyRecord:
    """The key by hash (or id); a revoked (deleted) one is a 404."""
    record = await ctx.routes.keys.get(principal, check_key_ref(key_hash))
    if effective_status(record, ctx.routes.clock.now()) is KeyStatus.REVOKED:
        raise NotFoundError("no such service key", code="KEY_NOT_FOUND")
    return record


@router.post("/createServiceKey", status_code=201)
async def create_service_key(
    body: ServiceKeyCreate, principal: KeysWriter, ctx: _DepsDep
) -> dict[str, Any]:
    """Create a service key; ``api_key`` is its plaintext, shown only in this response."""
    await _check_org(ctx.projects, principal, body.org_id)
    project = await ctx.projects.named_in_request(
        principal,
        await ctx.routes.keys.default_project(principal.org_id),
        body.project_id,
        body.project_name,
    )
    expires_at = None if body.expire_key is None else mapping.parse_expire_key(body.expire_key)
    issued = await ctx.routes.keys.create(
        principal,
        NewKey(
            name=body.api_key_name,
            project_id=project.id,
            tags=tuple(body.tags or ()),
            metadata=mapping.visible_metadata(body.given_metadata() or {}),
            expires_at=expires_at,
            policy=mapping.policy_with({}, body.policy_changes()),
        ),
    )
    if not may_read(principal, "keys:read"):
        # Write does not imply read: a write-only caller learns the key and its hash only.
        return {"api_key": issued.secret, "api_key_id_hash": issued.record.hash}
    data = await _object(ctx, principal, issued.record)
    return {"api_key": issued.secret, **data}


@router.get("/getServiceKeys")
async def get_service_keys(
    request: Request,
    principal: PrincipalDep,
    ctx: _DepsDep,
    org_id: Annotated[str | None, Query(max_length=200)] = None,
    project_id: Annotated[str | None, Query(max_length=200)] = None,
    include_revoked: bool = True,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = MAX_PAGE,
    tags: Annotated[list[str] | None, Query(max_length=MAX_TAG_FILTERS)] = None,
) -> dict[str, Any]:
    """List service keys, oldest first; revoked ones show with status ``revoked``.

    ``tags`` (repeated, or comma-separated) keeps the keys carrying every tag given.
    """
    reject_unknown_params(
        request, {"org_id", "project_id", "include_revoked", "offset", "limit", "tags"}
    )
    await _check_org(ctx.projects, principal, check_query_text("org_id", org_id))
    now = ctx.routes.clock.now()
    page = await live_keys_page(
        ctx.routes.keys,
        principal,
        now=now,
        include_disabled=True,
        include_revoked=include_revoked,
        offset=offset,
        size=limit,
        project_id=check_query_text("project_id", project_id),
        tags=_tag_filter(tags),
    )
    views = await ctx.routes.keys.views(principal, page.records)
    names = await ctx.projects.names(principal)
    keys = [
        mapping.service_key(view, principal.org_id, names.get(view.record.project_id), now)
        for view in views
    ]
    return {"service_keys": keys, "has_more": page.has_more}


@router.post("/updateServiceKey")
async def update_service_key(
    body: ServiceKeyUpdate, principal: KeysWriter, ctx: _DepsDep
) -> dict[str, Any]:
    """Change a service key's name, limits, models, expiry, metadata or tags by its hash."""
    await _check_org(ctx.projects, principal, body.org_id)
    record = await _live(ctx, principal, body.api_key_id_hash)
    given = body.model_fields_set
    changes: dict[str, Any] = {}
    if body.api_key_name is not None:
        changes["name"] = body.api_key_name
    if "expire_key" in given:
        expire = body.expire_key
        changes["expires_at"] = None if expire is None else mapping.parse_expire_key(expire)
    if body.tags is not None:
        changes["tags"] = tuple(body.tags)
    metadata = body.given_metadata()
    if metadata is not None:
        changes["metadata"] = mapping.with_metadata(record.metadata, metadata)
    policy_changes = body.policy_changes()
    if policy_changes:
        changes["policy"] = mapping.policy_with(record.policy, policy_changes)
    if changes:
        record = await ctx.routes.keys.update(principal, record.id, changes)
    return await _object(ctx, principal, record)


@router.post("/deleteServiceKey")
async def delete_service_key(
    body: ServiceKeyDelete, principal: KeysWriter, ctx: _DepsDep
) -> dict[str, Any]:
    """Revoke a service key for good by its hash; the record stays for audit."""
    await _check_org(ctx.projects, principal, body.org_id)
    record = await _live(ctx, principal, body.api_key_id_hash)
    await ctx.routes.keys.revoke(principal, record.id, "deleted through /prod/deleteServiceKey")
    return {"deleted": True, "api_key_id_hash": record.hash}


add_fallback(router, render)
