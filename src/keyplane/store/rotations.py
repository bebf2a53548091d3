"""Key rotation schedules and held rotation secrets: :class:`RotationStore` and its SQL form.

The rotation itself (the key's new secret hash, the old one's grace) is ``store/keys.py``'s
``rotate``, which calls :func:`advance_schedule` and :func:`hold_secret` here inside its own
transaction: a key's rotation, its schedule's advance and its held secret commit together.
"""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from keyplane.domain.changes import Journal
from keyplane.domain.keys import KeyStatus
from keyplane.domain.rotation import (
    HeldSecret,
    HeldState,
    RotationPolicy,
    RotationSchedule,
    ScheduleAdvance,
    first_rotation,
)
from keyplane.errors import ConflictError
from keyplane.store.tables import api_keys, plan_rotation_policies, plans
from keyplane.store.tables import held_rotation_secrets as held
from keyplane.store.tables import key_rotation_policies as schedules
from keyplane.store.unit import UnitOfWork

_NOT_CLAIMABLE = (
    "no rotation secret is waiting to be claimed for this key (none was held, it was "
    "claimed already, or its claim window ended)"
)


class RotationStore(Protocol):
    """Rotation schedules (one per key) and held secrets (at most one pending per key)."""

    async def get_schedule(self, org_id: str, key_id: str) -> RotationSchedule | None:
        """The key's schedule, within ``org_id`` only."""
        ...

    async def set_schedule(self, schedule: RotationSchedule, journal: Journal) -> None:
        """Insert or replace the key's schedule, with what ``journal`` recorded."""
        ...

    async def get_plan_policy(self, org_id: str, plan_id: str) -> RotationPolicy | None:
        """The plan's rotation policy, within ``org_id`` only."""
        ...

    async def set_plan_policy(
        self, org_id: str, plan_id: str, policy: RotationPolicy, now: datetime, journal: Journal
    ) -> int:
        """Insert or replace the plan's policy and, in the same transaction, the inherited
        schedule of every key on the plan that has no policy of its own; how many keys."""
        ...

    async def due(self, now: datetime, limit: int) -> builtins.list[RotationSchedule]:
        """Up to ``limit`` schedules due at ``now`` (through the next_rotation_at index)."""
        ...

    async def upcoming(
        self, after: datetime, until: datetime, limit: int
    ) -> builtins.list[RotationSchedule]:
        """Up to ``limit`` schedules due in (``after``, ``until``], soonest first."""
        ...

    async def get_held(self, org_id: str, key_id: str) -> HeldSecret | None:
        """The key's held secret record (pending or settled), within ``org_id`` only."""
        ...

    async def claim(self, org_id: str, key_id: str, now: datetime, journal: Journal) -> HeldSecret:
        """Take the key's pending secret and erase it, atomically: of concurrent claims one
        gets it, the others ConflictError ``ROTATION_NOT_CLAIMABLE`` (as when there is none
        or its window ended). The journal commits only with a successful claim."""
        ...

    async def claim_by_old_hash(self, old_hash: str, now: datetime, journal: Journal) -> HeldSecret:
        """As :meth:`claim`, found by the hash of the secret it replaced, and only when the
        rotation allowed the old key to claim (``self_claim``)."""
        ...

    async def expired(self, now: datetime, limit: int) -> builtins.list[HeldSecret]:
        """Up to ``limit`` pending secrets whose claim window ended by ``now``."""
        ...

    async def settle_unclaimed(self, record: HeldSecret, now: datetime, journal: Journal) -> bool:
        """Erase a pending secret whose window ended; False when it was claimed or settled
        meanwhile (the journal then commits nothing)."""
        ...


