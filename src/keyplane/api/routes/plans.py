"""``/v1/plans``: named policy templates."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from keyplane.api.deps import PlansDep, PlansWriter, PrincipalDep
from keyplane.api.exact import ExactJsonRoute
from keyplane.api.policy import to_document
from keyplane.api.schemas import (
    Ack,
    AckEnvelope,
    PlanCreate,
    PlanEnvelope,
    PlanList,
    PlanOut,
    PlanRef,
    PlanUpdate,
)
from keyplane.domain.plans import PlanRecord
from keyplane.domain.tenancy import Principal
from keyplane.services.authz import may_read

router = APIRouter(prefix="/v1/plans", tags=["plans"], route_class=ExactJsonRoute)


def _answer(principal: Principal, plan: PlanRecord) -> PlanEnvelope | AckEnvelope:
    """The plan for a caller with ``plans:read``; only its id for a write-only one."""
    if not may_read(principal, "plans:read"):
        return AckEnvelope(data=Ack(id=plan.id))
    return PlanEnvelope(data=PlanOut.of(plan))


@router.post("", status_code=201, response_model=PlanEnvelope | AckEnvelope)
async def create_plan(
    body: PlanCreate, principal: PlansWriter, plans: PlansDep
) -> PlanEnvelope | AckEnvelope:
    """Create a plan; keys that name it get its policy, merged with their own overrides."""
    plan = await plans.create(principal, body.name, body.description, to_document(body.policy))
    return _answer(principal, plan)


@router.get("", response_model=PlanList)
async def list_plans(principal: PrincipalDep, plans: PlansDep) -> PlanList:
    """Every plan of the organization, by name."""
    return PlanList(data=[PlanOut.of(plan) for plan in await plans.list(principal)])


@router.get("/{plan}", response_model=PlanEnvelope)
async def get_plan(plan: PlanRef, principal: PrincipalDep, plans: PlansDep) -> PlanEnvelope:
    """One plan by name or id."""
    return PlanEnvelope(data=PlanOut.of(await plans.get(principal, plan)))


@router.patch("/{plan}", response_model=PlanEnvelope | AckEnvelope)
async def update_plan(
    plan: PlanRef, body: PlanUpdate, principal: PlansWriter, plans: PlansDep
) -> PlanEnvelope | AckEnvelope:
    """Change a plan; every key on it follows at once."""
    changes: dict[str, Any] = body.model_dump(exclude_unset=True)
    for field in ("name", "policy"):
        if field in changes and changes[field] is None:
            changes.pop(field)
    if "policy" in changes:
        changes["policy"] = to_document(body.policy)
    updated = await plans.update(principal, plan, changes)
    return _answer(principal, updated)


@router.delete("/{plan}", response_model=PlanEnvelope | AckEnvelope)
async def delete_plan(
    plan: PlanRef, principal: PrincipalDep, plans: PlansDep
) -> PlanEnvelope | AckEnvelope:
    """Delete a plan no key uses (409 ``PLAN_IN_USE`` otherwise)."""
    return _answer(principal, await plans.delete(principal, plan))
