"""The upstream credential vault: store sealed provider keys and lease them out.

Secrets are sealed with the operator's master key (:mod:`keyplane.domain.envelope`) bound to
their row, before they reach the store; they are opened only to hand out a lease, inside the
lease's transaction, and never logged, echoed or returned by list/get (a hint of the first and
last characters is kept instead).

Leasing rules (capacity, strategies, refusals) are in :mod:`keyplane.domain.vault`; their
atomicity across instances is the store's (:mod:`keyplane.store.vault`).

Project binding: a credential belongs to a project or (``project_id`` None) to the whole
organization. A project-bound management key reaches its project's credentials and the
org-wide ones the operator shared with projects (``shared_with_projects``), nothing else:
every read, lease and release passes the caller's project to the store, which makes it a
condition of the statements themselves (``CredentialFilter.seen_from_project``), and what is
out of reach answers exactly as what does not exist.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from keyplane.domain import envelope, ids, validation
from keyplane.domain.changes import Journal, diff
from keyplane.domain.clock import Clock
from keyplane.domain.envelope import Keyring
from keyplane.domain.tenancy import Principal
from keyplane.domain.vault import (
    DEFAULT_COOLDOWN,
    DEFAULT_LEASE_TTL,
    MAX_COOLDOWN,
    MAX_LEASE_TTL,
    Choice,
    CredentialRecord,
    CredentialStatus,
    Outcome,
    Refusal,
    Strategy,
    mask_secret,
    normalize_provider,
)
from keyplane.errors import (
    AllAtMaxConcurrencyError,
    AllRateLimitedError,
    ConflictError,
    LeaseRefusedError,
    NoCredentialError,
    NotFoundError,
    PermissionDeniedError,
    StorageError,
    ValidationError,
    VaultNotConfiguredError,
)
from keyplane.metrics import VAULT_LEASES, VAULT_RELEASES
from keyplane.services.authz import require_scope
from keyplane.store.vault_base import CredentialFilter, Lease, LeaseAsk, ReleaseScope, VaultStore

MAX_SECRET_LENGTH = 8192
MAX_LIMIT = 2**53 - 1
MAX_WEIGHT = 1_000_000
MAX_BULK = 100  # and the request body limit (64 KiB by default) applies
ENVIRONMENT_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,31}$"
#: Most lease and release requests one transaction takes (keeps its IN lists small).
MAX_LEASE_BATCH = 128

log = logging.getLogger(__name__)


_REFUSALS: dict[Refusal, tuple[type[LeaseRefusedError], str]] = {
    Refusal.NO_CREDENTIAL: (
        NoCredentialError,
        "no active credential with allowance left matches",
    ),
    Refusal.ALL_RATE_LIMITED: (
        AllRateLimitedError,
        "every matching credential is cooling down after a rate limit",
    ),
    Refusal.ALL_AT_MAX_CONCURRENCY: (
        AllAtMaxConcurrencyError,
        "every matching credential is at its maximum of concurrent leases",
    ),
}


@dataclass(frozen=True, slots=True)
class NewCredential:
    """What a caller gives to add a credential. ``None`` limits mean unlimited; 0 blocks."""

    provider: str
    alias: str
    secret: str
    environment: str | None = None
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    weight: int = 1
    daily_limit: int | None = None
    monthly_limit: int | None = None
    max_concurrent: int | None = None
    #: ``None``: org-wide. Project-bound keys reach it only when ``shared_with_projects``.
    project_id: str | None = None
    shared_with_projects: bool = False


@dataclass(frozen=True, slots=True)
class LeaseRequest:
    provider: str
    environment: str | None = None
    tags: tuple[str, ...] = ()
    #: Dot paths to expected values: ``{"billing.tier": "enterprise"}``.
    metadata_filter: Mapping[str, str | int | float | bool] = field(default_factory=dict)
    ttl: timedelta = DEFAULT_LEASE_TTL
    #: ``None``: the vault's configured default.
    strategy: Strategy | None = None


@dataclass(frozen=True, slots=True)
class CredentialStats:
    """Use of one credential in the current UTC day and month."""

    record: CredentialRecord
    live_leases: int
    status: CredentialStatus
    has_capacity: bool
    daily_used: int
    daily_remaining: int | None
    monthly_used: int
    monthly_remaining: int | None


@dataclass(frozen=True, slots=True)
class ProviderStats:
    """Totals over a provider's credentials that are not revoked."""

    provider: str
    credentials: int
    with_capacity: int
    live_leases: int
    daily_used: int
    #: ``None`` when any credential is unlimited.
    daily_remaining: int | None
    monthly_used: int
    monthly_remaining: int | None
    items: list[CredentialStats]


