"""Request and response bodies of ``/v1/vault``. Secrets go in, never out (except a lease)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field, Strict, StringConstraints

from keyplane.api.fields import (
    METADATA_PATH_PATTERN,
    TRIMMED_PATTERN,
    Input,
    Integral,
    documented,
)
from keyplane.api.schemas import Metadata, Name, ProjectId, Tags
from keyplane.domain.vault import ACCEPTED_PROVIDER_NAMES, CredentialStatus, Outcome, Strategy
from keyplane.services.vault import (
    ENVIRONMENT_PATTERN,
    MAX_BULK,
    MAX_LIMIT,
    MAX_SECRET_LENGTH,
    MAX_WEIGHT,
    CredentialStats,
    NewCredential,
    ProviderStats,
)
from keyplane.store.vault import Lease


def _spellings(names: frozenset[str]) -> dict[str, str]:
    """For each character of ``names``, a regex class of all that lower-case to it.

    Not only the two cases: the Kelvin sign lower-cases to "k" as well.
    """
    wanted = set("".join(names))
    found: dict[str, set[str]] = {char: {char} for char in wanted}
    for other in map(chr, range(0x10000)):
        if other.lower() in found:
            found[other.lower()].add(other)
    classes = {char: "[" + "".join(map(re.escape, sorted(found[char]))) + "]" for char in wanted}
    classes["_"] = r"[_\- ]"  # "-" and a space are read as "_"
    return classes


#: ``normalize_provider`` as a pattern: a known name in any case, ``-`` or a space for ``_``,
#: outer whitespace ignored.
_CLASSES = _spellings(ACCEPTED_PROVIDER_NAMES)
PROVIDER_PATTERN = (
    r"^\s*(?:"
    + "|".join("".join(_CLASSES[char] for char in name) for name in sorted(ACCEPTED_PROVIDER_NAMES))
    + r")\s*$"
)

Provider = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64),
    Field(
        description="a known provider (case-insensitive), or 'custom'",
        json_schema_extra={"pattern": PROVIDER_PATTERN},
    ),
]
Secret = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_SECRET_LENGTH),
    Field(
        description="the provider key; write-only, never returned by list or get",
        json_schema_extra={"pattern": TRIMMED_PATTERN},
    ),
]
#: An alias: a ``Name`` without outer whitespace (the vault service's rule).
Alias = Annotated[Name, documented(pattern=TRIMMED_PATTERN)]
EnvironmentName = Annotated[str, StringConstraints(pattern=ENVIRONMENT_PATTERN)]
Count = Annotated[int, Strict(), Field(ge=0, le=MAX_LIMIT), Integral]
Weight = Annotated[int, Strict(), Field(ge=0, le=MAX_WEIGHT), Integral]
Concurrency = Annotated[int, Strict(), Field(ge=0, le=1_000_000), Integral]
FilterValue = (
    Annotated[str, StringConstraints(max_length=200)]
    | Annotated[bool, Strict()]
    | Annotated[int, Strict()]
    | Annotated[float, Strict()]
)


class CredentialCreate(Input):
    provider: Provider
    alias: Alias
    secret: Secret
    environment: EnvironmentName | None = None
    tags: Tags = Field(default_factory=list)
    metadata: Metadata = Field(default_factory=dict)
    weight: Weight = 1
    daily_limit: Count | None = Field(default=None, description="leases per UTC day; 0 blocks")
    monthly_limit: Count | None = Field(default=None, description="leases per UTC month")
    max_concurrent: Concurrency | None = Field(default=None, description="live leases at once")
    project_id: ProjectId | None = Field(
        default=None, description="the project it belongs to; null: the whole organization"
    )
    shared_with_projects: Annotated[bool, Strict()] = Field(
        default=False,
        description="org-wide only: project-bound management keys may list and lease it too",
    )

    def to_new(self) -> NewCredential:
        return NewCredential(
            provider=self.provider,
            alias=self.alias,
            secret=self.secret,
            environment=self.environment,
            tags=tuple(self.tags),
            metadata=self.metadata,
            weight=self.weight,
            daily_limit=self.daily_limit,
            monthly_limit=self.monthly_limit,
            max_concurrent=self.max_concurrent,
            project_id=self.project_id,
            shared_with_projects=self.shared_with_projects,
        )


class CredentialBulkCreate(Input):
    credentials: Annotated[list[CredentialCreate], Field(min_length=1, max_length=MAX_BULK)]


class CredentialUpdate(Input):
    provider: Provider | None = None
    alias: Alias | None = None
    secret: Secret | None = None
    environment: EnvironmentName | None = None
    tags: Tags | None = None
    metadata: Metadata | None = None
    weight: Weight | None = None
    daily_limit: Count | None = None
    monthly_limit: Count | None = None
    max_concurrent: Concurrency | None = None
    status: CredentialStatus | None = Field(
        default=None,
        description="active or disabled",
        # The service refuses the other statuses (INVALID_STATUS): DELETE revokes.
        json_schema_extra={
            "enum": [CredentialStatus.ACTIVE.value, CredentialStatus.DISABLED.value, None]
        },
    )
    project_id: ProjectId | None = Field(
        default=None, description="move it to a project; null: make it org-wide"
    )
    shared_with_projects: Annotated[bool, Strict()] | None = None


class CredentialUsage(BaseModel):
    daily_used: int
    daily_limit: int | None
    daily_remaining: int | None
    monthly_used: int
    monthly_limit: int | None
    monthly_remaining: int | None
    total: int
    live_leases: int
    max_concurrent: int | None


class CredentialOut(BaseModel):
    id: str
    provider: str
    alias: str
    secret_hint: str = Field(description="first and last characters of the secret")
    environment: str | None
    tags: list[str]
    metadata: dict[str, Any]
    weight: int
    daily_limit: int | None
    monthly_limit: int | None
    max_concurrent: int | None
    project_id: str | None = Field(description="null: org-wide")
    shared_with_projects: bool
    status: CredentialStatus
    status_reason: str | None
    cooldown_until: datetime | None
    has_capacity: bool
    usage: CredentialUsage
    master_key_id: str = Field(description="id (not material) of the master key sealing it")
    created_at: datetime
    updated_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, stats: CredentialStats) -> CredentialOut:
        r = stats.record
        return cls(
            id=r.id,
            provider=r.provider,
            alias=r.alias,
            secret_hint=r.secret_hint,
            environment=r.environment,
            tags=list(r.tags),
            metadata=r.metadata,
            weight=r.weight,
            daily_limit=r.daily_limit,
            monthly_limit=r.monthly_limit,
            max_concurrent=r.max_concurrent,
            project_id=r.project_id,
            shared_with_projects=r.shared_with_projects,
            status=stats.status,
            status_reason=r.status_reason,
            cooldown_until=(
                r.cooldown_until if stats.status is CredentialStatus.COOLING_DOWN else None
            ),
            has_capacity=stats.has_capacity,
            usage=usage_of(stats),
            master_key_id=r.master_key_id,
            created_at=r.created_at,
            updated_at=r.updated_at,
            last_used_at=r.last_used_at,
            revoked_at=r.revoked_at,
        )


def usage_of(stats: CredentialStats) -> CredentialUsage:
    r = stats.record
    return CredentialUsage(
        daily_used=stats.daily_used,
        daily_limit=r.daily_limit,
        daily_remaining=stats.daily_remaining,
        monthly_used=stats.monthly_used,
        monthly_limit=r.monthly_limit,
        monthly_remaining=stats.monthly_remaining,
        total=r.total_count,
        live_leases=stats.live_leases,
        max_concurrent=r.max_concurrent,
    )


class CredentialEnvelope(BaseModel):
    data: CredentialOut


class CredentialList(BaseModel):
    data: list[CredentialOut]


class CredentialPage(BaseModel):
    data: list[CredentialOut]
    next_cursor: str | None
    has_more: bool


class CredentialStatsOut(BaseModel):
    id: str
    alias: str
    provider: str
    status: CredentialStatus
    has_capacity: bool
    usage: CredentialUsage
    last_used_at: datetime | None

    @classmethod
    def of(cls, stats: CredentialStats) -> CredentialStatsOut:
        r = stats.record
        return cls(
            id=r.id,
            alias=r.alias,
            provider=r.provider,
            status=stats.status,
            has_capacity=stats.has_capacity,
            usage=usage_of(stats),
            last_used_at=r.last_used_at,
        )


class ProviderStatsOut(BaseModel):
    provider: str
    credentials: int
    with_capacity: int
    live_leases: int
    daily_used: int
    daily_remaining: int | None = Field(description="null when any credential is unlimited")
    monthly_used: int
    monthly_remaining: int | None
    items: list[CredentialStatsOut]

    @classmethod
    def of(cls, stats: ProviderStats) -> ProviderStatsOut:
        return cls(
            provider=stats.provider,
            credentials=stats.credentials,
            with_capacity=stats.with_capacity,
            live_leases=stats.live_leases,
            daily_used=stats.daily_used,
            daily_remaining=stats.daily_remaining,
            monthly_used=stats.monthly_used,
            monthly_remaining=stats.monthly_remaining,
            items=[CredentialStatsOut.of(item) for item in stats.items],
        )


class LeaseCreate(Input):
    provider: Provider
    environment: EnvironmentName | None = None
    tags: Tags = Field(default_factory=list)
    metadata_filter: Annotated[
        dict[str, FilterValue],
        Field(max_length=10),
        documented(propertyNames={"pattern": METADATA_PATH_PATTERN}),
    ] = Field(
        default_factory=dict, description='dot paths to values, e.g. {"billing.tier": "enterprise"}'
    )
    ttl_seconds: Annotated[int, Strict(), Field(ge=1, le=3600), Integral] = 60
    strategy: Strategy | None = Field(
        default=None, description="how to pick; the server's default (round_robin) when absent"
    )


class LeaseOut(BaseModel):
    lease_id: str
    credential_id: str
    provider: str
    alias: str
    secret: str = Field(description="the decrypted provider key, for this lease only")
    environment: str | None
    expires_at: datetime

    @classmethod
    def of(cls, lease: Lease) -> LeaseOut:
        return cls(
            lease_id=lease.id,
            credential_id=lease.credential.id,
            provider=lease.credential.provider,
            alias=lease.credential.alias,
            secret=lease.secret,
            environment=lease.credential.environment,
            expires_at=lease.expires_at,
        )


class LeaseRelease(Input):
    outcome: Outcome = Outcome.OK
    retry_after: Annotated[int, Strict(), Field(ge=0, le=86_400), Integral] | None = Field(
        default=None, description="seconds to cool down after rate_limited (default 60)"
    )


class LeaseReleased(BaseModel):
    lease_id: str
    credential_id: str
    outcome: Outcome
    credential_status: CredentialStatus