class SqlRotationStore:
    """:class:`RotationStore` over the shared unit of work."""

    def __init__(self, unit: UnitOfWork) -> None:
        self._unit = unit

    async def get_schedule(self, org_id: str, key_id: str) -> RotationSchedule | None:
        query = select(schedules).where(schedules.c.org_id == org_id, schedules.c.key_id == key_id)
        async with self._unit.read() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _schedule(row)

    async def set_schedule(self, schedule: RotationSchedule, journal: Journal) -> None:
        values = {
            "key_id": schedule.key_id,
            "org_id": schedule.org_id,
            "policy": schedule.policy.to_document(),
            "next_rotation_at": schedule.next_rotation_at,
            "last_rotated_at": schedule.last_rotated_at,
            "updated_at": schedule.updated_at,
            "from_plan": schedule.from_plan,
        }
        statement = (
            self._unit.insert(schedules)
            .values(**values)
            .on_conflict_do_update(
                index_elements=["key_id"],
                set_={k: v for k, v in values.items() if k not in ("key_id", "org_id")},
            )
        )
        async with self._unit.write(journal) as conn:
            await conn.execute(statement)

    async def get_plan_policy(self, org_id: str, plan_id: str) -> RotationPolicy | None:
        query = select(plan_rotation_policies.c.policy).where(
            plan_rotation_policies.c.org_id == org_id, plan_rotation_policies.c.plan_id == plan_id
        )
        async with self._unit.read() as conn:
            document = (await conn.execute(query)).scalar_one_or_none()
        return None if document is None else RotationPolicy.from_document(document)

    async def set_plan_policy(
        self, org_id: str, plan_id: str, policy: RotationPolicy, now: datetime, journal: Journal
    ) -> int:
        document = policy.to_document()
        statement = (
            self._unit.insert(plan_rotation_policies)
            .values(plan_id=plan_id, org_id=org_id, policy=document, updated_at=now)
            .on_conflict_do_update(
                index_elements=["plan_id"], set_={"policy": document, "updated_at": now}
            )
        )
        on_plan = (
            select(
                api_keys.c.id,
                api_keys.c.created_at,
                schedules.c.from_plan,
                schedules.c.last_rotated_at,
                schedules.c.key_id.is_not(None).label("scheduled"),
            )
            .outerjoin(schedules, schedules.c.key_id == api_keys.c.id)
            .where(
                api_keys.c.org_id == org_id,
                api_keys.c.plan_id == plan_id,
                api_keys.c.status != KeyStatus.REVOKED.value,
            )
        )
        async with self._unit.write(journal) as conn:
            # The plan's row, locked: a key joining the plan (created on it, or moved onto it)
            # takes a key-share lock on it through its foreign key, so it either commits before
            # the read below sees it, or waits and then reads this policy (follow_plan).
            await conn.execute(select(plans.c.id).where(plans.c.id == plan_id).with_for_update())
            await conn.execute(statement)
            # Lock the keys' rows first, as a key's own change does, so a key cannot move off
            # the plan (or get its own policy) between this read and the writes below.
            keys = [row for row in await conn.execute(on_plan.with_for_update(of=api_keys))]
            followers = [row for row in keys if not row.scheduled or row.from_plan is not None]
            if followers:
                await conn.execute(
                    delete(schedules).where(
                        schedules.c.from_plan.is_not(None),
                        schedules.c.key_id.in_([row.id for row in followers]),
                    )
                )
                await conn.execute(
                    insert(schedules),
                    [
                        _inherited(
                            row.id,
                            org_id,
                            plan_id,
                            policy,
                            row.created_at,
                            row.last_rotated_at,
                            now,
                        )
                        for row in followers
                    ],
                )
        return len(followers)

    async def due(self, now: datetime, limit: int) -> builtins.list[RotationSchedule]:
        query = (
            select(schedules)
            .where(schedules.c.next_rotation_at <= now)
            .order_by(schedules.c.next_rotation_at, schedules.c.key_id)
            .limit(limit)
        )
        async with self._unit.read() as conn:
            return [_schedule(row) for row in await conn.execute(query)]

    async def upcoming(
        self, after: datetime, until: datetime, limit: int
    ) -> builtins.list[RotationSchedule]:
        query = (
            select(schedules)
            .where(schedules.c.next_rotation_at > after, schedules.c.next_rotation_at <= until)
            .order_by(schedules.c.next_rotation_at, schedules.c.key_id)
            .limit(limit)
        )
        async with self._unit.read() as conn:
            return [_schedule(row) for row in await conn.execute(query)]

    async def get_held(self, org_id: str, key_id: str) -> HeldSecret | None:
        query = select(held).where(held.c.org_id == org_id, held.c.key_id == key_id)
        async with self._unit.read() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _held(row)

    async def claim(self, org_id: str, key_id: str, now: datetime, journal: Journal) -> HeldSecret:
        return await self._take(
            [held.c.org_id == org_id, held.c.key_id == key_id], now, journal, HeldState.CLAIMED
        )

    async def claim_by_old_hash(self, old_hash: str, now: datetime, journal: Journal) -> HeldSecret:
        return await self._take(
            [held.c.old_hash == old_hash, held.c.self_claim.is_(True)],
            now,
            journal,
            HeldState.CLAIMED,
        )

    async def expired(self, now: datetime, limit: int) -> builtins.list[HeldSecret]:
        query = (
            select(held)
            .where(held.c.state == HeldState.PENDING.value, held.c.claim_until <= now)
            .order_by(held.c.claim_until, held.c.key_id)
            .limit(limit)
        )
        async with self._unit.read() as conn:
            return [_held(row) for row in await conn.execute(query)]

    async def settle_unclaimed(self, record: HeldSecret, now: datetime, journal: Journal) -> bool:
        try:
            await self._take(
                [
                    held.c.key_id == record.key_id,
                    held.c.new_hash == record.new_hash,
                    held.c.claim_until <= now,
                ],
                now,
                journal,
                HeldState.UNCLAIMED,
                window_open=False,
            )
        except ConflictError:
            return False
        return True

    async def _take(
        self,
        where: builtins.list[Any],
        now: datetime,
        journal: Journal,
        state: HeldState,
        *,
        window_open: bool = True,
    ) -> HeldSecret:
        """Move one pending row to ``state`` and erase its sealed secret, returning the row as
        it was: a compare-and-set on ``state``, so exactly one of concurrent takers wins."""
        conditions = [*where, held.c.state == HeldState.PENDING.value]
        if window_open:
            conditions.append(held.c.claim_until > now)
        async with self._unit.write(journal) as conn:
            before = (await conn.execute(select(held).where(*conditions).with_for_update())).first()
            if before is None:
                raise ConflictError(_NOT_CLAIMABLE, code="ROTATION_NOT_CLAIMABLE")
            taken = await conn.execute(
                update(held)
                .where(held.c.key_id == before.key_id, held.c.state == HeldState.PENDING.value)
                .values(sealed_secret=None, state=state.value, settled_at=now)
            )
            if taken.rowcount != 1:  # pragma: no cover - the row lock above makes it so
                raise ConflictError(_NOT_CLAIMABLE, code="ROTATION_NOT_CLAIMABLE")
        return _held(before)