@dataclass(slots=True)
class _Pending:
    """A queued lease (``ask``) or ``ok`` release (``lease_id``), and its caller's future."""

    #: Organization and the caller's project: a release ends only leases within its reach.
    scope: ReleaseScope
    ask: LeaseAsk | None
    lease_id: str | None
    done: asyncio.Future[Any]


class _LeaseBatcher:
    """Group commit of leases and ``ok`` releases.

    Requests queue while a transaction is being written; the next transaction takes all of
    them (up to :data:`MAX_LEASE_BATCH`): the leases of the first (organization, filter) in
    the queue, then every queued release, in one transaction (so one commit, one fsync on
    SQLite, for the lot); leases with other filters follow in transactions of their own (one
    lock set per transaction, in id order, so instances never deadlock). Each caller is
    answered only once its transaction has committed, so an acknowledged lease or release is
    durable, and the store decides the leases of a batch in turn under the credential locks,
    so every limit holds exactly as with one transaction per lease.

    When a batch's transaction fails, each of its requests is tried again alone: a failure
    fails only the requests it belongs to. The draining task is started on demand and ends
    when the queue is empty, so there is nothing to start or stop with the service.
    """

    def __init__(self, store: VaultStore, clock: Clock, rng: random.Random | None) -> None:
        self._store = store
        self._clock = clock
        self._rng = rng
        self._queue: list[_Pending] = []
        self._task: asyncio.Task[None] | None = None
        #: Transactions written and requests they carried (for tests and benchmarks).
        self.transactions = 0
        self.requests = 0

    async def lease(self, ask: LeaseAsk) -> Lease:
        scope = (ask.org_id, ask.filters.seen_from_project)
        result: Lease = await self._submit(_Pending(scope, ask, None, self._future()))
        return result

    async def release(self, scope: ReleaseScope, lease_id: str) -> CredentialRecord:
        result: CredentialRecord = await self._submit(
            _Pending(scope, None, lease_id, self._future())
        )
        return result

    @staticmethod
    def _future() -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()

    async def _submit(self, item: _Pending) -> Any:
        self._queue.append(item)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain())
        try:
            # shield: a caller that goes away must not cancel a transaction others share.
            return await asyncio.shield(item.done)
        except asyncio.CancelledError:
            # Nobody will read its answer now; read a failure here so none is reported as
            # "never retrieved".
            item.done.add_done_callback(_retrieve)
            raise

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch = self._queue[:MAX_LEASE_BATCH]
                del self._queue[:MAX_LEASE_BATCH]
                try:
                    await self._run(batch)
                finally:
                    _fail(batch, StorageError("the lease was not processed"))
        finally:
            self._task = None
            _fail(self._queue, StorageError("the lease was not processed"))
            self._queue.clear()

    async def _run(self, batch: list[_Pending]) -> None:
        groups: dict[tuple[str, CredentialFilter], list[_Pending]] = {}
        releases: list[_Pending] = []
        for item in batch:
            if item.ask is None:
                releases.append(item)
            else:
                # The filters carry the caller's project: one lock set per reach.
                groups.setdefault((item.ask.org_id, item.ask.filters), []).append(item)
        transactions = list(groups.values()) or [[]]
        transactions[0] = transactions[0] + releases
        for items in transactions:
            await self._write(items)

    async def _write(self, items: list[_Pending]) -> None:
        asks = [item.ask for item in items if item.ask is not None]
        releases: dict[ReleaseScope, list[str]] = {}
        for item in items:
            if item.lease_id is not None:
                releases.setdefault(item.scope, []).append(item.lease_id)
        try:
            answers, released = await self._store.lease_batch(
                asks, releases, self._clock.now(), self._rng
            )
        except Exception as exc:
            if len(items) > 1:
                log.warning(
                    "lease batch of %d failed (%s): retrying one by one",
                    len(items),
                    type(exc).__name__,
                )
                for item in items:
                    await self._write([item])
            else:
                _fail(items, exc)
            return
        self.transactions += 1
        self.requests += len(items)
        answer_of = iter(answers)
        ended: set[str] = set()
        for item in items:
            if item.ask is not None:
                answer = next(answer_of)
                if item.done.done():
                    continue
                if isinstance(answer, Lease):
                    item.done.set_result(answer)
                elif isinstance(answer, Choice):
                    item.done.set_exception(_refused(answer))
                else:
                    item.done.set_exception(answer)
            elif item.done.done():
                continue
            elif item.lease_id in released and item.lease_id not in ended:
                # Once: a second release of the same lease in the batch finds it gone.
                ended.add(item.lease_id)
                item.done.set_result(released[item.lease_id])
            else:
                item.done.set_exception(NotFoundError("no such lease", code="LEASE_NOT_FOUND"))


