"""``/v1/management-keys``: keys that drive the management API."""

from __future__ import annotations

from fastapi import APIRouter, Request

from keyplane.api.deps import ManagementKeysWriter, PrincipalDep, RuntimeDep
from keyplane.api.params import (
    CursorParam,
    LimitParam,
    check_id,
    reject_unknown_params,
)
from keyplane.api.schemas import (
    ManagementKeyCreate,
    ManagementKeyCreated,
    ManagementKeyEnvelope,
    ManagementKeyOut,
    ManagementKeyPage,
)

router = APIRouter(prefix="/v1/management-keys", tags=["management keys"])


@router.post("", status_code=201, response_model=ManagementKeyCreated)
async def create_management_key(
    body: ManagementKeyCreate, principal: ManagementKeysWriter, runtime: RuntimeDep
) -> ManagementKeyCreated:
    """Create a management key with at most the caller's own scopes; shown only once."""
    issued = await runtime.management.create(
        principal, body.name, tuple(dict.fromkeys(body.scopes)), body.project_id
    )
    return ManagementKeyCreated(key=issued.secret, data=ManagementKeyOut.of(issued.record))


@router.get("", response_model=ManagementKeyPage)
async def list_management_keys(
    request: Request,
    principal: PrincipalDep,
    runtime: RuntimeDep,
    cursor: CursorParam = None,
    limit: LimitParam = 50,
) -> ManagementKeyPage:
    """List management keys in creation order."""
    reject_unknown_params(request, {"cursor", "limit"})
    records = await runtime.management.list(principal, cursor, limit + 1)
    page = records[:limit]
    has_more = len(records) > limit
    return ManagementKeyPage(
        data=[ManagementKeyOut.of(r) for r in page],
        next_cursor=page[-1].id if has_more and page else None,
        has_more=has_more,
    )


@router.get("/{key_id}", response_model=ManagementKeyEnvelope)
async def get_management_key(
    key_id: str, principal: PrincipalDep, runtime: RuntimeDep
) -> ManagementKeyEnvelope:
    """Fetch one management key."""
    record = await runtime.management.get(principal, check_id(key_id, "mk", "management key"))
    return ManagementKeyEnvelope(data=ManagementKeyOut.of(record))


@router.delete("/{key_id}", response_model=ManagementKeyEnvelope)
async def revoke_management_key(
    key_id: str, principal: PrincipalDep, runtime: RuntimeDep
) -> ManagementKeyEnvelope:
    """Revoke a management key; it stops working at once."""
    record = await runtime.management.revoke(principal, check_id(key_id, "mk", "management key"))
    return ManagementKeyEnvelope(data=ManagementKeyOut.of(record))