async def advance_schedule(conn: AsyncConnection, key_id: str, due: ScheduleAdvance) -> None:
    """Move a due schedule on, only if it is still at ``due.expected`` (ConflictError
    ``ROTATION_NOT_DUE`` otherwise: another instance rotated the key first)."""
    result = await conn.execute(
        update(schedules)
        .where(schedules.c.key_id == key_id, schedules.c.next_rotation_at == due.expected)
        .values(next_rotation_at=due.next_rotation_at, last_rotated_at=due.at, updated_at=due.at)
    )
    if result.rowcount != 1:
        raise ConflictError("the key was rotated meanwhile", code="ROTATION_NOT_DUE")


async def restart_age(conn: AsyncConnection, key_id: str, at: datetime) -> None:
    """A rotation outside the schedule (manual, leak response) restarts a ``max_age_days``
    policy's count: the new secret is young. A cron schedule keeps its calendar."""
    row = (await conn.execute(select(schedules).where(schedules.c.key_id == key_id))).first()
    if row is None:
        return
    policy = RotationPolicy.from_document(row.policy)
    if policy.schedule is not None or policy.max_age_days is None:
        return
    await conn.execute(
        update(schedules)
        .where(schedules.c.key_id == key_id)
        .values(next_rotation_at=policy.next_rotation(at), last_rotated_at=at, updated_at=at)
    )


