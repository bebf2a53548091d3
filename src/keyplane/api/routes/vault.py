"""``/v1/vault``: upstream provider credentials and their leases."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request

from keyplane.api.deps import PrincipalDep, RuntimeDep, VaultLeaser, VaultWriter
from keyplane.api.params import (
    CursorParam,
    LimitParam,
    check_query_text,
    metadata_filters,
    reject_unknown_params,
)
from keyplane.api.problems import PROBLEM_RESPONSES
from keyplane.api.vault_schemas import (
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
from keyplane.domain.vault import CredentialStatus
from keyplane.errors import NotFoundError, ValidationError
from keyplane.services.vault import LeaseRequest, check_provider
from keyplane.store.vault import CredentialFilter

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


def _tags(values: list[str] | None) -> tuple[str, ...]:
    """``tags=a,b`` and ``tags=a&tags=b`` both mean: has a and b."""
    tags = [part.strip() for value in values or [] for part in value.split(",") if part.strip()]
    try:
        return tuple(validation.check_tags(tags))
    except ValueError as exc:
        raise ValidationError(f"tags: {exc}", code="INVALID_FILTER") from None


@router.post("/credentials", status_code=201, response_model=CredentialEnvelope)
async def add_credential(
    body: CredentialCreate, principal: VaultWriter, runtime: RuntimeDep
) -> CredentialEnvelope:
    """Seal and store an upstream credential; its secret is never shown again."""
    record = await runtime.vault.add(principal, body.to_new())
    return CredentialEnvelope(data=CredentialOut.of(await runtime.vault.get(principal, record.id)))


@router.post("/credentials/bulk", status_code=201, response_model=CredentialList)
async def add_credentials(
    body: CredentialBulkCreate, principal: VaultWriter, runtime: RuntimeDep
) -> CredentialList:
    """Add many credentials in one transaction: all of them or, on any error, none."""
    records = await runtime.vault.add_many(principal, [item.to_new() for item in body.credentials])
    now = runtime.clock.now()
    return CredentialList(
        data=[
            CredentialOut.of(runtime.vault.stats_of(record, 0, now))  # new: no leases yet
            for record in records
        ]
    )


@router.get("/credentials", response_model=CredentialPage)
async def list_credentials(
    request: Request,
    principal: PrincipalDep,
    runtime: RuntimeDep,
    provider: Annotated[str | None, Query(max_length=64)] = None,
    environment: Annotated[str | None, Query(max_length=32)] = None,
    tags: Annotated[list[str] | None, Query(max_length=50)] = None,
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
    items = await runtime.vault.list(principal, filters, cursor, limit + 1)
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


@router.get("/credentials/{credential_id}", response_model=CredentialEnvelope)
async def get_credential(
    credential_id: str, principal: PrincipalDep, runtime: RuntimeDep
) -> CredentialEnvelope:
    """One credential, its secret masked."""
    stats = await runtime.vault.get(principal, _credential_id(credential_id))
    return CredentialEnvelope(data=CredentialOut.of(stats))


@router.get("/credentials/{credential_id}/stats", response_model=CredentialStatsOut)
async def credential_stats(
    credential_id: str, principal: PrincipalDep, runtime: RuntimeDep
) -> CredentialStatsOut:
    """Daily and monthly use and what remains, live leases."""
    return CredentialStatsOut.of(await runtime.vault.get(principal, _credential_id(credential_id)))


@router.patch("/credentials/{credential_id}", response_model=CredentialEnvelope)
async def update_credential(
    credential_id: str, body: CredentialUpdate, principal: VaultWriter, runtime: RuntimeDep
) -> CredentialEnvelope:
    """Change fields; absent ones stay, a null limit means unlimited."""
    changes: dict[str, Any] = body.model_dump(exclude_unset=True)
    for name in ("provider", "alias", "secret", "tags", "metadata", "weight", "status"):
        if name in changes and changes[name] is None:
            changes.pop(name)
    stats = await runtime.vault.update(principal, _credential_id(credential_id), changes)
    return CredentialEnvelope(data=CredentialOut.of(stats))


@router.delete("/credentials/{credential_id}", response_model=CredentialEnvelope)
async def delete_credential(
    credential_id: str,
    principal: PrincipalDep,
    runtime: RuntimeDep,
    hard: Annotated[bool, Query(description="erase the record instead of revoking it")] = False,
) -> CredentialEnvelope:
    """Revoke a credential (the record stays, masked), or erase it with ``hard=true``."""
    record = await runtime.vault.delete(principal, _credential_id(credential_id), hard=hard)
    return CredentialEnvelope(data=CredentialOut.of(runtime.vault.stats_of(record, 0)))


@router.get("/stats", response_model=ProviderStatsOut)
async def provider_stats(
    request: Request,
    principal: PrincipalDep,
    runtime: RuntimeDep,
    provider: Annotated[str, Query(max_length=64)],
) -> ProviderStatsOut:
    """Use and remaining allowance of a provider's credentials, in total and each."""
    reject_unknown_params(request, {"provider"})
    return ProviderStatsOut.of(await runtime.vault.provider_stats(principal, provider))


@router.post("/leases", status_code=201, response_model=LeaseOut, responses=LEASE_RESPONSES)
async def lease(body: LeaseCreate, principal: VaultLeaser, runtime: RuntimeDep) -> LeaseOut:
    """Lease a credential by strategy; the answer holds its secret until ``expires_at``."""
    taken = await runtime.vault.lease(
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
    runtime: RuntimeDep,
    body: Annotated[LeaseRelease | None, Body()] = None,
) -> LeaseReleased:
    """Give a lease back, reporting how the call went (``unauthorized`` disables the
    credential, ``rate_limited`` cools it down)."""
    report = body or LeaseRelease()
    record = await runtime.vault.release(principal, lease_id, report.outcome, report.retry_after)
    return LeaseReleased(
        lease_id=lease_id,
        credential_id=record.id,
        outcome=report.outcome,
        credential_status=record.effective_status(runtime.clock.now()),
    )