def _retrieve(done: asyncio.Future[Any]) -> None:
    if not done.cancelled():
        done.exception()


def _fail(items: Sequence[_Pending], exc: BaseException) -> None:
    for item in items:
        if not item.done.done():
            item.done.set_exception(exc)


class VaultService:
    """Use cases of the vault, for the API, the CLI and in-process callers."""

    def __init__(
        self,
        store: VaultStore,
        keyring: Keyring | None,
        clock: Clock,
        rng: random.Random | None = None,
        default_strategy: Strategy = Strategy.ROUND_ROBIN,
    ) -> None:
        self._store = store
        self._keyring = keyring
        self._clock = clock
        self._rng = rng
        self.default_strategy = default_strategy
        self._batcher = _LeaseBatcher(store, clock, rng)

    @property
    def configured(self) -> bool:
        return self._keyring is not None

    def _ring(self) -> Keyring:
        if self._keyring is None:
            raise VaultNotConfiguredError(
                "the vault has no master key: set KEYPLANE_VAULT_KEY (base64 of 32 random "
                "bytes) or KEYPLANE_VAULT_KEY_FILE and restart"
            )
        return self._keyring

    # -- credentials ------------------------------------------------------------------------

    async def add(self, principal: Principal, new: NewCredential) -> CredentialRecord:
        """Seal and store one credential."""
        [record] = await self.add_many(principal, [new])
        return record

    async def add_many(
        self, principal: Principal, items: Sequence[NewCredential]
    ) -> list[CredentialRecord]:
        """Seal and store credentials in one transaction: all of them or none."""
        _require_writer(principal)
        if not 1 <= len(items) <= MAX_BULK:
            raise ValidationError(f"add 1-{MAX_BULK} credentials at a time")
        ring = self._ring()
        now = self._clock.now()
        for project_id in sorted({item.project_id for item in items if item.project_id}):
            await self._check_project(principal.org_id, project_id)
        records = []
        for index, item in enumerate(items):
            try:
                records.append(self._new_record(ring, principal.org_id, item, now))
            except ValidationError as exc:
                if len(items) == 1:
                    raise
                raise ValidationError(f"credential {index}: {exc.message}", code=exc.code) from None
        journal = Journal(principal.actor, now)
        for record in records:  # one entry per credential, even in a bulk add
            _record(journal, "vault.credential.created", record, _described(record))
        await self._store.create_credentials(records, journal)
        return records

    def _new_record(
        self, ring: Keyring, org_id: str, new: NewCredential, now: datetime
    ) -> CredentialRecord:
        provider = check_provider(new.provider)
        secret = check_secret(new.secret)
        _check_fields(new.alias, new.environment, new.tags, new.metadata)
        _check_numbers(new.weight, new.daily_limit, new.monthly_limit, new.max_concurrent)
        credential_id = ids.new_id("cred")
        sealed = envelope.seal(ring, secret, envelope.credential_aad(org_id, credential_id))
        return CredentialRecord(
            id=credential_id,
            org_id=org_id,
            provider=provider,
            alias=new.alias,
            sealed_secret=sealed,
            master_key_id=envelope.token_key_id(sealed),
            secret_hint=mask_secret(secret),
            environment=new.environment,
            tags=tuple(validation.check_tags(list(new.tags))),
            metadata=new.metadata,
            weight=new.weight,
            daily_limit=new.daily_limit,
            monthly_limit=new.monthly_limit,
            max_concurrent=new.max_concurrent,
            project_id=new.project_id,
            shared_with_projects=new.shared_with_projects,
            status=CredentialStatus.ACTIVE,
            created_at=now,
            updated_at=now,
        )

    async def get(self, principal: Principal, credential_id: str) -> CredentialStats:
        require_scope(principal, "vault:read")
        record = await self._find(principal, credential_id)
        live = await self._store.live_leases([record.id], self._clock.now())
        return self.stats_of(record, live.get(record.id, 0))

    async def reveal(self, principal: Principal, credential_id: str) -> str:
        """The plaintext secret of a credential, outside a lease.

        For in-process callers only (seed 002's ``get_key(decrypt=True)``): it needs the
        ``vault:reveal`` scope, which no management key is given and no route asks for, so
        the server never hands a secret out except in a lease.
        """
        require_scope(principal, "vault:reveal")
        ring = self._ring()
        record = await self._find(principal, credential_id)
        return envelope.unseal(
            ring, record.sealed_secret, envelope.credential_aad(record.org_id, record.id)
        )

    async def list(
        self, principal: Principal, filters: CredentialFilter, after: str | None, limit: int
    ) -> list[CredentialStats]:
        require_scope(principal, "vault:read")
        now = self._clock.now()
        filters = _reach(principal, filters)
        rows = await self._store.list_credentials(principal.org_id, filters, now, after, limit)
        return [self.stats_of(record, live, now) for record, live in rows]

    async def update(
        self, principal: Principal, credential_id: str, changes: Mapping[str, Any]
    ) -> CredentialStats:
        """Change fields; ``secret`` is sealed again, ``status`` may be active or disabled."""
        _require_writer(principal)
        now = self._clock.now()
        changes = dict(changes)
        sealed: dict[str, Any] = {}
        if "secret" in changes:
            secret = check_secret(changes.pop("secret"))
            ring = self._ring()
            token = envelope.seal(
                ring, secret, envelope.credential_aad(principal.org_id, credential_id)
            )
            sealed = {
                "sealed_secret": token,
                "master_key_id": envelope.token_key_id(token),
                "secret_hint": mask_secret(secret),
            }
        if "provider" in changes:
            changes["provider"] = check_provider(changes["provider"])
        if "tags" in changes:
            changes["tags"] = tuple(validation.check_tags(list(changes["tags"])))
        if changes.get("project_id") is not None:
            await self._check_project(principal.org_id, changes["project_id"])
        status = changes.pop("status", None)
        journal = Journal(principal.actor, now)

        def mutate(current: CredentialRecord) -> CredentialRecord:
            updated = _updated(current)
            changed = diff(_described(current), _described(updated))
            if sealed:
                changed["secret"] = {"from": "(sealed)", "to": "(sealed, replaced)"}
            changed.pop("status", None)
            if changed:
                _record(journal, "vault.credential.updated", updated, {"changes": changed})
            if updated.status is not current.status:
                action = (
                    "vault.credential.enabled"
                    if updated.status is CredentialStatus.ACTIVE
                    else "vault.credential.disabled"
                )
                _record(journal, action, updated, {"reason": updated.status_reason})
            return updated

        def _updated(current: CredentialRecord) -> CredentialRecord:
            if current.status is CredentialStatus.REVOKED:
                raise ConflictError("the credential is revoked", code="CREDENTIAL_REVOKED")
            updated = dataclasses.replace(current, **changes, **sealed, updated_at=now)
            _check_fields(updated.alias, updated.environment, updated.tags, updated.metadata)
            _check_numbers(
                updated.weight, updated.daily_limit, updated.monthly_limit, updated.max_concurrent
            )
            if status == CredentialStatus.ACTIVE:
                # Enabling by hand also ends a cool-down: the operator knows better.
                updated = dataclasses.replace(
                    updated, status=CredentialStatus.ACTIVE, status_reason=None, cooldown_until=None
                )
            elif status == CredentialStatus.DISABLED:
                updated = dataclasses.replace(
                    updated, status=CredentialStatus.DISABLED, status_reason="disabled by hand"
                )
            elif status is not None:
                raise ValidationError(
                    "status can be set to active or disabled (DELETE revokes)",
                    code="INVALID_STATUS",
                )
            return updated

        record = await self._store.mutate_credential(
            principal.org_id, credential_id, mutate, journal
        )
        live = await self._store.live_leases([record.id], now)
        return self.stats_of(record, live.get(record.id, 0), now)

    async def delete(
        self, principal: Principal, credential_id: str, *, hard: bool = False
    ) -> CredentialRecord:
        """Revoke (soft delete: the record stays, it is never leased again) or erase."""
        _require_writer(principal)
        now = self._clock.now()
        journal = Journal(principal.actor, now)
        if hard:
            record = await self._find(principal, credential_id)
            _record(journal, "vault.credential.revoked", record, {"erased": True})
            await self._store.delete_credential(principal.org_id, credential_id, journal)
            return record

        def revoke(current: CredentialRecord) -> CredentialRecord:
            if current.status is CredentialStatus.REVOKED:
                return current
            _record(journal, "vault.credential.revoked", current, {"erased": False})
            return dataclasses.replace(
                current, status=CredentialStatus.REVOKED, revoked_at=now, updated_at=now
            )

        return await self._store.mutate_credential(principal.org_id, credential_id, revoke, journal)

    async def provider_stats(self, principal: Principal, provider: str) -> ProviderStats:
        require_scope(principal, "vault:read")
        name = check_provider(provider)
        now = self._clock.now()
        items: list[CredentialStats] = []
        after: str | None = None
        while True:
            rows = await self._store.list_credentials(
                principal.org_id,
                _reach(principal, CredentialFilter(provider=name)),
                now,
                after,
                500,
            )
            items.extend(
                self.stats_of(r, live, now)
                for r, live in rows
                if r.status is not CredentialStatus.REVOKED
            )
            if len(rows) < 500:
                break
            after = rows[-1][0].id
        return ProviderStats(
            provider=name,
            credentials=len(items),
            with_capacity=sum(1 for s in items if s.has_capacity),
            live_leases=sum(s.live_leases for s in items),
            daily_used=sum(s.daily_used for s in items),
            daily_remaining=_total([s.daily_remaining for s in items]),
            monthly_used=sum(s.monthly_used for s in items),
            monthly_remaining=_total([s.monthly_remaining for s in items]),
            items=items,
        )

    # -- leases -----------------------------------------------------------------------------

    async def lease(self, principal: Principal, request: LeaseRequest) -> Lease:
        """Lease a credential by strategy, or raise a LeaseRefusedError saying why none.

        Returns once the lease is committed (see :class:`_LeaseBatcher`: concurrent leases
        and releases share a transaction).
        """
        require_scope(principal, "vault:lease")
        ring = self._ring()
        if not timedelta(seconds=1) <= request.ttl <= MAX_LEASE_TTL:
            raise ValidationError(
                f"ttl_seconds must be 1-{int(MAX_LEASE_TTL.total_seconds())}", code="INVALID_TTL"
            )
        filters = CredentialFilter(
            provider=check_provider(request.provider),
            environment=request.environment,
            tags=tuple(validation.check_tags(list(request.tags))),
            metadata=metadata_filter(request.metadata_filter),
            # Part of the locking statement: the strategy picks among reachable ones only.
            seen_from_project=principal.project_id,
        )
        org_id = principal.org_id

        def open_secret(record: CredentialRecord) -> str:
            return envelope.unseal(
                ring, record.sealed_secret, envelope.credential_aad(org_id, record.id)
            )

        ask = LeaseAsk(
            org_id, filters, request.strategy or self.default_strategy, request.ttl, open_secret
        )
        try:
            lease = await self._batcher.lease(ask)
        except LeaseRefusedError as exc:
            VAULT_LEASES.labels(exc.code).inc()
            raise
        VAULT_LEASES.labels("granted").inc()
        return lease

    async def release(
        self,
        principal: Principal,
        lease_id: str,
        outcome: Outcome = Outcome.OK,
        retry_after: int | None = None,
    ) -> CredentialRecord:
        """End a lease. ``unauthorized`` disables its credential; ``rate_limited`` cools it
        down for ``retry_after`` seconds (60 by default), so the next lease picks another."""
        require_scope(principal, "vault:lease")
        if not ids.looks_like_id(lease_id, "lease"):
            raise NotFoundError("no such lease", code="LEASE_NOT_FOUND")
        cooldown = DEFAULT_COOLDOWN if retry_after is None else timedelta(seconds=retry_after)
        if not timedelta(0) <= cooldown <= MAX_COOLDOWN:
            raise ValidationError(
                f"retry_after must be 0-{int(MAX_COOLDOWN.total_seconds())} seconds",
                code="INVALID_RETRY_AFTER",
            )
        now = self._clock.now()
        journal = Journal(principal.actor, now)

        def apply(current: CredentialRecord) -> CredentialRecord:
            if current.status is not CredentialStatus.ACTIVE:
                return current
            if outcome is Outcome.UNAUTHORIZED:
                reason = "the provider refused it (unauthorized outcome reported)"
                details = {"reason": reason, "outcome": outcome.value, "lease_id": lease_id}
                _record(journal, "vault.credential.disabled", current, details)
                return dataclasses.replace(
                    current,
                    status=CredentialStatus.DISABLED,
                    status_reason=reason,
                    updated_at=now,
                )
            until = now + cooldown
            if current.cooldown_until is not None and current.cooldown_until > until:
                return current
            return dataclasses.replace(current, cooldown_until=until, updated_at=now)

        # A lease of a credential out of the caller's reach is "no such lease": its outcome
        # never touches that credential.
        scope = (principal.org_id, principal.project_id)
        if outcome is Outcome.OK:
            # The common case: batched with concurrent leases and releases.
            released = await self._batcher.release(scope, lease_id)
        else:
            released = await self._store.release(scope, lease_id, apply, journal)
        VAULT_RELEASES.labels(outcome.value).inc()
        return released

    # -- helpers ----------------------------------------------------------------------------

    async def _find(self, principal: Principal, credential_id: str) -> CredentialRecord:
        record = None
        if ids.looks_like_id(credential_id, "cred"):
            record = await self._store.get_credential(
                principal.org_id, credential_id, principal.project_id
            )
        if record is None:
            # Also when it exists out of the caller's reach: the same answer, nothing leaks.
            raise NotFoundError("no such credential", code="CREDENTIAL_NOT_FOUND")
        return record

    async def _check_project(self, org_id: str, project_id: str) -> None:
        if not await self._store.has_project(org_id, project_id):
            raise NotFoundError("no such project", code="PROJECT_NOT_FOUND")

    def stats_of(
        self, record: CredentialRecord, live: int, now: datetime | None = None
    ) -> CredentialStats:
        now = now or self._clock.now()
        return CredentialStats(
            record=record,
            live_leases=live,
            status=record.effective_status(now),
            has_capacity=record.has_capacity(live, now),
            daily_used=record.daily_used(now),
            daily_remaining=record.daily_remaining(now),
            monthly_used=record.monthly_used(now),
            monthly_remaining=record.monthly_remaining(now),
        )


