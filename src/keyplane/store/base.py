"""The storage contract. Every backend passes ``tests/store/test_contract.py``."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from keyplane.domain.keys import Environment, KeyRecord, KeyStatus
from keyplane.domain.tenancy import ManagementKeyRecord, Organization, Project

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


class Store(Protocol):
    """Durable state. Writes are transactions committed before the method returns."""

    async def ensure_default_tenancy(self, now: datetime) -> tuple[Organization, Project]:
        """Create the default organization and project once; return them."""
        ...

    async def create_project(self, project: Project) -> Project: ...

    async def get_project(self, org_id: str, project_id: str) -> Project | None: ...

    async def list_projects(self, org_id: str) -> list[Project]: ...

    async def create_key(self, record: KeyRecord) -> KeyRecord:
        """Insert a key and its current secret hash."""
        ...

    async def get_key(self, org_id: str, id_or_hash: str) -> KeyRecord | None:
        """A key by id or by the hash of its current secret, within ``org_id``."""
        ...

    async def find_by_secret(self, secret_hash: str) -> SecretMatch | None:
        """The key a presented secret belongs to (current or in its grace period)."""
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

    async def ping(self) -> None:
        """Raise StorageError when the database cannot answer."""
        ...

    async def close(self) -> None: ...
