"""What the handler returns, shaped as seed 002's models (attribute names kept).

``key_value`` holds the plaintext only when the caller asked for it (``decrypt=True``, a
lease); otherwise it is the masked hint (first and last characters). ``repr`` never shows it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from keyplane.compat.api_service_handler.enums import Environment, KeyStatus, Provider
from keyplane.domain.vault import CredentialStatus
from keyplane.services.vault import CredentialStats

_STATUS = {
    CredentialStatus.ACTIVE: KeyStatus.ACTIVE,
    CredentialStatus.COOLING_DOWN: KeyStatus.RATE_LIMITED,
    CredentialStatus.DISABLED: KeyStatus.INACTIVE,
    CredentialStatus.REVOKED: KeyStatus.REVOKED,
}


def status_of(stats: CredentialStats) -> KeyStatus:
    return _STATUS[stats.status]


@dataclass(slots=True)
class APIKey:
    """One upstream key with its usage in the current UTC day and month."""

    id: str
    provider: str
    key_value: str = field(repr=False)
    alias: str | None
    status: KeyStatus
    environment: str | None
    daily_limit: int | None
    monthly_limit: int | None
    max_concurrent: int | None
    daily_usage_count: int
    monthly_usage_count: int
    total_usage_count: int
    concurrent_usage: int
    weight: int
    metadata: dict[str, Any]
    tags: list[str]
    has_capacity: bool
    last_used_at: datetime | None
    created_at: datetime
    updated_at: datetime
    priority: int = 0
    expires_at: datetime | None = None

    @property
    def is_rate_limited(self) -> bool:
        """A daily or monthly limit is reached."""
        return any(
            limit is not None and used >= limit
            for limit, used in (
                (self.daily_limit, self.daily_usage_count),
                (self.monthly_limit, self.monthly_usage_count),
            )
        )

    @property
    def is_expired(self) -> bool:
        return False

    @classmethod
    def of(cls, stats: CredentialStats, key_value: str | None = None) -> APIKey:
        record = stats.record
        return cls(
            id=record.id,
            provider=record.provider,
            key_value=record.secret_hint if key_value is None else key_value,
            alias=record.alias,
            status=status_of(stats),
            environment=record.environment,
            daily_limit=record.daily_limit,
            monthly_limit=record.monthly_limit,
            max_concurrent=record.max_concurrent,
            daily_usage_count=stats.daily_used,
            monthly_usage_count=stats.monthly_used,
            total_usage_count=record.total_count,
            concurrent_usage=stats.live_leases,
            weight=record.weight,
            metadata=dict(record.metadata),
            tags=list(record.tags),
            has_capacity=stats.has_capacity,
            last_used_at=record.last_used_at,
            created_at=record.created_at,
            updated_at=record.updated_at,
        )


@dataclass(frozen=True, slots=True)
class UsageStats:
    """Use of one key against its limits (``None`` limits and remainders: unlimited)."""

    key_id: str
    provider: str
    alias: str | None
    daily_usage_count: int
    monthly_usage_count: int
    total_usage_count: int
    concurrent_usage: int
    daily_limit: int | None
    monthly_limit: int | None
    max_concurrent: int | None
    daily_remaining: int | None
    monthly_remaining: int | None
    last_used_at: datetime | None
    status: KeyStatus

    @classmethod
    def of(cls, stats: CredentialStats) -> UsageStats:
        record = stats.record
        return cls(
            key_id=record.id,
            provider=record.provider,
            alias=record.alias,
            daily_usage_count=stats.daily_used,
            monthly_usage_count=stats.monthly_used,
            total_usage_count=record.total_count,
            concurrent_usage=stats.live_leases,
            daily_limit=record.daily_limit,
            monthly_limit=record.monthly_limit,
            max_concurrent=record.max_concurrent,
            daily_remaining=stats.daily_remaining,
            monthly_remaining=stats.monthly_remaining,
            last_used_at=record.last_used_at,
            status=status_of(stats),
        )


@dataclass(slots=True)
class BulkOperationResult:
    """How a bulk add went: ``errors`` name the failed items by index (never their keys)."""

    total: int = 0
    successful: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    created_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class LeasedKey:
    """The key ``use_key`` hands to its block: decrypted, held until the block ends."""

    id: str
    provider: str
    alias: str
    key_value: str = field(repr=False)
    environment: str | None
    lease_id: str
    expires_at: datetime


__all__ = [
    "APIKey",
    "BulkOperationResult",
    "Environment",
    "KeyStatus",
    "LeasedKey",
    "Provider",
    "UsageStats",
]