def configured_strategy(settings: object) -> Strategy:
    """The default lease strategy: ``KEYPLANE_VAULT_STRATEGY`` once the settings carry a
    ``vault_strategy``, round robin until then (a lease request may always name its own)."""
    return Strategy(getattr(settings, "vault_strategy", None) or Strategy.ROUND_ROBIN)


def _require_writer(principal: Principal) -> None:
    require_scope(principal, "vault:write")
    if principal.project_id is not None:
        # Upstream credentials belong to the organization, like plans.
        raise PermissionDeniedError(
            "only organization-wide management keys can change vault credentials"
        )


def _reach(principal: Principal, filters: CredentialFilter) -> CredentialFilter:
    """``filters`` limited to what the caller reaches (whatever they said before)."""
    return dataclasses.replace(filters, seen_from_project=principal.project_id)


def _refused(choice: Choice) -> LeaseRefusedError:
    error_type, message = _REFUSALS[choice.refusal or Refusal.NO_CREDENTIAL]
    return error_type(message, retry_after=choice.retry_after)


def _total(values: Sequence[int | None]) -> int | None:
    if any(value is None for value in values):
        return None
    return sum(value for value in values if value is not None)


def check_provider(text: str) -> str:
    try:
        return normalize_provider(text)
    except ValueError as exc:
        raise ValidationError(str(exc), code="UNKNOWN_PROVIDER") from None


