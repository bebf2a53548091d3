"""``/v1/vault``: upstream provider credentials and their leases."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Request
from pydantic import Field
from starlette.convertors import StringConvertor, register_url_convertor

from keyplane.api.deps import ClockDep, PrincipalDep, VaultDep, VaultLeaser, VaultWriter
from keyplane.api.params import (
    CLEAN_TEXT,
    CursorParam,
    LimitParam,
    check_query_text,
    metadata_filters,
    reject_unknown_params,
)
from keyplane.api.problems import PROBLEM_RESPONSES
from keyplane.api.schemas import Ack, AckEnvelope, AckList
from keyplane.api.vault_schemas import (
    PROVIDER_PATTERN,
    CredentialBulkCreate,
    CredentialCreate,
    CredentialEnvelope,
    CredentialList,
    CredentialOut,
    CredentialPage,
    CredentialStatsOut,
    CredentialUpdate,
    LeaseCreate,
    LeaseOut,
    LeaseRelease,
    LeaseReleased,
    ProviderStatsOut,
)
from keyplane.domain import ids, validation
from keyplane.domain.tenancy import Principal
from keyplane.domain.vault import CredentialRecord, CredentialStatus
from keyplane.errors import NotFoundError, ValidationError
from keyplane.services.authz import may_read
from keyplane.services.vault import LeaseRequest, check_provider
from keyplane.store.vault import CredentialFilter


class _CredentialIdConvertor(StringConvertor):
    """A path segment other than ``bulk``.

    OpenAPI matches concrete paths before templated ones, so ``/credentials/bulk`` is the bulk
    route only; without this, GET or DELETE there reached ``/credentials/{credential_id}`` and
    a 405 on it listed that route's methods as well.
    """

    regex = r"(?!bulk(?:/|$))[^/]+"


register_url_convertor("credential_id", _CredentialIdConvertor())
#: ``ids.looks_like_id(value, "cred")``; any other value is a 404 (CREDENTIAL_NOT_FOUND).
CREDENTIAL_ID_PATTERN = r"^cred_[0-9a-hjkmnp-tv-z]{26}$"
CredentialIdPath = Annotated[str, Path(json_schema_extra={"pattern": CREDENTIAL_ID_PATTERN})]

router = APIRouter(prefix="/v1/vault", tags=["vault"])

#: Lease refusals, on top of the common problem responses.
LEASE_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: PROBLEM_RESPONSES[404]
    | {"description": "NO_CREDENTIAL: nothing matches or has allowance left"},
    429: PROBLEM_RESPONSES[422]
    | {"description": "ALL_RATE_LIMITED or ALL_AT_MAX_CONCURRENCY; see retry_after"},
    503: PROBLEM_RESPONSES[503] | {"description": "VAULT_NOT_CONFIGURED, or the database"},
}

_LIST_PARAMS = {"provider", "environment", "tags", "status", "has_capacity", "cursor", "limit"}


def _credential_id(value: str) -> str:
    # Anything that is not shaped like an id cannot exist: a 404 without a query.
    if ids.looks_like_id(value, "cred"):
        return value
    raise NotFoundError("no such credential", code="CREDENTIAL_NOT_FOUND")


def _tags_query_pattern() -> str:
    """``_tags`` as a pattern: comma-separated tags, each trimmed, empty parts dropped."""
    control = r"\u0000-\u001f\u007f-\u009f"
    longest = validation.MAX_TAG_LENGTH
    part = rf"\s*(?:[^,\s{control}](?:[^,{control}]{{0,{longest - 2}}}[^,\s{control}])?)?\s*"
    return f"^{part}(?:,{part})*$"


TAGS_QUERY = _tags_query_pattern()
TagsQuery = Annotated[str, Field(json_schema_extra={"pattern": TAGS_QUERY})]


def _tags(values: list[str] | None) -> tuple[str, ...]:
    """``tags=a,b`` and ``tags=a&tags=b`` both mean: has a and b."""
    tags = [part.strip() for value in values or [] for part in value.split(",") if part.strip()]
    try:
        return tuple(validation.check_tags(tags))
    except ValueError as exc:
        raise ValidationError(f"tags: {exc}", code="INVALID_FILTER") from None


def _write_only(principal: Principal) -> bool:
    """Write does not imply read: without ``vault:read`` a write answers ids and statuses."""
    return not may_read(principal, "vault:read")


def _ack(record: CredentialRecord, now: datetime) -> Ack:
    return Ack(id=record.id, status=record.effective_status(now).value)


@router.post("/credentials", status_code=201, response_model=CredentialEnvelope | AckEnvelope)
async def add_credential(
    body: CredentialCreate, principal: VaultWriter, vault: VaultDep, clock: ClockDep
) -> CredentialEnvelope | AckEnvelope:
    """Seal and store an upstream credential; its secret is never shown again."""
    record = await vault.add(principal, body.to_new())
    if _write_only(principal):
        return AckEnvelope(data=_ack(record, clock.now()))
    return CredentialEnvelope(data=CredentialOut.of(await vault.get(principal, record.id)))


@router.post("/credentials/bulk", status_code=201, response_model=CredentialList | AckList)
async def add_credentials(
    body: CredentialBulkCreate, principal: VaultWriter, vault: VaultDep, clock: ClockDep
) -> CredentialList | AckList:
    """Add many credentials in one transaction: all of them or, on any error, none."""
    records = await vault.add_many(principal, [item.to_new() for item in body.credentials])
    now = clock.now()
    if _write_only(principal):
        return AckList(data=[_ack(record, now) for record in records])
    return CredentialList(
        data=[
            CredentialOut.of(vault.stats_of(record, 0, now))  # new: no leases yet
            for record in records
        ]
    )


@router.get("/credentials", response_model=CredentialPage)
async def list_credentials(
    request: Request,
    principal: PrincipalDep,
    vault: VaultDep,
    provider: Annotated[
        str | None, Query(max_length=64, json_schema_extra={"pattern": PROVIDER_PATTERN})
    ] = None,
    environment: Annotated[str | None, Query(max_length=32, json_schema_extra=CLEAN_TEXT)] = None,
    tags: Annotated[list[TagsQuery] | None, Query(max_length=50)] = None,
    status: CredentialStatus | None = None,
    has_capacity: bool | None = None,
    cursor: CursorParam = None,
    limit: LimitParam = 50,
) -> CredentialPage:
    """List credentials in creation order. Filter by ``metadata.<dot.path>=value`` too."""
    reject_unknown_params(request, _LIST_PARAMS, metadata_filters=True)
    filters = CredentialFilter(
        provider=None if provider is None else check_provider(provider),
        environment=check_query_text("environment", environment),
        tags=_tags(tags),
        metadata=metadata_filters(request),
        status=status,
        has_capacity=has_capacity,
    )
    items = await vault.list(principal, filters, cursor, limit + 1)
    if status is not None:
        # cooling_down and active share a stored status; tell them apart by the time.
        items = [item for item in items if item.status is status]
    page = items[:limit]
    has_more = len(items) > limit
    return CredentialPage(
        data=[CredentialOut.of(item) for item in page],
        next_cursor=page[-1].record.id if has_more and page else None,
        has_more=has_more,
    )


@router.get("/credentials/{credential_id:credential_id}", response_model=CredentialEnvelope)
async def get_credential(
    credential_id: CredentialIdPath, principal: PrincipalDep, vault: VaultDep
) -> CredentialEnvelope:
    """One credential, its secret masked."""
    stats = await vault.get(principal, _credential_id(credential_id))
    return CredentialEnvelope(data=CredentialOut.of(stats))


@router.get("/credentials/{credential_id:credential_id}/stats", response_model=CredentialStatsOut)
async def credential_stats(
    credential_id: CredentialIdPath, principal: PrincipalDep, vault: VaultDep
) -> CredentialStatsOut:
    """Daily and monthly use and what remains, live leases."""
    return CredentialStatsOut.of(await vault.get(principal, _credential_id(credential_id)))


@router.patch(
    "/credentials/{credential_id:credential_id}", response_model=CredentialEnvelope | AckEnvelope
)
async def update_credential(
    credential_id: CredentialIdPath,
    body: CredentialUpdate,
    principal: VaultWriter,
    vault: VaultDep,
) -> CredentialEnvelope | AckEnvelope:
    """Change fields; absent ones stay, a null limit means unlimited."""
    changes: dict[str, Any] = body.model_dump(exclude_unset=True)
    for name in (
        "provider",
        "alias",
        "secret",
        "tags",
        "metadata",
        "weight",
        "status",
        "shared_with_projects",
    ):
        if name in changes and changes[name] is None:
            changes.pop(name)
    stats = await vault.update(principal, _credential_id(credential_id), changes)
    if _write_only(principal):
        return AckEnvelope(data=Ack(id=stats.record.id, status=stats.status.value))
    return CredentialEnvelope(data=CredentialOut.of(stats))


@router.delete(
    "/credentials/{credential_id:credential_id}", response_model=CredentialEnvelope | AckEnvelope
)
async def delete_credential(
    credential_id: CredentialIdPath,
    principal: PrincipalDep,
    vault: VaultDep,
    clock: ClockDep,
    hard: Annotated[bool, Query(description="erase the record instead of revoking it")] = False,
) -> CredentialEnvelope | AckEnvelope:
    """Revoke a credential (the record stays, masked), or erase it with ``hard=true``."""
    record = await vault.delete(principal, _credential_id(credential_id), hard=hard)
    if _write_only(principal):
        return AckEnvelope(data=_ack(record, clock.now()))
    return CredentialEnvelope(data=CredentialOut.of(vault.stats_of(record, 0)))


@router.get("/stats", response_model=ProviderStatsOut)
async def provider_stats(
    request: Request,
    principal: PrincipalDep,
    vault: VaultDep,
    provider: Annotated[str, Query(max_length=64, json_schema_extra={"pattern": PROVIDER_PATTERN})],
) -> ProviderStatsOut:
    """Use and remaining allowance of a provider's credentials, in total and each."""
    reject_unknown_params(request, {"provider"})
    return ProviderStatsOut.of(await vault.provider_stats(principal, provider))


