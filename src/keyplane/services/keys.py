"""Key lifecycle: issue, read, list, update, rotate, disable, enable, revoke, approve, reject.

A key created under a policy with ``require_approval`` starts ``pending`` (verify answers
``PENDING_APPROVAL``) until a management key other than its creator's, holding
``keys:approve``, approves it (or rejects it: revoked for good).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from keyplane.domain import ids, keyformat, request_signing, rollover, scopes
from keyplane.domain.changes import Journal, diff
from keyplane.domain.clock import Clock
from keyplane.domain.crypto import digests_equal, idempotency_digest, key_digest
from keyplane.domain.keys import Environment, KeyRecord, KeyStatus
from keyplane.domain.periods import Reset, period_start
from keyplane.domain.plans import PlanRecord
from keyplane.domain.policy import Policy, merge_documents, parse_policy
from keyplane.domain.sealing import (
    replay_sealing_key,
    request_signing_sealing_key,
    seal,
    unseal,
)
from keyplane.domain.tenancy import Principal, Project
from keyplane.domain.usage import BUCKET_OF_RESET
from keyplane.errors import ConflictError, NotFoundError, PermissionDeniedError, ValidationError
from keyplane.services.authz import require_scope
from keyplane.services.directory import KeyDirectory
from keyplane.services.plans import check_policy
from keyplane.store.base import IdempotencyRecord, KeyFilter
from keyplane.store.database import Database

#: Fields ``update`` may change; status changes go through their own verbs.
UPDATABLE_FIELDS = frozenset(
    {
        "name",
        "label",
        "description",
        "owner",
        "tags",
        "metadata",
        "scopes",
        "expires_at",
        "plan",
        "policy",
    }
)
MAX_GRACE_PERIOD = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class NewKey:
    name: str
    environment: Environment = Environment.LIVE
    project_id: str | None = None
    label: str | None = None
    description: str | None = None
    owner: str | None = None
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    scopes: tuple[str, ...] = ()
    expires_at: datetime | None = None
    #: A plan's name or id.
    plan: str | None = None
    #: Overrides over the plan (storage form).
    policy: dict[str, Any] = field(default_factory=dict)
    #: A row of a bulk import (``keyplane keys import``): audited as ``key.imported``.
    imported: bool = False


@dataclass(frozen=True, slots=True)
class KeyView:
    """A key as the management API shows it: with its plan, effective policy and spending."""

    record: KeyRecord
    plan: PlanRecord | None
    effective_policy: dict[str, Any]
    #: Micro-credits spent in the current total/day/week/month buckets.
    usage: dict[str, int]
    #: The budget's limit and what is left of it this period (micro-credits), if any.
    budget_limit: int | None = None
    budget_remaining: int | None = None
    budget_reset: Reset | None = None
    #: Budget rollover: what carried into this period (micro-credits); None without it.
    budget_carry: int | None = None


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A key record with its plaintext secret: returned once, at creation or rotation."""

    secret: str
    record: KeyRecord
    #: True when an idempotent retry answered the key an earlier request made.
    replayed: bool = False
    #: The request-signing secret issued with this key secret, when its policy requires
    #: signed requests (docs/signing.md); shown with the key, as rarely.
    signing_secret: str | None = None
    #: After a rotation: when the previous secret stops verifying.
    old_key_expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Idempotency:
    """A create's ``Idempotency-Key`` and the fingerprint (SHA-256) of its request body."""

    key: str
    fingerprint: str


_CREATE_KEY = "keys.create"
#: How long a retry may get a created key's secret again, unless the service is told otherwise.
DEFAULT_REPLAY_WINDOW = timedelta(minutes=10)
#: Turns "created at or before the window's start" into the store's strict "before".
_EPSILON = timedelta(microseconds=1)