def check_secret(secret: str) -> str:
    """A secret must be non-empty printable text without outer whitespace."""
    if not secret or not secret.strip():
        raise ValidationError("the secret must not be empty", code="INVALID_SECRET")
    if len(secret) > MAX_SECRET_LENGTH:
        raise ValidationError(
            f"the secret is over {MAX_SECRET_LENGTH} characters", code="INVALID_SECRET"
        )
    if secret != secret.strip():
        raise ValidationError(
            "the secret has leading or trailing whitespace", code="INVALID_SECRET"
        )
    try:
        validation.check_text(secret)
    except ValueError as exc:
        # The reason only, never the secret.
        raise ValidationError(f"the secret: {exc}", code="INVALID_SECRET") from None
    return secret


def _check_fields(
    alias: str, environment: str | None, tags: Sequence[str], metadata: dict[str, Any]
) -> None:
    try:
        if not 1 <= len(alias) <= 200 or alias != alias.strip():
            raise ValueError("alias must be 1-200 characters without outer spaces")
        validation.check_text(alias)
        if environment is not None and not re.fullmatch(ENVIRONMENT_PATTERN, environment):
            raise ValueError("environment is 1-32 lower-case letters, digits, '_', '.', '-'")
        validation.check_tags(list(tags))
        validation.check_metadata(metadata)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


