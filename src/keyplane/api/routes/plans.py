"""``/v1/plans``: named policy templates."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from keyplane.api.deps import PlansWriter, PrincipalDep, RuntimeDep
from keyplane.api.policy import to_document
from keyplane.api.schemas import PlanCreate, PlanEnvelope, PlanList, PlanOut, PlanRef, PlanUpdate

router = APIRouter(prefix="/v1/plans", tags=["plans"])


@router.post("", status_code=201, response_model=PlanEnvelope)
async def create_plan(
    body: PlanCreate, principal: PlansWriter, runtime: RuntimeDep
) -> PlanEnvelope:
    """Create a plan; keys that name it get its policy, merged with their own overrides."""
    plan = await runtime.plans.create(
        principal, body.name, body.description, to_document(body.policy)
    )
    return PlanEnvelope(data=PlanOut.of(plan))


@router.get("", response_model=PlanList)
async def list_plans(principal: PrincipalDep, runtime: RuntimeDep) -> PlanList:
    """Every plan of the organization, by name."""
    return PlanList(data=[PlanOut.of(plan) for plan in await runtime.plans.list(principal)])


@router.get("/{plan}", response_model=PlanEnvelope)
async def get_plan(plan: PlanRef, principal: PrincipalDep, runtime: RuntimeDep) -> PlanEnvelope:
    """One plan by name or id."""
    return PlanEnvelope(data=PlanOut.of(await runtime.plans.get(principal, plan)))


@router.patch("/{plan}", response_model=PlanEnvelope)
async def update_plan(
    plan: PlanRef, body: PlanUpdate, principal: PlansWriter, runtime: RuntimeDep
) -> PlanEnvelope:
    """Change a plan; every key on it follows at once."""
    changes: dict[str, Any] = body.model_dump(exclude_unset=True)
    for field in ("name", "policy"):
        if field in changes and changes[field] is None:
            changes.pop(field)
    if "policy" in changes:
        changes["policy"] = to_document(body.policy)
    updated = await runtime.plans.update(principal, plan, changes)
    return PlanEnvelope(data=PlanOut.of(updated))


@router.delete("/{plan}", response_model=PlanEnvelope)
async def delete_plan(plan: PlanRef, principal: PrincipalDep, runtime: RuntimeDep) -> PlanEnvelope:
    """Delete a plan no key uses (409 ``PLAN_IN_USE`` otherwise)."""
    return PlanEnvelope(data=PlanOut.of(await runtime.plans.delete(principal, plan)))
