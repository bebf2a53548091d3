"""Plans (named policy templates): :class:`PlanStore` and its SQL implementation."""

from __future__ import annotations

import builtins
from collections.abc import Callable
from typing import Any, Protocol

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Row

from keyplane.domain import ids
from keyplane.domain.changes import Journal
from keyplane.domain.keys import KeyStatus
from keyplane.domain.plans import PlanRecord
from keyplane.errors import ConflictError, NotFoundError
from keyplane.store.rotations import forget_plan
from keyplane.store.tables import api_keys, plans
from keyplane.store.unit import UnitOfWork


class PlanStore(Protocol):
    """Plans, each in one organization; a plan's name is unique within it."""

    async def create(self, plan: PlanRecord, journal: Journal | None = None) -> PlanRecord:
        """Insert a plan (with what ``journal`` recorded); ConflictError when its name is
        taken in its organization."""
        ...

    async def get(self, org_id: str, id_or_name: str) -> PlanRecord | None:
        """A plan of ``org_id`` by id or by name (another org's plan is ``None``)."""
        ...

    async def list_all(self, org_id: str) -> builtins.list[PlanRecord]:
        """Every plan of ``org_id``, in name order."""
        ...

    async def update(
        self,
        plan: PlanRecord,
        journal: Journal | None = None,
        keys_affected: Callable[[int], None] | None = None,
    ) -> PlanRecord:
        """Replace the plan's name, description, policy and ``updated_at`` (its id, org and
        creation time stay), with what ``journal`` recorded; ``keys_affected`` is called in
        the transaction with how many keys (not revoked) are on the plan. NotFoundError
        ``PLAN_NOT_FOUND`` when it is not in its org, ConflictError when the new name is
        taken."""
        ...

    async def delete(self, org_id: str, plan_id: str, journal: Journal | None = None) -> None:
        """Delete a plan (with what ``journal`` recorded); ConflictError ``PLAN_IN_USE`` while
        a key that is not revoked refers to it (revoked keys let go of it), NotFoundError
        ``PLAN_NOT_FOUND`` when it is not in ``org_id``. One transaction: a key cannot take
        the plan in between."""
        ...


class SqlPlanStore:
    """:class:`PlanStore` over the shared unit of work."""

    def __init__(self, unit: UnitOfWork) -> None:
        self._unit = unit

    async def create(self, plan: PlanRecord, journal: Journal | None = None) -> PlanRecord:
        async with self._unit.write(journal) as conn:
            await conn.execute(insert(plans).values(**_plan_values(plan)))
        return plan

    async def get(self, org_id: str, id_or_name: str) -> PlanRecord | None:
        column = plans.c.id if ids.looks_like_id(id_or_name, "plan") else plans.c.name
        async with self._unit.read() as conn:
            row = (
                await conn.execute(
                    select(plans).where(plans.c.org_id == org_id, column == id_or_name)
                )
            ).first()
        return None if row is None else _plan(row)

    async def list_all(self, org_id: str) -> builtins.list[PlanRecord]:
        async with self._unit.read() as conn:
            rows = await conn.execute(
                select(plans).where(plans.c.org_id == org_id).order_by(plans.c.name)
            )
            return [_plan(row) for row in rows]

    async def update(
        self,
        plan: PlanRecord,
        journal: Journal | None = None,
        keys_affected: Callable[[int], None] | None = None,
    ) -> PlanRecord:
        async with self._unit.write(journal) as conn:
            values = _plan_values(plan)
            for immutable in ("id", "org_id", "created_at"):
                values.pop(immutable)
            result = await conn.execute(
                update(plans)
                .where(plans.c.org_id == plan.org_id, plans.c.id == plan.id)
                .values(**values)
            )
            if result.rowcount == 0:
                raise NotFoundError(f"no plan {plan.id!r}", code="PLAN_NOT_FOUND")
            if keys_affected is not None:
                on_plan = await conn.scalar(
                    select(func.count())
                    .select_from(api_keys)
                    .where(
                        api_keys.c.plan_id == plan.id,
                        api_keys.c.status != KeyStatus.REVOKED.value,
                    )
                )
                keys_affected(int(on_plan or 0))
        return plan

    async def delete(self, org_id: str, plan_id: str, journal: Journal | None = None) -> None:
        async with self._unit.write(journal) as conn:
            in_use = (
                await conn.execute(
                    select(api_keys.c.id).where(
                        api_keys.c.plan_id == plan_id,
                        api_keys.c.status != KeyStatus.REVOKED.value,
                    )
                )
            ).first()
            if in_use is not None:
                raise ConflictError("keys still use this plan", code="PLAN_IN_USE")
            await forget_plan(conn, plan_id)
            # Revoked keys can never be used again; they let go of the plan.
            await conn.execute(
                update(api_keys).where(api_keys.c.plan_id == plan_id).values(plan_id=None)
            )
            result = await conn.execute(
                plans.delete().where(plans.c.org_id == org_id, plans.c.id == plan_id)
            )
            if result.rowcount == 0:
                raise NotFoundError(f"no plan {plan_id!r}", code="PLAN_NOT_FOUND")


def _plan_values(plan: PlanRecord) -> dict[str, Any]:
    return {
        "id": plan.id,
        "org_id": plan.org_id,
        "name": plan.name,
        "description": plan.description,
        "policy": plan.policy,
        "created_at": plan.created_at,
        "updated_at": plan.updated_at,
    }


def _plan(row: Row[Any]) -> PlanRecord:
    return PlanRecord(
        id=row.id,
        org_id=row.org_id,
        name=row.name,
        description=row.description,
        policy=row.policy,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