class KeyService:
    def __init__(
        self,
        store: Database,
        directory: KeyDirectory,
        clock: Clock,
        server_secret: bytes,
        replay_window: timedelta = DEFAULT_REPLAY_WINDOW,
    ) -> None:
        self._store = store
        self._directory = directory
        self._clock = clock
        self._server_secret = server_secret
        self._sealing_key = replay_sealing_key(server_secret)
        self._request_signing_key = request_signing_sealing_key(server_secret)
        self._replay_window = replay_window
        #: Each organization's default project, by org id (projects are never deleted).
        self._default_projects: dict[str, Project] = {}

    async def create(
        self, principal: Principal, new: NewKey, idempotency: Idempotency | None = None
    ) -> IssuedKey:
        """Issue a key. Under an ``Idempotency-Key`` a retry answers the key made first.

        The secret is always drawn at random. Under an ``Idempotency-Key`` it is also kept,
        sealed (``keyplane.domain.sealing``), for the replay window only, so a retry within
        it answers the same secret and a later one is refused without it; a concurrent retry
        loses the insert of the idempotency record and answers the winner's key.
        """
        require_scope(principal, "keys:write")
        if idempotency is not None:
            replayed = await self._replay(principal, idempotency)
            if replayed is not None:
                return replayed
        project = await self._project_for(principal, new.project_id)
        now = self._clock.now()
        _check_expiry(new.expires_at, now)
        _check_scopes(new.scopes)
        plan = await self._plan(principal, new.plan)
        pending = _check_effective_policy(plan, new.policy).require_approval
        kind = keyformat.KeyKind(new.environment.value)
        key_id = ids.new_id("key")
        parsed = keyformat.generate(kind, project.key_prefix)
        marker = None
        if idempotency is not None:
            marker = IdempotencyRecord(
                org_id=principal.org_id,
                principal_id=principal.key_id,
                key_digest=idempotency_digest(idempotency.key),
                operation=_CREATE_KEY,
                fingerprint=idempotency.fingerprint,
                object_id=key_id,
                created_at=now,
            )
            marker = dataclasses.replace(
                marker, sealed_secret=seal(self._sealing_key, parsed.text, _bound_to(marker))
            )
        secret_hash = key_digest(self._server_secret, parsed.text)
        record = KeyRecord(
            id=key_id,
            org_id=principal.org_id,
            project_id=project.id,
            hash=secret_hash,
            start=parsed.start,
            end=parsed.end,
            name=new.name,
            environment=new.environment,
            created_at=now,
            updated_at=now,
            label=new.label,
            description=new.description,
            owner=new.owner,
            tags=new.tags,
            metadata=new.metadata,
            scopes=new.scopes,
            expires_at=new.expires_at,
            plan_id=None if plan is None else plan.id,
            policy=new.policy,
            status=KeyStatus.PENDING if pending else KeyStatus.ACTIVE,
            created_by=principal.key_id,
        )
        journal = Journal(principal.actor, now)
        journal.record(
            "key.imported" if new.imported else "key.created",
            org_id=record.org_id,
            target_type="key",
            target_id=record.id,
            project_id=record.project_id,
            # A pending key says so: its approval (key.approved) is a separate entry.
            details=_described(record) | ({"status": "pending"} if pending else {}),
        )
        signing_secret, sealed = self._signing_secret(plan, new.policy, secret_hash)
        try:
            await self._store.keys.create(record, marker, journal, sealed)
        except ConflictError:
            replayed = None if idempotency is None else await self._replay(principal, idempotency)
            if replayed is None:
                raise
            return replayed
        await self._directory.invalidate(record.id, (secret_hash,))
        return IssuedKey(parsed.text, record, signing_secret=signing_secret)

    def _signing_secret(
        self, plan: PlanRecord | None, overrides: dict[str, Any], secret_hash: str
    ) -> tuple[str | None, str | None]:
        """A new request-signing secret and its sealed form, when the effective policy
        requires signing; bound to the key secret (its hash) it is issued with."""
        document = merge_documents({} if plan is None else plan.policy, overrides)
        if parse_policy(document).signing is None:
            return None, None
        secret = request_signing.new_secret()
        sealed = seal(self._request_signing_key, secret, secret_hash.encode("ascii"))
        return secret, sealed

    async def _replay(self, principal: Principal, idempotency: Idempotency) -> IssuedKey | None:
        """The key an earlier create with this Idempotency-Key made, secret included.

        Only within the replay window: after it the secret is erased and the retry refused,
        so a leaked management key plus a guessed or stolen idempotency key cannot bring a
        plaintext back later. Records are looked up under the calling management key only.
        """
        found = await self._store.idempotency.get(
            principal.org_id, principal.key_id, idempotency_digest(idempotency.key)
        )
        if found is None:
            return None
        if found.operation != _CREATE_KEY or found.fingerprint != idempotency.fingerprint:
            raise ConflictError(
                "this Idempotency-Key was already used with a different request",
                code="IDEMPOTENCY_KEY_REUSED",
            )
        now = self._clock.now()
        secret = None
        if now < found.created_at + self._replay_window and found.sealed_secret is not None:
            secret = unseal(self._sealing_key, found.sealed_secret, _bound_to(found))
        if secret is None:
            if found.sealed_secret is not None:
                # Erased on first sight, not only by the periodic purge.
                await self._store.idempotency.erase_secrets(
                    now - self._replay_window + _EPSILON, found.org_id, found.principal_id
                )
            raise ConflictError(
                "the key this Idempotency-Key created exists, but its secret is kept for "
                f"{int(self._replay_window.total_seconds())} s only and is not shown again",
                code="IDEMPOTENCY_KEY_EXPIRED",
            )
        record = await self._find(principal, found.object_id)
        if not digests_equal(key_digest(self._server_secret, secret), record.hash):
            raise ConflictError(
                "the key this Idempotency-Key created has been rotated since, so its secret "
                "cannot be shown again",
                code="IDEMPOTENT_KEY_ROTATED",
            )
        journal = Journal(principal.actor, now)
        journal.record_key("key.replayed", record, {"idempotent_replay": True})
        await self._store.audit.record_alone(journal)
        match = await self._store.keys.find_by_secret(record.hash)
        signing_secret = None
        if match is not None and match.sealed_signing_secret is not None:
            signing_secret = unseal(
                self._request_signing_key,
                match.sealed_signing_secret,
                record.hash.encode("ascii"),
            )
        return IssuedKey(secret, record, replayed=True, signing_secret=signing_secret)

    async def erase_expired_secrets(self) -> int:
        """Erase every sealed secret whose replay window has passed; how many were."""
        return await self._store.idempotency.erase_secrets(
            self._clock.now() - self._replay_window + _EPSILON
        )

    async def default_project(self, org_id: str) -> Project:
        """The organization's own default project: where keys without a project go."""
        project = self._default_projects.get(org_id)
        if project is None:
            project = await self._store.tenancy.default_project(org_id, self._clock.now())
            self._default_projects[org_id] = project
        return project

    async def get(self, principal: Principal, id_or_hash: str) -> KeyRecord:
        require_scope(principal, "keys:read")
        return await self._find(principal, id_or_hash)

    async def _find(self, principal: Principal, id_or_hash: str) -> KeyRecord:
        """The key if the principal reaches it; no scope check (callers have made theirs)."""
        record = await self._store.keys.get(principal.org_id, id_or_hash)
        if record is None or not principal.reaches_project(record.project_id):
            raise NotFoundError(f"no key {id_or_hash!r}", code="KEY_NOT_FOUND")
        return record

    async def presented(self, secret: str) -> KeyRecord | None:
        """The key a presented secret belongs to, for a key asking about itself.

        ``None`` unless the secret is well formed, known, not revoked, and current or still in
        its rotation grace period. No scope check: holding the secret is the credential.
        """
        parsed = keyformat.parse(secret)
        if parsed is None or not parsed.kind.is_api_key:
            return None  # malformed: no storage access, as in verify
        entry = await self._directory.by_hash(key_digest(self._server_secret, secret))
        if entry is None or entry.record.status is KeyStatus.REVOKED:
            return None
        valid_until = entry.match.valid_until
        if valid_until is not None and self._clock.now() >= valid_until:
            return None
        return entry.record

    async def list(
        self, principal: Principal, filters: KeyFilter, after: str | None, limit: int
    ) -> list[KeyRecord]:
        require_scope(principal, "keys:read")
        if principal.project_id is not None:
            if filters.project_id not in (None, principal.project_id):
                return []
            filters = dataclasses.replace(filters, project_id=principal.project_id)
        return await self._store.keys.list_page(
            principal.org_id, filters, self._clock.now(), after, limit
        )

    async def update(
        self,
        principal: Principal,
        id_or_hash: str,
        changes: Mapping[str, Any],
        *,
        expected_policy: Mapping[str, Any] | None = None,
    ) -> KeyRecord:
        """Change a key's fields. ``expected_policy`` is the key's overrides as the caller read
        them to merge a change into: if another write changed them since, the update is a
        ``ConflictError`` (``POLICY_CHANGED``), checked under the key's lock, so a merge
        never overwrites a change it did not see."""
        require_scope(principal, "keys:write")
        unknown = set(changes) - UPDATABLE_FIELDS
        if unknown:
            raise ValidationError(f"cannot update {', '.join(sorted(unknown))}")
        now = self._clock.now()
        if changes.get("expires_at") is not None:
            _check_expiry(changes["expires_at"], now)
        if "scopes" in changes:
            _check_scopes(changes["scopes"])
        changes = dict(changes)
        current = await self._find(principal, id_or_hash)
        if "plan" in changes:
            plan = await self._plan(principal, changes.pop("plan"))
            changes["plan_id"] = None if plan is None else plan.id
        else:
            plan = await self._plan(principal, current.plan_id)
        _check_effective_policy(plan, changes.get("policy", current.policy))

        def apply(locked: KeyRecord, journal: Journal) -> KeyRecord:
            _refuse_if_revoked(locked, "update")
            if expected_policy is not None and locked.policy != expected_policy:
                raise ConflictError(
                    "the key's policy changed while this update was prepared",
                    code="POLICY_CHANGED",
                )
            updated = dataclasses.replace(locked, **changes, updated_at=now)
            changed = diff(_updatable(locked), _updatable(updated))
            if changed:
                journal.record_key("key.updated", updated, {"changes": changed})
            return updated

        return await self._mutate(principal, current.id, apply)

    async def revoke(self, principal: Principal, id_or_hash: str, reason: str | None) -> KeyRecord:
        require_scope(principal, "keys:write")
        now = self._clock.now()

        def apply(current: KeyRecord, journal: Journal) -> KeyRecord:
            if current.status is KeyStatus.REVOKED:
                return current  # revoking twice is a no-op, not an error
            journal.record_key("key.revoked", current, {"reason": reason})
            return dataclasses.replace(
                current,
                status=KeyStatus.REVOKED,
                revoked_reason=reason,
                revoked_at=now,
                updated_at=now,
            )

        return await self._mutate(principal, id_or_hash, apply)

    async def disable(
        self,
        principal: Principal,
        id_or_hash: str,
        reason: str | None,
        auto_enable_after: timedelta | None,
    ) -> KeyRecord:
        require_scope(principal, "keys:write")
        now = self._clock.now()
        auto_enable_at = None if auto_enable_after is None else now + auto_enable_after

        def apply(current: KeyRecord, journal: Journal) -> KeyRecord:
            _refuse_if_revoked(current, "disable")
            _refuse_if_pending(current, "disable")
            details = {"reason": reason, "auto_enable_at": auto_enable_at}
            journal.record_key("key.disabled", current, details)
            return dataclasses.replace(
                current,
                status=KeyStatus.DISABLED,
                disabled_reason=reason,
                auto_enable_at=auto_enable_at,
                updated_at=now,
            )

        return await self._mutate(principal, id_or_hash, apply)

    async def enable(self, principal: Principal, id_or_hash: str) -> KeyRecord:
        require_scope(principal, "keys:write")
        now = self._clock.now()

        def apply(current: KeyRecord, journal: Journal) -> KeyRecord:
            _refuse_if_revoked(current, "enable")
            _refuse_if_pending(current, "enable")
            if current.status is KeyStatus.DISABLED:
                journal.record_key("key.enabled", current, {})
            return dataclasses.replace(
                current,
                status=KeyStatus.ACTIVE,
                disabled_reason=None,
                auto_enable_at=None,
                updated_at=now,
            )

        return await self._mutate(principal, id_or_hash, apply)

    async def approve(self, principal: Principal, id_or_hash: str) -> KeyRecord:
        """Make a pending key active; only a management key other than the one that created it.

        Raises:
            PermissionDeniedError: the caller lacks ``keys:approve``, or created the key.
            ConflictError: the key is not pending (``KEY_NOT_PENDING``).
        """
        require_scope(principal, "keys:approve")
        now = self._clock.now()

        def apply(current: KeyRecord, journal: Journal) -> KeyRecord:
            _require_pending(current, "approve")
            # Root keys included: four eyes means two different management keys.
            if current.created_by is not None and current.created_by == principal.key_id:
                raise PermissionDeniedError(
                    "a key must be approved by another management key than its creator's",
                    code="SELF_APPROVAL",
                )
            journal.record_key("key.approved", current, {"created_by": current.created_by})
            return dataclasses.replace(current, status=KeyStatus.ACTIVE, updated_at=now)

        return await self._mutate(principal, id_or_hash, apply)

    async def reject(self, principal: Principal, id_or_hash: str, reason: str | None) -> KeyRecord:
        """Refuse a pending key: it is revoked for good (its creator may withdraw it too)."""
        require_scope(principal, "keys:approve")
        now = self._clock.now()

        def apply(current: KeyRecord, journal: Journal) -> KeyRecord:
            _require_pending(current, "reject")
            journal.record_key("key.rejected", current, {"reason": reason})
            return dataclasses.replace(
                current,
                status=KeyStatus.REVOKED,
                revoked_reason=reason or "rejected",
                revoked_at=now,
                updated_at=now,
            )

        return await self._mutate(principal, id_or_hash, apply)

    async def rotate(
        self, principal: Principal, id_or_hash: str, grace_period: timedelta
    ) -> IssuedKey:
        """Give the key a new secret; the old one verifies until ``grace_period`` has passed.

        A secret an automatic rotation held for a claim is superseded (erased) by this one.
        """
        require_scope(principal, "keys:write")
        if not timedelta(0) <= grace_period <= MAX_GRACE_PERIOD:
            raise ValidationError("grace_period_seconds must be between 0 and 30 days")
        current = await self._find(principal, id_or_hash)
        project = await self._project_for(principal, current.project_id)
        now = self._clock.now()
        parsed = keyformat.generate(
            keyformat.KeyKind(current.environment.value), project.key_prefix
        )
        secret_hash = key_digest(self._server_secret, parsed.text)
        plan = None
        if current.plan_id is not None:
            plan = await self._store.plans.get(principal.org_id, current.plan_id)
        signing_secret, sealed = self._signing_secret(plan, current.policy, secret_hash)

        journal = Journal(principal.actor, now)

        def apply(locked: KeyRecord) -> KeyRecord:
            _refuse_if_revoked(locked, "rotate")
            rotated = dataclasses.replace(
                locked, hash=secret_hash, start=parsed.start, end=parsed.end, updated_at=now
            )
            details = {
                "grace_period_seconds": int(grace_period.total_seconds()),
                "old_key_expires_at": now + grace_period,
                "old": {"start": locked.start, "end": locked.end},
                "new": {"start": rotated.start, "end": rotated.end},
            }
            journal.record_key("key.rotated", rotated, details)
            return rotated

        record, changed = await self._store.keys.rotate(
            principal.org_id, current.id, apply, now + grace_period, journal, sealed
        )
        await self._directory.invalidate(record.id, (secret_hash, *changed))
        return IssuedKey(
            parsed.text,
            record,
            signing_secret=signing_secret,
            old_key_expires_at=now + grace_period,
        )

    async def _mutate(
        self,
        principal: Principal,
        id_or_hash: str,
        apply: Callable[[KeyRecord, Journal], KeyRecord],
    ) -> KeyRecord:
        """Apply ``apply`` to the locked key; what it records in the journal commits with it."""
        current = await self._find(principal, id_or_hash)
        journal = Journal(principal.actor, self._clock.now())
        record = await self._store.keys.mutate(
            principal.org_id, current.id, lambda locked: apply(locked, journal), journal
        )
        await self._directory.invalidate(record.id)
        return record

    async def views(self, principal: Principal, records: Sequence[KeyRecord]) -> Sequence[KeyView]:
        """The management view of keys: plan, effective policy, spending from the ledger."""
        now = self._clock.now()
        plans = {plan.id: plan for plan in await self._store.plans.list_all(principal.org_id)}
        usage = await self._store.usage.totals([r.id for r in records], now)
        views = []
        for record in records:
            plan = plans.get(record.plan_id) if record.plan_id else None
            document = merge_documents({} if plan is None else plan.policy, record.policy)
            budget = parse_policy(document).budget
            spent = usage[record.id]
            limit = remaining = carried = None
            if budget is not None and budget.credit_limit is not None:
                limit = budget.credit_limit
                if budget.max_carry is not None:
                    carried = await self._carried(record, budget.reset, limit, budget.max_carry)
                effective = limit + (carried or 0)
                remaining = max(0, effective - spent[BUCKET_OF_RESET[budget.reset]])
            views.append(
                KeyView(
                    record,
                    plan,
                    document,
                    spent,
                    limit,
                    remaining,
                    None if budget is None else budget.reset,
                    carried,
                )
            )
        return views

    async def _carried(self, record: KeyRecord, reset: Reset, limit: int, max_carry: int) -> int:
        """The carry of a key's budget this period, from the ledger (``domain/rollover.py``)."""
        start = period_start(reset, self._clock.now())
        previous = rollover.previous_period_start(reset, start, record.created_at)
        if previous is None:
            return 0
        spent = await self._store.usage.spent_in(record.id, BUCKET_OF_RESET[reset], previous)
        return rollover.carry(limit, max_carry, spent)

    async def _plan(self, principal: Principal, id_or_name: str | None) -> PlanRecord | None:
        if id_or_name is None:
            return None
        plan = await self._store.plans.get(principal.org_id, id_or_name)
        if plan is None:
            raise ValidationError(f"no plan {id_or_name!r}", code="PLAN_NOT_FOUND")
        return plan

    async def _project_for(self, principal: Principal, project_id: str | None) -> Project:
        if project_id is None:
            project_id = principal.project_id or (await self.default_project(principal.org_id)).id
        if not principal.reaches_project(project_id):
            raise PermissionDeniedError("this management key cannot reach that project")
        default = self._default_projects.get(principal.org_id)
        if default is not None and project_id == default.id:
            return default
        project = await self._store.tenancy.get_project(principal.org_id, project_id)
        if project is None:
            raise NotFoundError(f"no project {project_id!r}", code="PROJECT_NOT_FOUND")
        return project


