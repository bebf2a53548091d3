"""The vault store's contract: credential filters, lease requests and answers, and the
:class:`VaultStore` protocol (implemented by ``store/vault.py`` over the shared unit of work)."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from keyplane.domain.changes import Journal
from keyplane.domain.vault import Choice, CredentialRecord, CredentialStatus, Strategy

#: A pure change of a locked credential; may raise a KeyplaneError to refuse.
CredentialMutation = Callable[[CredentialRecord], CredentialRecord]
#: Whose ``ok`` releases: (organization id, project the caller is bound to or ``None``).
ReleaseScope = tuple[str, str | None]


@dataclass(frozen=True, slots=True)
class CredentialFilter:
    """Which credentials a list or a lease considers; all given filters must match."""

    provider: str | None = None
    environment: str | None = None
    #: Every one of these tags must be on the credential.
    tags: Sequence[str] = ()
    #: (path segments, expected text value) pairs, from ``metadata.a.b=value``.
    metadata: Sequence[tuple[tuple[str, ...], str]] = field(default_factory=tuple)
    status: CredentialStatus | None = None
    #: ``True``: only those a lease could take now; ``False``: only those it could not.
    has_capacity: bool | None = None
    #: The project the caller is bound to (``None``: an org-wide caller): only credentials
    #: of that project and org-wide ones shared with projects match. Set by the service from
    #: the principal, never from request input; a condition of every selecting and locking
    #: statement, so a lease chooses among reachable credentials only.
    seen_from_project: str | None = None


@dataclass(frozen=True, slots=True)
class LeaseAsk:
    """One lease request of a batch (see :meth:`SqlVaultStore.lease_batch`)."""

    org_id: str
    filters: CredentialFilter
    strategy: Strategy
    #: The lease lasts this long from the batch's ``now``.
    ttl: timedelta
    #: Opens the chosen credential's secret; runs inside the transaction.
    open_secret: Callable[[CredentialRecord], str]


@dataclass(frozen=True, slots=True)
class Lease:
    id: str
    credential: CredentialRecord
    secret: str
    created_at: datetime
    expires_at: datetime


class VaultStore(Protocol):
    """Upstream credentials and their leases. Every write is one transaction, committed
    before the method returns; the limits of a credential (``max_concurrent``, daily,
    monthly) hold exactly across concurrent callers and instances sharing the database."""

    async def create_credentials(
        self, records: Sequence[CredentialRecord], journal: Journal | None = None
    ) -> None:
        """Insert credentials in one transaction: all of them or none (ConflictError)."""
        ...

    async def has_project(self, org_id: str, project_id: str) -> bool:
        """Whether the organization has that project."""
        ...

    async def get_credential(
        self, org_id: str, credential_id: str, seen_from_project: str | None = None
    ) -> CredentialRecord | None:
        """The credential, if it exists in ``org_id`` and a caller bound to
        ``seen_from_project`` reaches it; ``None`` otherwise (the two look the same)."""
        ...

    async def list_credentials(
        self,
        org_id: str,
        filters: CredentialFilter,
        now: datetime,
        after: str | None,
        limit: int,
    ) -> list[tuple[CredentialRecord, int]]:
        """Credentials in id order after ``after``, each with its live lease count at ``now``."""
        ...

    async def live_leases(self, credential_ids: Sequence[str], now: datetime) -> dict[str, int]:
        """Live (unexpired at ``now``) lease count per credential; absent means none."""
        ...

    async def mutate_credential(
        self,
        org_id: str,
        credential_id: str,
        mutation: CredentialMutation,
        journal: Journal | None = None,
    ) -> CredentialRecord:
        """Apply ``mutation`` to the locked record atomically (concurrent mutations take
        turns); NotFoundError when there is none."""
        ...

    async def delete_credential(
        self, org_id: str, credential_id: str, journal: Journal | None = None
    ) -> None:
        """Remove a credential and its leases for good; NotFoundError when there is none."""
        ...

    async def lease_batch(
        self,
        asks: Sequence[LeaseAsk],
        releases: Mapping[ReleaseScope, Sequence[str]],
        now: datetime,
        rng: random.Random | None = None,
    ) -> tuple[list[Lease | Choice | Exception], dict[str, CredentialRecord]]:
        """Grant leases and end ``ok`` leases in one transaction (see ``SqlVaultStore``)."""
        ...

    async def release(
        self,
        scope: ReleaseScope,
        lease_id: str,
        mutation: CredentialMutation,
        journal: Journal | None = None,
    ) -> CredentialRecord:
        """End a lease with an outcome, applying ``mutation`` to its credential first, in
        one transaction; NotFoundError when the lease is not live or not reachable."""
        ...


__all__ = [
    "CredentialFilter",
    "CredentialMutation",
    "Lease",
    "LeaseAsk",
    "ReleaseScope",
    "VaultStore",
]
