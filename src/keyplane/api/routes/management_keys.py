"""``/v1/management-keys``: keys that drive the management API."""

from __future__ import annotations

from fastapi import APIRouter, Request

from keyplane.api.deps import ConfirmDep, ManagementDep, ManagementKeysWriter, PrincipalDep
from keyplane.api.params import (
    ConfirmWait,
    CursorParam,
    LimitParam,
    check_id,
    reject_unknown_params,
)
from keyplane.api.schemas import (
    Ack,
    AckConfirmedEnvelope,
    AckCreated,
    AckEnvelope,
    ConfirmationOut,
    ManagementKeyConfirmedEnvelope,
    ManagementKeyCreate,
    ManagementKeyCreated,
    ManagementKeyEnvelope,
    ManagementKeyOut,
    ManagementKeyPage,
)
from keyplane.domain.tenancy import ManagementKeyRecord
from keyplane.services.authz import may_read
from keyplane.services.instances import confirmed_after

router = APIRouter(prefix="/v1/management-keys", tags=["management keys"])


def _ack(record: ManagementKeyRecord) -> Ack:
    return Ack(id=record.id, status="active" if record.revoked_at is None else "revoked")


@router.post("", status_code=201, response_model=ManagementKeyCreated | AckCreated)
async def create_management_key(
    body: ManagementKeyCreate, principal: ManagementKeysWriter, management: ManagementDep
) -> ManagementKeyCreated | AckCreated:
    """Create a management key with at most the caller's own scopes; shown only once."""
    issued = await management.create(
        principal, body.name, tuple(dict.fromkeys(body.scopes)), body.project_id
    )
    if not may_read(principal, "management_keys:read"):
        return AckCreated(key=issued.secret, data=_ack(issued.record))
    return ManagementKeyCreated(key=issued.secret, data=ManagementKeyOut.of(issued.record))


@router.get("", response_model=ManagementKeyPage)
async def list_management_keys(
    request: Request,
    principal: PrincipalDep,
    management: ManagementDep,
    cursor: CursorParam = None,
    limit: LimitParam = 50,
) -> ManagementKeyPage:
    """List management keys in creation order."""
    reject_unknown_params(request, {"cursor", "limit"})
    records = await management.list(principal, cursor, limit + 1)
    page = records[:limit]
    has_more = len(records) > limit
    return ManagementKeyPage(
        data=[ManagementKeyOut.of(r) for r in page],
        next_cursor=page[-1].id if has_more and page else None,
        has_more=has_more,
    )


@router.get("/{key_id}", response_model=ManagementKeyEnvelope)
async def get_management_key(
    key_id: str, principal: PrincipalDep, management: ManagementDep
) -> ManagementKeyEnvelope:
    """Fetch one management key."""
    record = await management.get(principal, check_id(key_id, "mk", "management key"))
    return ManagementKeyEnvelope(data=ManagementKeyOut.of(record))


@router.delete(
    "/{key_id}",
    response_model=ManagementKeyConfirmedEnvelope
    | ManagementKeyEnvelope
    | AckConfirmedEnvelope
    | AckEnvelope,
)
async def revoke_management_key(
    key_id: str,
    principal: PrincipalDep,
    management: ManagementDep,
    confirm: ConfirmDep,
    wait: ConfirmWait,
) -> ManagementKeyEnvelope | AckEnvelope:
    """Revoke a management key; it stops working at once."""
    with confirmed_after(wait):
        record = await management.revoke(principal, check_id(key_id, "mk", "management key"))
    readable = may_read(principal, "management_keys:read")
    if wait is None:
        if not readable:
            return AckEnvelope(data=_ack(record))
        return ManagementKeyEnvelope(data=ManagementKeyOut.of(record))
    confirmation = ConfirmationOut.of(
        await confirm("management", record.id, (record.hash,), wait), wait
    )
    if not readable:
        return AckConfirmedEnvelope(data=_ack(record), confirmation=confirmation)
    return ManagementKeyConfirmedEnvelope(
        data=ManagementKeyOut.of(record), confirmation=confirmation
    )
