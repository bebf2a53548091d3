"""``/v1/signing-secrets``: Standard Webhooks secrets kept sealed for the operator's customers."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request

from keyplane.api.deps import ClockDep, PrincipalDep, SigningSecretsDep, SigningSecretsWriter
from keyplane.api.params import (
    CLEAN_TEXT,
    CursorParam,
    LimitParam,
    check_id,
    check_query_text,
    reject_unknown_params,
)
from keyplane.api.schemas import Ack, AckEnvelope
from keyplane.api.signing_secret_schemas import (
    SignatureEnvelope,
    SignatureOut,
    SigningSecretCreate,
    SigningSecretCreated,
    SigningSecretEnvelope,
    SigningSecretOut,
    SigningSecretPage,
    SigningSecretRotate,
    SigningSecretSign,
)
from keyplane.domain.clock import Clock
from keyplane.domain.tenancy import Principal
from keyplane.services.authz import may_read
from keyplane.services.signing_secrets import READ, IssuedSigningSecret

router = APIRouter(prefix="/v1/signing-secrets", tags=["signing secrets"])

OwnerQuery = Annotated[
    str | None, Query(min_length=1, max_length=200, json_schema_extra=CLEAN_TEXT)
]


def _secret_id(secret_id: str) -> str:
    return check_id(secret_id, "sigsec", "signing secret")


def _issued(
    principal: Principal, issued: IssuedSigningSecret, clock: Clock
) -> SigningSecretCreated:
    if not may_read(principal, READ):
        return SigningSecretCreated(secret=issued.secret, data=Ack(id=issued.record.id))
    data = SigningSecretOut.of(issued.record, clock.now())
    return SigningSecretCreated(secret=issued.secret, data=data)


@router.post("", status_code=201, response_model=SigningSecretCreated)
async def create_signing_secret(
    body: SigningSecretCreate,
    principal: SigningSecretsWriter,
    secrets: SigningSecretsDep,
    clock: ClockDep,
) -> SigningSecretCreated:
    """Create a signing secret for an owner; the whsec_ secret is shown only once."""
    issued = await secrets.create(principal, body.owner, body.description)
    return _issued(principal, issued, clock)


@router.get("", response_model=SigningSecretPage)
async def list_signing_secrets(
    request: Request,
    principal: PrincipalDep,
    secrets: SigningSecretsDep,
    clock: ClockDep,
    owner: OwnerQuery = None,
    cursor: CursorParam = None,
    limit: LimitParam = 50,
) -> SigningSecretPage:
    """List signing secrets in creation order, one owner's with ?owner=."""
    reject_unknown_params(request, {"owner", "cursor", "limit"})
    records = await secrets.list(
        principal, owner=check_query_text("owner", owner), after=cursor, limit=limit + 1
    )
    page = records[:limit]
    has_more = len(records) > limit
    now = clock.now()
    return SigningSecretPage(
        data=[SigningSecretOut.of(record, now) for record in page],
        next_cursor=page[-1].id if has_more and page else None,
        has_more=has_more,
    )


@router.get("/{secret_id}", response_model=SigningSecretEnvelope)
async def get_signing_secret(
    secret_id: str, principal: PrincipalDep, secrets: SigningSecretsDep, clock: ClockDep
) -> SigningSecretEnvelope:
    """One signing secret's record (never the secret)."""
    record = await secrets.get(principal, _secret_id(secret_id))
    return SigningSecretEnvelope(data=SigningSecretOut.of(record, clock.now()))


@router.post("/{secret_id}/rotate", response_model=SigningSecretCreated)
async def rotate_signing_secret(
    secret_id: str,
    body: SigningSecretRotate,
    principal: SigningSecretsWriter,
    secrets: SigningSecretsDep,
    clock: ClockDep,
) -> SigningSecretCreated:
    """Replace the secret; the previous one keeps signing for overlap_seconds."""
    issued = await secrets.rotate(
        principal, _secret_id(secret_id), timedelta(seconds=body.overlap_seconds)
    )
    return _issued(principal, issued, clock)


@router.delete("/{secret_id}", response_model=SigningSecretEnvelope | AckEnvelope)
async def delete_signing_secret(
    secret_id: str, principal: SigningSecretsWriter, secrets: SigningSecretsDep, clock: ClockDep
) -> SigningSecretEnvelope | AckEnvelope:
    """Delete a signing secret; nothing signs with it any more."""
    record = await secrets.delete(principal, _secret_id(secret_id))
    if not may_read(principal, READ):
        return AckEnvelope(data=Ack(id=record.id, status="deleted"))
    return SigningSecretEnvelope(data=SigningSecretOut.of(record, clock.now()))


@router.post("/{secret_id}/sign", response_model=SignatureEnvelope)
async def sign_payload(
    secret_id: str,
    body: SigningSecretSign,
    principal: SigningSecretsWriter,
    secrets: SigningSecretsDep,
) -> SignatureEnvelope:
    """Standard Webhooks headers for a payload, signed with the owner's secret."""
    signature = await secrets.sign(
        principal,
        _secret_id(secret_id),
        body.payload,
        msg_id=body.msg_id,
        timestamp=body.timestamp,
    )
    return SignatureEnvelope(
        data=SignatureOut(
            msg_id=signature.msg_id, timestamp=signature.timestamp, headers=signature.headers
        )
    )
