"""``/api/v1``: the OpenRouter / AnyAPI provisioning API over Keyplane's keys (seed 000).

Management-key authenticated like ``/v1``, except ``GET /key``, which also answers an API
key presenting itself. Errors are ``{"error": {"code": <HTTP status>, "message": ...,
"metadata": {"code": <Keyplane's stable code>}}}``. Mapping: docs/compatibility.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import StrictBool

from keyplane.api.compat import openrouter_map as mapping
from keyplane.api.compat.errors import Failure, add_fallback, error_route
from keyplane.api.deps import KeyRoutes, KeyRoutesDep, KeysWriter, ManagementDep, PrincipalDep
from keyplane.api.fields import Input
from keyplane.api.params import check_key_ref, reject_unknown_params
from keyplane.api.policy import Credits
from keyplane.api.schemas import LongText, Name, ShortText, UtcDatetime
from keyplane.domain import money
from keyplane.domain.keys import KeyRecord, KeyStatus, effective_status
from keyplane.domain.tenancy import Principal
from keyplane.errors import AuthenticationError, NotFoundError
from keyplane.services.authz import may_read
from keyplane.services.compat import MAX_OFFSET, live_keys_page
from keyplane.services.keys import NewKey

PAGE_SIZE = 100
LimitReset = Literal["daily", "weekly", "monthly"]


def render(failure: Failure) -> JSONResponse:
    body = {
        "error": {
            "code": failure.status,
            "message": failure.message,
            "metadata": {"code": failure.code},
        }
    }
    headers = {"WWW-Authenticate": "Bearer"} if failure.status == 401 else None
    return JSONResponse(body, status_code=failure.status, headers=headers)


router = APIRouter(
    prefix="/api/v1", tags=["compat: OpenRouter / AnyAPI"], route_class=error_route(render)
)


def route(method: str, path: str, status_code: int = 200) -> Callable[[Any], Any]:
    """Register a handler on ``path`` and ``path/``: clients call both (seed 000 posts to
    ``/keys/``), and a redirect would drop the body of some clients' POSTs."""

    def register(handler: Any) -> Any:
        for variant in (path, path + "/"):
            # The twin with a slash is the same operation: documented once.
            router.add_api_route(
                variant,
                handler,
                methods=[method],
                status_code=status_code,
                include_in_schema=variant == path,
            )
        return handler

    return register


class KeyCreateIn(Input):
    name: Name
    label: ShortText | None = None
    description: LongText | None = None
    limit: Credits | None = None
    limit_reset: LimitReset | None = None
    include_byok_in_limit: StrictBool = False
    expires_at: UtcDatetime | None = None


class KeyPatchIn(Input):
    name: Name | None = None
    disabled: StrictBool | None = None
    limit: Credits | None = None
    limit_reset: LimitReset | None = None
    include_byok_in_limit: StrictBool | None = None


async def _object(ctx: KeyRoutes, principal: Principal, record: KeyRecord) -> dict[str, Any]:
    [view] = await ctx.keys.views(principal, [record])
    return mapping.key_object(view, ctx.clock.now())


async def _live(ctx: KeyRoutes, principal: Principal, key_hash: str) -> KeyRecord:
    """The key by hash (or id); a revoked key is "deleted" to this API, so a 404."""
    record = await ctx.keys.get(principal, check_key_ref(key_hash))
    if effective_status(record, ctx.clock.now()) is KeyStatus.REVOKED:
        raise NotFoundError("no such key", code="KEY_NOT_FOUND")
    return record