async def hold_secret(
    conn: AsyncConnection, key_id: str, now: datetime, record: HeldSecret | None
) -> None:
    """Supersede the key's pending held secret (a newer rotation replaced it) and hold
    ``record`` instead, when given."""
    await conn.execute(
        update(held)
        .where(held.c.key_id == key_id, held.c.state == HeldState.PENDING.value)
        .values(sealed_secret=None, state=HeldState.SUPERSEDED.value, settled_at=now)
    )
    if record is None:
        return
    await conn.execute(delete(held).where(held.c.key_id == key_id))
    await conn.execute(
        insert(held).values(
            key_id=record.key_id,
            org_id=record.org_id,
            project_id=record.project_id,
            sealed_secret=record.sealed_secret,
            new_hash=record.new_hash,
            old_hash=record.old_hash,
            self_claim=record.self_claim,
            reason=record.reason,
            state=record.state.value,
            rotated_at=record.rotated_at,
            old_valid_until=record.old_valid_until,
            claim_until=record.claim_until,
            settled_at=record.settled_at,
        )
    )


async def follow_plan(
    conn: AsyncConnection,
    key_id: str,
    org_id: str,
    plan_id: str | None,
    created_at: datetime,
    now: datetime,
) -> None:
    """Keep a key's inherited schedule in step with its plan, inside the transaction that
    creates the key or changes its plan: the plan's policy when the key has none of its own,
    nothing inherited when the new plan has none (or the key has no plan)."""
    row = (await conn.execute(select(schedules).where(schedules.c.key_id == key_id))).first()
    if row is not None and row.from_plan is None:
        return  # the key's own policy wins over any plan's
    if row is not None and row.from_plan == plan_id:
        return
    await conn.execute(
        delete(schedules).where(schedules.c.key_id == key_id, schedules.c.from_plan.is_not(None))
    )
    if plan_id is None:
        return
    document = (
        await conn.execute(
            select(plan_rotation_policies.c.policy).where(
                plan_rotation_policies.c.plan_id == plan_id
            )
        )
    ).scalar_one_or_none()
    if document is None:
        return
    last = None if row is None else row.last_rotated_at
    policy = RotationPolicy.from_document(document)
    await conn.execute(
        insert(schedules).values(
            **_inherited(key_id, org_id, plan_id, policy, created_at, last, now)
        )
    )


async def forget_plan(conn: AsyncConnection, plan_id: str) -> None:
    """A deleted plan's policy, and the schedules its (revoked) keys inherited from it."""
    await conn.execute(delete(schedules).where(schedules.c.from_plan == plan_id))
    await conn.execute(
        delete(plan_rotation_policies).where(plan_rotation_policies.c.plan_id == plan_id)
    )


def _inherited(
    key_id: str,
    org_id: str,
    plan_id: str,
    policy: RotationPolicy,
    created_at: datetime,
    last_rotated_at: datetime | None,
    now: datetime,
) -> dict[str, Any]:
    return {
        "key_id": key_id,
        "org_id": org_id,
        "policy": policy.to_document(),
        "next_rotation_at": first_rotation(policy, last_rotated_at or created_at, now),
        "last_rotated_at": last_rotated_at,
        "updated_at": now,
        "from_plan": plan_id,
    }


def _schedule(row: Row[Any]) -> RotationSchedule:
    return RotationSchedule(
        key_id=row.key_id,
        org_id=row.org_id,
        policy=RotationPolicy.from_document(row.policy),
        next_rotation_at=row.next_rotation_at,
        last_rotated_at=row.last_rotated_at,
        updated_at=row.updated_at,
        from_plan=row.from_plan,
    )


def _held(row: Row[Any]) -> HeldSecret:
    return HeldSecret(
        key_id=row.key_id,
        org_id=row.org_id,
        project_id=row.project_id,
        sealed_secret=row.sealed_secret,
        new_hash=row.new_hash,
        old_hash=row.old_hash,
        self_claim=row.self_claim,
        reason=row.reason,
        state=HeldState(row.state),
        rotated_at=row.rotated_at,
        old_valid_until=row.old_valid_until,
        claim_until=row.claim_until,
        settled_at=row.settled_at,
    )
