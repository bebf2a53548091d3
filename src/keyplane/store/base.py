"""The storage contract. Every backend passes ``tests/store/test_contract.py``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from keyplane.domain.keys import Environment, KeyRecord, KeyStatus
from keyplane.domain.plans import PlanRecord
from keyplane.domain.tenancy import ManagementKeyRecord, Organization, Project
from keyplane.domain.usage import Recorded, UsageEntry

#: A pure function from the current record to the new one; may raise a KeyplaneError to refuse.
KeyMutation = Callable[[KeyRecord], KeyRecord]


@dataclass(frozen=True, slots=True)
class KeyFilter:
    """Filters for listing keys; all given filters must match."""

    owner: str | None = None
    tag: str | None = None
    environment: Environment | None = None
    status: KeyStatus | None = None
    project_id: str | None = None
    name_contains: str | None = None
    #: (path segments, expected text value) pairs, from ``metadata.a.b=value``.
    metadata: Sequence[tuple[tuple[str, ...], str]] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class SecretMatch:
    """A key found by the hash of a presented secret."""

    record: KeyRecord
    #: End of the grace period when the secret was rotated out; ``None`` for the current one.
    valid_until: datetime | None
    plan_name: str | None = None
    #: The policy document of the key's plan, when it has one.
    plan_policy: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """The object a (caller, ``Idempotency-Key``) made, and a digest of the request."""

    org_id: str
    principal_id: str
    #: SHA-256 of the presented Idempotency-Key (the key itself is never stored).
    key_digest: str
    operation: str
    fingerprint: str
    object_id: str
    created_at: datetime
    #: The created object's secret, sealed (keyplane.domain.sealing); erased after the window.
    sealed_secret: str | None = None


class Store(Protocol):
    """Durable state. Writes are transactions committed before the method returns."""

    async def ensure_default_tenancy(self, now: datetime) -> tuple[Organization, Project]:
        """Create the default organization and project once; return them."""
        ...

    async def create_organization(self, name: str, now: datetime) -> tuple[Organization, Project]:
        """A new organization with its own default project, in one transaction."""
        ...

    async def default_project(self, org_id: str, now: datetime) -> Project:
        """The organization's default project (created if it has none yet)."""
        ...

    async def create_project(self, project: Project) -> Project: ...

    async def get_project(self, org_id: str, project_id: str) -> Project | None: ...

    async def list_projects(self, org_id: str) -> list[Project]: ...

    async def create_key(
        self, record: KeyRecord, idempotency: IdempotencyRecord | None = None
    ) -> KeyRecord:
        """Insert a key and its current secret hash, and its idempotency record if any.

        Raises ConflictError when that idempotency record exists already (a concurrent retry).
        """
        ...

    async def get_idempotency(
        self, org_id: str, principal_id: str, key_digest: str
    ) -> IdempotencyRecord | None:
        """What an earlier request with this Idempotency-Key made, if any."""
        ...

    async def erase_idempotency_secrets(
        self, created_before: datetime, org_id: str | None = None, principal_id: str | None = None
    ) -> int:
        """Erase the sealed secrets of records made before ``created_before``; count them.

        Narrowed to one caller's records when ``org_id`` and ``principal_id`` are given. The
        records stay: a late retry must still be recognised, and refused.
        """
        ...

    async def get_key(self, org_id: str, id_or_hash: str) -> KeyRecord | None:
        """A key by id or by the hash of its current secret, within ``org_id``."""
        ...

    async def find_by_secret(self, secret_hash: str) -> SecretMatch | None:
        """The key a presented secret belongs to (current or in its grace period)."""
        ...

    async def find_by_id(self, key_id: str) -> SecretMatch | None:
        """A key by id, with its plan, in any organization (the caller checks tenancy)."""
        ...

    async def list_keys(
        self, org_id: str, filters: KeyFilter, now: datetime, after: str | None, limit: int
    ) -> list[KeyRecord]:
        """Keys in id (creation) order, after the cursor ``after``."""
        ...

    async def mutate_key(self, org_id: str, key_id: str, mutation: KeyMutation) -> KeyRecord:
        """Apply ``mutation`` to the locked current record atomically; NotFoundError if absent."""
        ...

    async def rotate_key(
        self, org_id: str, key_id: str, mutation: KeyMutation, grace_until: datetime
    ) -> tuple[KeyRecord, list[str]]:
        """Install the new secret hash that ``mutation`` sets; end the old one at ``grace_until``.

        Returns the new record and the hashes whose validity changed (for cache eviction).
        """
        ...

    async def touch_keys(self, last_used: Mapping[str, datetime]) -> None:
        """Advance ``last_used_at`` of many keys in one transaction (never moves it back)."""
        ...

    async def touch_management_keys(self, last_used: Mapping[str, datetime]) -> None:
        """Advance ``last_used_at`` of many management keys (never moves it back)."""
        ...

    async def create_management_key(self, record: ManagementKeyRecord) -> ManagementKeyRecord: ...

    async def find_management_key(self, secret_hash: str) -> ManagementKeyRecord | None: ...

    async def get_management_key(self, org_id: str, key_id: str) -> ManagementKeyRecord | None: ...

    async def list_management_keys(
        self, org_id: str, after: str | None, limit: int, project_id: str | None = None
    ) -> list[ManagementKeyRecord]:
        """Management keys in id order; only those bound to ``project_id`` when it is given."""
        ...

    async def revoke_management_key(
        self, org_id: str, key_id: str, now: datetime
    ) -> ManagementKeyRecord: ...

    async def count_management_keys(self) -> int: ...

    async def create_plan(self, plan: PlanRecord) -> PlanRecord: ...

    async def get_plan(self, org_id: str, id_or_name: str) -> PlanRecord | None: ...

    async def list_plans(self, org_id: str) -> list[PlanRecord]: ...

    async def update_plan(self, plan: PlanRecord) -> PlanRecord: ...

    async def delete_plan(self, org_id: str, plan_id: str) -> None:
        """Delete a plan; ConflictError ``PLAN_IN_USE`` while a key that is not revoked
        refers to it."""
        ...

    async def record_usage(
        self,
        entries: Sequence[UsageEntry],
        before_commit: Callable[[Sequence[UsageEntry]], Awaitable[None]] | None = None,
    ) -> list[Recorded]:
        """Append reports to the ledger and its rollups in one transaction, once per
        idempotency key; answer each with what happened to it. ``before_commit`` sees the new
        reports inside the transaction."""
        ...

    async def seed_spent(
        self,
        key_id: str,
        bucket: str,
        bucket_start: datetime,
        install: Callable[[dict[str, int]], Awaitable[None]],
    ) -> None:
        """Read a key's spending in a bucket by model ("" for all) and ``install`` it while
        no report of that key and bucket can commit."""
        ...

    async def usage_totals(
        self, key_ids: Sequence[str], now: datetime
    ) -> dict[str, dict[str, int]]:
        """Micro-credits spent per key in the current total/day/week/month buckets."""
        ...

    async def list_events(
        self,
        org_id: str,
        after: str | None,
        limit: int,
        subject_id: str | None = None,
        project_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Events in id order; only those about keys of ``project_id`` when it is given."""
        ...

    async def ping(self) -> None:
        """Raise StorageError when the database cannot answer."""
        ...

    async def close(self) -> None: ...