@router.post("/leases", status_code=201, response_model=LeaseOut, responses=LEASE_RESPONSES)
async def lease(body: LeaseCreate, principal: VaultLeaser, vault: VaultDep) -> LeaseOut:
    """Lease a credential by strategy; the answer holds its secret until ``expires_at``."""
    taken = await vault.lease(
        principal,
        LeaseRequest(
            provider=body.provider,
            environment=body.environment,
            tags=tuple(body.tags),
            metadata_filter=body.metadata_filter,
            ttl=timedelta(seconds=body.ttl_seconds),
            strategy=body.strategy,
        ),
    )
    return LeaseOut.of(taken)


@router.delete("/leases/{lease_id}", response_model=LeaseReleased)
async def release(
    lease_id: str,
    principal: VaultLeaser,
    vault: VaultDep,
    clock: ClockDep,
    body: Annotated[LeaseRelease | None, Body()] = None,
) -> LeaseReleased:
    """Give a lease back, reporting how the call went (``unauthorized`` disables the
    credential, ``rate_limited`` cools it down)."""
    report = body or LeaseRelease()
    record = await vault.release(principal, lease_id, report.outcome, report.retry_after)
    return LeaseReleased(
        lease_id=lease_id,
        credential_id=record.id,
        outcome=report.outcome,
        credential_status=record.effective_status(clock.now()),
    )
