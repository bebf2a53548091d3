"""Plans: create, read, change and delete named policy templates."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from keyplane.domain import ids
from keyplane.domain.changes import Journal, diff
from keyplane.domain.clock import Clock
from keyplane.domain.plans import PlanRecord
from keyplane.domain.policy import Policy, compile_policy
from keyplane.domain.policy_spec import PolicySpec
from keyplane.domain.tenancy import Principal
from keyplane.errors import ConflictError, NotFoundError, PermissionDeniedError, ValidationError
from keyplane.services.authz import require_scope
from keyplane.services.directory import KeyDirectory
from keyplane.store.base import PlanStore


class Plans:
    def __init__(self, store: PlanStore, directory: KeyDirectory, clock: Clock) -> None:
        self._store = store
        self._directory = directory
        self._clock = clock

    async def create(
        self, principal: Principal, name: str, description: str | None, policy: dict[str, Any]
    ) -> PlanRecord:
        _require_plan_writer(principal)
        check_policy(policy)
        now = self._clock.now()
        plan = PlanRecord(
            id=ids.new_id("plan"),
            org_id=principal.org_id,
            name=name,
            description=description,
            policy=policy,
            created_at=now,
            updated_at=now,
        )
        if await self._store.get(principal.org_id, name) is not None:
            raise ConflictError(f"a plan named {name!r} exists", code="PLAN_EXISTS")
        journal = Journal(principal.actor, now)
        _record(journal, "plan.created", plan, {"name": name, "description": description})
        return await self._store.create(plan, journal)

    async def get(self, principal: Principal, id_or_name: str) -> PlanRecord:
        require_scope(principal, "plans:read")
        return await self.find(principal.org_id, id_or_name)

    async def find(self, org_id: str, id_or_name: str) -> PlanRecord:
        plan = await self._store.get(org_id, id_or_name)
        if plan is None:
            raise NotFoundError(f"no plan {id_or_name!r}", code="PLAN_NOT_FOUND")
        return plan

    async def list(self, principal: Principal) -> list[PlanRecord]:
        require_scope(principal, "plans:read")
        return await self._store.list_all(principal.org_id)

    async def update(
        self, principal: Principal, id_or_name: str, changes: Mapping[str, Any]
    ) -> PlanRecord:
        _require_plan_writer(principal)
        current = await self.find(principal.org_id, id_or_name)
        if "policy" in changes:
            check_policy(changes["policy"])
        new_name = changes.get("name")
        if (
            new_name is not None
            and new_name != current.name
            and await self._store.get(principal.org_id, new_name) is not None
        ):
            raise ConflictError(f"a plan named {new_name!r} exists", code="PLAN_EXISTS")
        now = self._clock.now()
        plan = dataclasses.replace(current, **changes, updated_at=now)
        journal = Journal(principal.actor, now)
        changed = diff(_described(current), _described(plan))

        def record(keys_affected: int) -> None:
            if changed:
                details = {"changes": changed, "keys_affected": keys_affected}
                _record(journal, "plan.updated", plan, details)

        await self._store.update(plan, journal, record)
        # Every key on the plan has a new effective policy from now on.
        await self._directory.clear()
        return plan

    async def delete(self, principal: Principal, id_or_name: str) -> PlanRecord:
        _require_plan_writer(principal)
        plan = await self.find(principal.org_id, id_or_name)
        journal = Journal(principal.actor, self._clock.now())
        _record(journal, "plan.deleted", plan, {"name": plan.name})
        await self._store.delete(principal.org_id, plan.id, journal)
        await self._directory.clear()
        return plan


def _record(journal: Journal, action: str, plan: PlanRecord, details: dict[str, Any]) -> None:
    journal.record(
        action, org_id=plan.org_id, target_type="plan", target_id=plan.id, details=details
    )


def _described(plan: PlanRecord) -> dict[str, Any]:
    """The fields of a plan an update may change, for the audit diff."""
    return {"name": plan.name, "description": plan.description, "policy": plan.policy}


def _require_plan_writer(principal: Principal) -> None:
    require_scope(principal, "plans:write")
    if principal.project_id is not None:
        # Plans belong to the organization: a change reaches keys of every project.
        raise PermissionDeniedError("only organization-wide management keys can change plans")


def check_policy(document: Mapping[str, Any]) -> Policy:
    """The compiled policy; refuse a document that does not parse (the API checked each field)."""
    try:
        return compile_policy(PolicySpec.from_document(document))
    except (ValueError, KeyError, TypeError) as exc:
        raise ValidationError(f"invalid policy: {exc}", code="INVALID_POLICY") from None