def _bound_to(record: IdempotencyRecord) -> bytes:
    """The associated data of a sealed secret: the record (and object) it belongs to."""
    parts = (record.org_id, record.principal_id, record.key_digest, record.object_id)
    return "\0".join(parts).encode("utf-8")


def _updatable(record: KeyRecord) -> dict[str, Any]:
    """The fields ``update`` may change, for the audit diff (``plan`` as its id)."""
    fields = UPDATABLE_FIELDS - {"plan"} | {"plan_id"}
    return {name: getattr(record, name) for name in fields}


def _described(record: KeyRecord) -> dict[str, Any]:
    """What an audit entry says of a new key: never its secret nor its hash."""
    return {
        "name": record.name,
        "environment": record.environment,
        "owner": record.owner,
        "scopes": record.scopes,
        "plan_id": record.plan_id,
        "expires_at": record.expires_at,
        "start": record.start,
        "end": record.end,
    }


def _refuse_if_revoked(record: KeyRecord, action: str) -> None:
    if record.status is KeyStatus.REVOKED:
        raise ConflictError(f"cannot {action} a revoked key", code="KEY_REVOKED")


def _refuse_if_pending(record: KeyRecord, action: str) -> None:
    # Enabling a pending key would skip its approval; disabling it would let enable do so.
    if record.status is KeyStatus.PENDING:
        raise ConflictError(
            f"cannot {action} a key pending approval: approve or reject it",
            code="KEY_PENDING_APPROVAL",
        )


def _require_pending(record: KeyRecord, action: str) -> None:
    if record.status is not KeyStatus.PENDING:
        raise ConflictError(
            f"cannot {action} a key that is not pending approval (it is {record.status.value})",
            code="KEY_NOT_PENDING",
        )


def _check_expiry(expires_at: datetime | None, now: datetime) -> None:
    if expires_at is not None and expires_at <= now:
        raise ValidationError("expires_at must be in the future", code="INVALID_EXPIRY")


def _check_effective_policy(plan: PlanRecord | None, overrides: dict[str, Any]) -> Policy:
    return check_policy(merge_documents({} if plan is None else plan.policy, overrides))


def _check_scopes(wanted: tuple[str, ...]) -> None:
    bad = [scope for scope in wanted if not scopes.is_valid_scope(scope)]
    if bad:
        raise ValidationError(f"invalid scope {bad[0]!r}", code="INVALID_SCOPE")
