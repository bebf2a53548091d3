"""Scheduled and automatic key rotation, and the claim flow for secrets nobody was there to copy.

An automatic rotation (a key's rotation policy came due, or a leak response rotated it) has no
caller to hand the new secret to, and it must never travel in a webhook or an email. It is held
instead: sealed (AES-256-GCM, ``domain/sealing.held_rotation_sealing_key``, bound to the key and
the new secret's hash) in ``held_rotation_secrets`` until it is claimed once, then erased; a
secret nobody claimed is erased when its claim window ends (``key.rotation.unclaimed``).

Who can claim it:

- the operator's backend, through the management API (``keys:write``):
  ``POST /v1/keys/{id}/rotation/claim``;
- the customer's application, presenting the OLD secret during its grace period
  (``POST /v1/self/rotation/claim``), only when the key's policy set ``auto_update_apps`` and
  never after a leak response (whoever holds a leaked key must not get its successor).

A claim is a compare-and-set on the held row: of concurrent claims exactly one gets the secret.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from keyplane.domain import keyformat, webhook_events
from keyplane.domain.changes import NOWHERE, SYSTEM, Actor, Journal, Origin
from keyplane.domain.clock import Clock
from keyplane.domain.crypto import digests_equal, key_digest
from keyplane.domain.keys import KeyRecord, KeyStatus
from keyplane.domain.plans import PlanRecord
from keyplane.domain.rotation import (
    MAX_GRACE,
    HeldSecret,
    HeldState,
    RotationPolicy,
    RotationSchedule,
    ScheduleAdvance,
    claim_window,
    first_rotation,
    held_associated_data,
)
from keyplane.domain.sealing import held_rotation_sealing_key, seal, unseal
from keyplane.domain.tenancy import Principal
from keyplane.errors import (
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    StorageError,
    ValidationError,
)
from keyplane.services.authz import require_scope
from keyplane.services.directory import KeyDirectory
from keyplane.store.database import Database

log = logging.getLogger(__name__)

#: Due keys rotated per batch, and batches per sweep (the rest waits for the next run).
SWEEP_BATCH = 100
SWEEP_MAX_BATCHES = 50
#: The reason an automatic rotation on a schedule records.
SCHEDULED = "scheduled"


@dataclass(frozen=True, slots=True)
class RotatedKey:
    """A key rotated automatically: its new record; the new secret is held, not here."""

    record: KeyRecord
    old_key_expires_at: datetime
    #: Until when the held secret may be claimed.
    claim_until: datetime


@dataclass(frozen=True, slots=True)
class ClaimedKey:
    """A held secret, claimed: shown this once, erased from the server."""

    secret: str
    record: KeyRecord
    old_key_expires_at: datetime


@dataclass(frozen=True, slots=True)
class PlanRotation:
    """A plan's rotation policy; ``keys_following`` counts the keys that inherit it (known
    when it was just set)."""

    plan_id: str
    plan_name: str
    policy: RotationPolicy
    updated_at: datetime | None
    keys_following: int | None


class Rotations:
    """Rotation policies, the due-key sweep, automatic rotation and claims."""

    def __init__(
        self,
        store: Database,
        directory: KeyDirectory,
        clock: Clock,
        server_secret: bytes,
        *,
        notice_ahead: timedelta = timedelta(days=1),
    ) -> None:
        self._store = store
        self._directory = directory
        self._clock = clock
        self._server_secret = server_secret
        self._sealing_key = held_rotation_sealing_key(server_secret)
        self._notice_ahead = notice_ahead

    # -- policies ------------------------------------------------------------------------------

    async def set_policy(
        self, principal: Principal, key_id: str, document: Mapping[str, Any]
    ) -> RotationSchedule:
        """Set a key's rotation policy (``keys:write``) and when it is next due."""
        require_scope(principal, "keys:write")
        policy = RotationPolicy.from_document(document)
        record = await self._reachable(principal, key_id)
        if record.status is KeyStatus.REVOKED:
            raise ConflictError("cannot set a rotation policy on a revoked key", code="KEY_REVOKED")
        now = self._clock.now()
        existing = await self._store.rotations.get_schedule(principal.org_id, record.id)
        last = existing.last_rotated_at if existing is not None else None
        schedule = RotationSchedule(
            key_id=record.id,
            org_id=record.org_id,
            policy=policy,
            next_rotation_at=first_rotation(policy, last or record.created_at, now),
            last_rotated_at=last,
            updated_at=now,
        )
        journal = Journal(principal.actor, now)
        journal.record_key(
            "key.rotation.configured",
            record,
            {"rotation": policy.to_document(), "next_rotation_at": schedule.next_rotation_at},
        )
        await self._store.rotations.set_schedule(schedule, journal)
        return schedule

    async def set_plan_policy(
        self, principal: Principal, plan_ref: str, document: Mapping[str, Any]
    ) -> PlanRotation:
        """Set a plan's rotation policy (``plans:write``): every key on the plan without a
        policy of its own follows it, now and when keys join the plan later."""
        require_scope(principal, "plans:write")
        if principal.project_id is not None:
            # Plans belong to the organization: a change reaches keys of every project.
            raise PermissionDeniedError("only organization-wide management keys can change plans")
        policy = RotationPolicy.from_document(document)
        plan = await self._plan(principal, plan_ref)
        now = self._clock.now()
        journal = Journal(principal.actor, now)
        journal.record(
            "plan.rotation.configured",
            org_id=plan.org_id,
            target_type="plan",
            target_id=plan.id,
            details={"name": plan.name, "rotation": policy.to_document()},
        )
        following = await self._store.rotations.set_plan_policy(
            plan.org_id, plan.id, policy, now, journal
        )
        return PlanRotation(plan.id, plan.name, policy, now, following)

    async def get_plan_policy(self, principal: Principal, plan_ref: str) -> PlanRotation | None:
        """A plan's rotation policy (``plans:read``); ``None`` when it has none."""
        require_scope(principal, "plans:read")
        plan = await self._plan(principal, plan_ref)
        policy = await self._store.rotations.get_plan_policy(plan.org_id, plan.id)
        return None if policy is None else PlanRotation(plan.id, plan.name, policy, None, None)

    async def _plan(self, principal: Principal, plan_ref: str) -> PlanRecord:
        plan = await self._store.plans.get(principal.org_id, plan_ref)
        if plan is None:
            raise NotFoundError(f"no plan {plan_ref!r}", code="PLAN_NOT_FOUND")
        return plan

    async def get_policy(self, principal: Principal, key_id: str) -> RotationSchedule | None:
        """A key's rotation policy (``keys:read``); ``None`` when it has none."""
        require_scope(principal, "keys:read")
        record = await self._reachable(principal, key_id)
        return await self._store.rotations.get_schedule(principal.org_id, record.id)

    async def held(self, principal: Principal, key_id: str) -> HeldSecret | None:
        """The key's held secret record, without its sealed secret (``keys:read``)."""
        require_scope(principal, "keys:read")
        record = await self._reachable(principal, key_id)
        found = await self._store.rotations.get_held(principal.org_id, record.id)
        return None if found is None else dataclasses.replace(found, sealed_secret=None)

    # -- automatic rotation --------------------------------------------------------------------

    async def rotate_automatically(
        self, org_id: str, key_id: str, grace: timedelta, reason: str
    ) -> RotatedKey:
        """Rotate a key with nobody to hand the secret to (a leak response, a schedule): the
        new secret is held for a claim by the operator only (never by the old key: after a
        leak, the old key's holder may be the attacker). Audited as ``key.rotated`` with
        ``automatic: true`` by the system actor."""
        return await self._rotate_held(
            org_id, key_id, grace, reason[:200], self_claim=False, due=None
        )

    async def _rotate_held(
        self,
        org_id: str,
        key_id: str,
        grace: timedelta,
        reason: str,
        *,
        self_claim: bool,
        due: ScheduleAdvance | None,
        channels: tuple[str, ...] = (),
    ) -> RotatedKey:
        if not timedelta(0) <= grace <= MAX_GRACE:
            raise ValidationError("a rotation's grace period must be between 0 and 30 days")
        current = await self._store.keys.get(org_id, key_id)
        if current is None:
            raise NotFoundError(f"no key {key_id!r}", code="KEY_NOT_FOUND")
        project = await self._store.tenancy.get_project(org_id, current.project_id)
        if project is None:  # pragma: no cover - a key's project is never deleted
            raise NotFoundError("the key's project is gone", code="PROJECT_NOT_FOUND")
        now = self._clock.now()
        parsed = keyformat.generate(
            keyformat.KeyKind(current.environment.value), project.key_prefix
        )
        new_hash = key_digest(self._server_secret, parsed.text)
        old_until = now + grace
        claim_until = claim_window(now, grace)
        journal = Journal(SYSTEM, now)

        def hold(locked: KeyRecord) -> HeldSecret:
            return HeldSecret(
                key_id=locked.id,
                org_id=locked.org_id,
                project_id=locked.project_id,
                sealed_secret=seal(
                    self._sealing_key,
                    parsed.text,
                    held_associated_data(locked.org_id, locked.id, new_hash),
                ),
                new_hash=new_hash,
                old_hash=locked.hash,
                self_claim=self_claim,
                reason=reason,
                state=HeldState.PENDING,
                rotated_at=now,
                old_valid_until=old_until,
                claim_until=claim_until,
            )

        def apply(locked: KeyRecord) -> KeyRecord:
            if locked.status is KeyStatus.REVOKED:
                raise ConflictError("cannot rotate a revoked key", code="KEY_REVOKED")
            rotated = dataclasses.replace(
                locked, hash=new_hash, start=parsed.start, end=parsed.end, updated_at=now
            )
            journal.record_key(
                "key.rotated",
                rotated,
                {
                    "automatic": True,
                    "reason": reason,
                    "grace_period_seconds": int(grace.total_seconds()),
                    "old_key_expires_at": old_until,
                    "claim_until": claim_until,
                    "self_claim": self_claim,
                    "old": {"start": locked.start, "end": locked.end},
                    "new": {"start": rotated.start, "end": rotated.end},
                },
            )
            return rotated

        record, changed = await self._store.keys.rotate(
            org_id, current.id, apply, old_until, journal, held=hold, due=due
        )
        await self._directory.invalidate(record.id, (new_hash, *changed))
        await self._notify_channels(journal, channels)
        return RotatedKey(record, old_until, claim_until)

    async def sweep(self, now: datetime) -> int:
        """Rotate every key whose schedule is due (the ``rotation.sweep`` job); how many.

        Idempotent across instances: a key is rotated only while its schedule still reads the
        due time the sweep saw, checked in the rotation's own transaction.
        """
        rotated = 0
        for _ in range(SWEEP_MAX_BATCHES):
            due = await self._store.rotations.due(now, SWEEP_BATCH)
            for schedule in due:
                rotated += await self._rotate_due(schedule, now)
            if len(due) < SWEEP_BATCH:
                break
        return rotated

    async def _rotate_due(self, schedule: RotationSchedule, now: datetime) -> int:
        if schedule.next_rotation_at is None:  # pragma: no cover - selected on it
            return 0
        policy = schedule.policy
        advance = ScheduleAdvance(
            expected=schedule.next_rotation_at,
            next_rotation_at=policy.next_rotation(now),
            at=now,
        )
        try:
            await self._rotate_held(
                schedule.org_id,
                schedule.key_id,
                policy.grace,
                SCHEDULED,
                self_claim=policy.auto_update_apps,
                due=advance,
                channels=policy.notification_channels,
            )
        except ConflictError as exc:
            if exc.code == "KEY_REVOKED":
                await self._stop_schedule(schedule, now)
            # ROTATION_NOT_DUE: another instance rotated it first.
            return 0
        except NotFoundError:
            return 0
        except StorageError as exc:
            # One key's failure does not stop the sweep; the key stays due for the next run.
            log.warning("rotating a due key failed: %s", type(exc).__name__)
            return 0
        return 1

    async def _stop_schedule(self, schedule: RotationSchedule, now: datetime) -> None:
        """A revoked key is never due again."""
        journal = Journal(SYSTEM, now)
        await self._store.rotations.set_schedule(
            dataclasses.replace(schedule, next_rotation_at=None, updated_at=now), journal
        )

    async def announce(self, now: datetime) -> int:
        """``key.rotation.scheduled`` for keys due within the notice period, once per key and
        due time (the ``rotation.notices`` job); how many were sent."""
        sent = 0
        upcoming = await self._store.rotations.upcoming(
            now, now + self._notice_ahead, SWEEP_BATCH * SWEEP_MAX_BATCHES
        )
        for schedule in upcoming:
            if schedule.next_rotation_at is None:  # pragma: no cover - selected on it
                continue
            match = await self._store.keys.find_by_id(schedule.key_id)
            if match is None or match.record.status is KeyStatus.REVOKED:
                continue
            record = match.record
            journal = Journal(SYSTEM, now)
            journal.record_key(
                "key.rotation.scheduled",
                record,
                {
                    "owner": record.owner,
                    "start": record.start,
                    "end": record.end,
                    "rotates_at": schedule.next_rotation_at,
                    "strategy": schedule.policy.strategy.value,
                    "grace_period_hours": schedule.policy.grace_period_hours,
                    "notification_channels": list(schedule.policy.notification_channels),
                },
                audited=False,
            )
            subject = (
                f"key.rotation.scheduled:{record.id}:{int(schedule.next_rotation_at.timestamp())}"
            )
            if await self._store.webhooks.notice_once(subject, journal, now):
                sent += 1
                await self._notify_channels(journal, schedule.policy.notification_channels)
        return sent

    async def expire_held(self, now: datetime) -> int:
        """Erase held secrets whose claim window ended unclaimed (``key.rotation.unclaimed``,
        the ``rotation.held_expiry`` job); how many."""
        erased = 0
        for _ in range(SWEEP_MAX_BATCHES):
            expired = await self._store.rotations.expired(now, SWEEP_BATCH)
            for held in expired:
                journal = Journal(SYSTEM, now)
                journal.record(
                    "key.rotation.unclaimed",
                    org_id=held.org_id,
                    target_type="key",
                    target_id=held.key_id,
                    project_id=held.project_id,
                    details={
                        "reason": held.reason,
                        "rotated_at": held.rotated_at,
                        "claim_until": held.claim_until,
                    },
                )
                if await self._store.rotations.settle_unclaimed(held, now, journal):
                    erased += 1
                    await self._notify_channels(journal, await self._channels(held))
            if len(expired) < SWEEP_BATCH:
                break
        return erased

    # -- claims --------------------------------------------------------------------------------

    async def claim(self, principal: Principal, key_id: str) -> ClaimedKey:
        """The operator claims a key's held secret (``keys:write``), once."""
        require_scope(principal, "keys:write")
        record = await self._reachable(principal, key_id)
        now = self._clock.now()
        journal = Journal(principal.actor, now)
        _record_claim(journal, record, "operator")
        held = await self._store.rotations.claim(record.org_id, record.id, now, journal)
        await self._notify_channels(journal, await self._channels(held))
        return await self._opened(held, record)

    async def claim_with_old_key(self, old_secret: str, origin: Origin = NOWHERE) -> ClaimedKey:
        """The customer's application claims the held secret with the key it replaced, during
        that key's grace period, once (no scope: holding the old secret is the credential).
        Audited as the key itself, from ``origin`` (the claimer's address and user agent)."""
        parsed = keyformat.parse(old_secret)
        if parsed is None or not parsed.kind.is_api_key:
            raise _no_claim()
        old_hash = key_digest(self._server_secret, old_secret)
        entry = await self._directory.by_hash(old_hash)
        now = self._clock.now()
        if (
            entry is None
            or entry.record.status is KeyStatus.REVOKED
            or entry.match.valid_until is None  # the current secret: nothing to claim
            or now >= entry.match.valid_until
        ):
            raise _no_claim()
        record = entry.record
        journal = Journal(Actor("api_key", record.id, record.name, origin), now)
        _record_claim(journal, record, "old_key")
        try:
            held = await self._store.rotations.claim_by_old_hash(old_hash, now, journal)
        except ConflictError:
            raise _no_claim() from None
        await self._notify_channels(journal, await self._channels(held))
        return await self._opened(held, record)

    async def _opened(self, held: HeldSecret, record: KeyRecord) -> ClaimedKey:
        secret = None
        if held.sealed_secret is not None:
            secret = unseal(
                self._sealing_key,
                held.sealed_secret,
                held_associated_data(held.org_id, held.key_id, held.new_hash),
            )
        if secret is None or not digests_equal(
            key_digest(self._server_secret, secret), held.new_hash
        ):
            # Sealed under another server secret: erased by the claim, and unrecoverable.
            raise ConflictError(
                "the held secret cannot be opened (the server secret changed); rotate again",
                code="ROTATION_SECRET_UNREADABLE",
            )
        current = await self._store.keys.get(held.org_id, held.key_id)
        return ClaimedKey(secret, current or record, held.old_valid_until)

    async def _channels(self, held: HeldSecret) -> tuple[str, ...]:
        schedule = await self._store.rotations.get_schedule(held.org_id, held.key_id)
        return () if schedule is None else schedule.policy.notification_channels

    async def _notify_channels(self, journal: Journal, channels: tuple[str, ...]) -> None:
        """Also send a committed rotation event to the policy's ``notification_channels``:
        the organization's registered webhook or email endpoints they name (an unregistered
        address gets nothing: an endpoint carries its signing secret and SSRF checks), unless
        the endpoint's filters got the event through the outbox already.

        After the commit, at most once: a crash right here loses the extra copy, never the
        change nor the outbox's deliveries. Payloads are the outbox's: never the secret.
        """
        if not channels or not journal.changes:
            return
        wanted = set(channels)
        try:
            endpoints = await self._store.webhooks.list_endpoints(journal.changes[0].org_id)
            for change in journal.changes:
                body = webhook_events.encode(
                    webhook_events.payload(change, journal.actor, journal.at)
                )
                for endpoint in endpoints:
                    if (
                        not endpoint.enabled
                        or f"{endpoint.kind}:{endpoint.url}" not in wanted
                        or endpoint.project_id not in (None, change.project_id)
                        or webhook_events.matches(endpoint.events, change.action)
                    ):
                        continue
                    await self._store.webhooks.enqueue(endpoint, change.action, body, journal.at)
        except StorageError as exc:
            log.warning("rotation notification channels not told: %s", type(exc).__name__)

    async def _reachable(self, principal: Principal, key_id: str) -> KeyRecord:
        record = await self._store.keys.get(principal.org_id, key_id)
        if record is None or not principal.reaches_project(record.project_id):
            raise NotFoundError(f"no key {key_id!r}", code="KEY_NOT_FOUND")
        return record


def _record_claim(journal: Journal, record: KeyRecord, by: str) -> None:
    journal.record_key(
        "key.rotation.claimed", record, {"claimed_by": by, "start": record.start, "end": record.end}
    )


def _no_claim() -> ConflictError:
    # One answer whatever the reason (unknown key, current key, no pending secret, claimed
    # already): a caller probing with keys learns nothing more.
    return ConflictError(
        "no rotation secret is waiting to be claimed with this key",
        code="ROTATION_NOT_CLAIMABLE",
    )
