"""The ``PlanStore`` contract (``db.plans``), on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from keyplane.domain import ids
from keyplane.domain.keys import KeyStatus
from keyplane.domain.plans import PlanRecord
from keyplane.errors import ConflictError, NotFoundError
from keyplane.store.database import Database as Db
from tests.store.conftest import NOW, key_record, other_tenancy, tenancy


def _plan(org_id: str, name: str, **changes: object) -> PlanRecord:
    plan = PlanRecord(
        id=ids.new_id("plan"),
        org_id=org_id,
        name=name,
        created_at=NOW,
        updated_at=NOW,
        description="a plan",
        policy={"rate_limits": [{"limit": 10, "period": "minute"}], "budget": None},
    )
    return dataclasses.replace(plan, **changes)  # type: ignore[arg-type]


async def test_a_plan_round_trips_by_id_and_by_name(db: Db) -> None:
    org, _ = await tenancy(db)
    plan = await db.plans.create(_plan(org, "pro"))
    assert await db.plans.get(org, plan.id) == plan
    assert await db.plans.get(org, "pro") == plan
    assert await db.plans.get(org, "missing") is None
    with pytest.raises(ConflictError):
        await db.plans.create(_plan(org, "pro"))


async def test_plans_list_in_name_order(db: Db) -> None:
    org, _ = await tenancy(db)
    for name in ("team", "free", "pro"):
        await db.plans.create(_plan(org, name))
    assert [p.name for p in await db.plans.list_all(org)] == ["free", "pro", "team"]


async def test_another_organizations_plans_are_invisible(db: Db) -> None:
    org, _ = await tenancy(db)
    other, _ = await other_tenancy(db)
    theirs = await db.plans.create(_plan(other, "pro"))
    mine = await db.plans.create(_plan(org, "pro"))  # the same name in another org is fine
    assert await db.plans.get(org, theirs.id) is None
    assert await db.plans.get(org, "pro") == mine
    assert await db.plans.list_all(org) == [mine]
    with pytest.raises(NotFoundError):
        await db.plans.update(dataclasses.replace(theirs, org_id=org, name="stolen"))
    with pytest.raises(NotFoundError):
        await db.plans.delete(org, theirs.id)
    assert await db.plans.get(other, theirs.id) == theirs


async def test_update_replaces_the_mutable_fields(db: Db) -> None:
    org, _ = await tenancy(db)
    plan = await db.plans.create(_plan(org, "pro"))
    changed = dataclasses.replace(
        plan,
        name="pro-2",
        description=None,
        policy={"budget": {"credit_limit_micros": 5}},
        updated_at=NOW + timedelta(hours=1),
        created_at=NOW + timedelta(days=9),  # immutable: ignored
    )
    await db.plans.update(changed)
    stored = await db.plans.get(org, plan.id)
    assert stored == dataclasses.replace(changed, created_at=NOW)
    with pytest.raises(NotFoundError) as missing:
        await db.plans.update(_plan(org, "ghost"))
    assert missing.value.code == "PLAN_NOT_FOUND"


async def test_a_plan_in_use_cannot_be_deleted_until_its_keys_are_revoked(db: Db) -> None:
    org, project = await tenancy(db)
    plan = await db.plans.create(_plan(org, "pro"))
    key = await db.keys.create(key_record(org, project, plan_id=plan.id))
    with pytest.raises(ConflictError) as in_use:
        await db.plans.delete(org, plan.id)
    assert in_use.value.code == "PLAN_IN_USE"
    await db.keys.mutate(org, key.id, lambda r: dataclasses.replace(r, status=KeyStatus.REVOKED))
    await db.plans.delete(org, plan.id)
    assert await db.plans.get(org, plan.id) is None
    reloaded = await db.keys.get(org, key.id)
    assert reloaded is not None and reloaded.plan_id is None  # the revoked key let go
    with pytest.raises(NotFoundError) as gone:
        await db.plans.delete(org, plan.id)
    assert gone.value.code == "PLAN_NOT_FOUND"