@route("GET", "/keys")
async def list_keys(
    request: Request,
    principal: PrincipalDep,
    ctx: KeyRoutesDep,
    include_disabled: bool = False,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> dict[str, Any]:
    """List keys, 100 per page, oldest first."""
    reject_unknown_params(request, {"include_disabled", "offset"})
    now = ctx.clock.now()
    page = await live_keys_page(
        ctx.keys,
        principal,
        now=now,
        include_disabled=include_disabled,
        offset=offset,
        size=PAGE_SIZE,
    )
    views = await ctx.keys.views(principal, page.records)
    return {"data": [mapping.key_object(view, now) for view in views]}


@route("POST", "/keys", status_code=201)
async def create_key(body: KeyCreateIn, principal: KeysWriter, ctx: KeyRoutesDep) -> dict[str, Any]:
    """Create a key; ``key`` is its plaintext, shown only in this response."""
    policy = mapping.with_budget(
        {},
        limit_micros=None if body.limit is None else money.to_micros(body.limit),
        set_limit=body.limit is not None,
        reset=None if body.limit_reset is None else mapping.reset_of(body.limit_reset),
    )
    issued = await ctx.keys.create(
        principal,
        NewKey(
            name=body.name,
            label=body.label,
            description=body.description,
            metadata=mapping.with_include_byok({}, body.include_byok_in_limit),
            expires_at=body.expires_at,
            policy=policy,
        ),
    )
    if not may_read(principal, "keys:read"):
        # Write does not imply read: a write-only caller learns the key and its hash only.
        digest = issued.record.hash
        return {"data": {"hash": digest}, "key": issued.secret, "hash": digest}
    data = await _object(ctx, principal, issued.record)
    # OpenRouter clients read data and key; AnyAPI's examples read key and hash.
    return {"data": data, "key": issued.secret, "hash": issued.record.hash}


@route("GET", "/keys/{key_hash}")
async def get_key(key_hash: str, principal: PrincipalDep, ctx: KeyRoutesDep) -> dict[str, Any]:
    """One key by its hash."""
    data = await _object(ctx, principal, await _live(ctx, principal, key_hash))
    # OpenRouter clients read data; AnyAPI's examples read usage, limit, last_used at the top.
    return {**data, "data": data}


@route("PATCH", "/keys/{key_hash}")
async def update_key(
    key_hash: str, body: KeyPatchIn, principal: KeysWriter, ctx: KeyRoutesDep
) -> dict[str, Any]:
    """Change a key's name, disabled state, limit, limit reset or BYOK flag."""
    record = await _live(ctx, principal, key_hash)
    given = body.model_fields_set
    changes: dict[str, Any] = {}
    if body.name is not None:
        changes["name"] = body.name
    if "limit" in given or "limit_reset" in given:
        changes["policy"] = mapping.with_budget(
            record.policy,
            limit_micros=None if body.limit is None else money.to_micros(body.limit),
            set_limit="limit" in given,
            reset=mapping.reset_of(body.limit_reset) if "limit_reset" in given else None,
        )
    if body.include_byok_in_limit is not None:
        changes["metadata"] = mapping.with_include_byok(record.metadata, body.include_byok_in_limit)
    if changes:
        record = await ctx.keys.update(principal, record.id, changes)
    if body.disabled is True:
        record = await ctx.keys.disable(principal, record.id, None, None)
    elif body.disabled is False:
        record = await ctx.keys.enable(principal, record.id)
    return {"data": await _object(ctx, principal, record)}


@route("DELETE", "/keys/{key_hash}")
async def delete_key(key_hash: str, principal: PrincipalDep, ctx: KeyRoutesDep) -> dict[str, Any]:
    """Delete a key: Keyplane revokes it for good and keeps the record for audit."""
    record = await _live(ctx, principal, key_hash)
    await ctx.keys.revoke(principal, record.id, "deleted through /api/v1/keys")
    return {"deleted": True}


@route("GET", "/key")
async def current_key(
    request: Request, ctx: KeyRoutesDep, management: ManagementDep
) -> dict[str, Any]:
    """The presented key's own information: an API key's, or a management key's."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip() if scheme.lower() == "bearer" else ""
    record = await ctx.keys.presented(token) if token else None
    if record is not None:
        owner = Principal(record.id, record.org_id, record.project_id, ())
        [view] = await ctx.keys.views(owner, [record])
        return {"data": mapping.current_key_info(view, ctx.clock.now())}
    try:
        principal = await management.authenticate(token or None)
    except AuthenticationError:
        raise AuthenticationError("invalid or missing key (Authorization: Bearer ...)") from None
    return {"data": mapping.management_key_info(principal.key_id)}


add_fallback(router, render)