def _check_numbers(
    weight: int, daily: int | None, monthly: int | None, concurrent: int | None
) -> None:
    if not 0 <= weight <= MAX_WEIGHT:
        raise ValidationError(f"weight must be 0-{MAX_WEIGHT}")
    for name, value in (("daily_limit", daily), ("monthly_limit", monthly)):
        if value is not None and not 0 <= value <= MAX_LIMIT:
            raise ValidationError(f"{name} must be 0-{MAX_LIMIT} or null (unlimited)")
    if concurrent is not None and not 0 <= concurrent <= 1_000_000:
        raise ValidationError("max_concurrent must be 0-1000000 or null (unlimited)")


def metadata_filter(
    given: Mapping[str, str | int | float | bool],
) -> tuple[tuple[tuple[str, ...], str], ...]:
    """``{"billing.tier": "enterprise"}`` as (path, text) pairs, compared like list filters."""
    if len(given) > 10:
        raise ValidationError("at most 10 metadata filters", code="INVALID_FILTER")
    pairs = []
    for dotted, value in given.items():
        try:
            path = validation.parse_metadata_path(dotted)
        except ValueError as exc:
            raise ValidationError(str(exc)[:200], code="INVALID_FILTER") from None
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str):
            text = value
        else:
            text = json.dumps(value)
        if len(text) > 200:
            raise ValidationError(
                "metadata filter values are at most 200 characters", code="INVALID_FILTER"
            )
        pairs.append((path, text))
    return tuple(pairs)


def _record(
    journal: Journal, action: str, record: CredentialRecord, details: Mapping[str, Any]
) -> None:
    journal.record(
        action,
        org_id=record.org_id,
        target_type="credential",
        target_id=record.id,
        project_id=record.project_id,
        details={"provider": record.provider, "alias": record.alias, **details},
    )


def _described(record: CredentialRecord) -> dict[str, Any]:
    """What the audit log says of a credential: never its secret, sealed or masked."""
    return {
        "provider": record.provider,
        "alias": record.alias,
        "environment": record.environment,
        "tags": record.tags,
        "metadata": record.metadata,
        "weight": record.weight,
        "daily_limit": record.daily_limit,
        "monthly_limit": record.monthly_limit,
        "max_concurrent": record.max_concurrent,
        "project_id": record.project_id,
        "shared_with_projects": record.shared_with_projects,
        "status": record.status,
        "master_key_id": record.master_key_id,
    }
