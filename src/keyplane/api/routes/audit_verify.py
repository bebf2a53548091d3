"""``/v1/audit/verify``: whether the organization's audit chain is whole (docs/audit.md)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from keyplane.api.deps import AuditDep, PrincipalDep
from keyplane.api.params import reject_unknown_params

router = APIRouter(prefix="/v1", tags=["audit"])


@router.get("/audit/verify")
async def verify_audit(request: Request, principal: PrincipalDep, audit: AuditDep) -> Any:
    """Verify the audit chain from its latest checkpoint and name its first broken link."""
    reject_unknown_params(request, set())
    result = await audit.verify(principal)
    broken = result.first_broken
    checkpoint = result.checkpoint
    return {
        "ok": result.ok,
        "checked": result.checked,
        "first_broken": None
        if broken is None
        else {"seq": broken.seq, "id": broken.id, "reason": broken.reason},
        "checkpoint": None
        if checkpoint is None
        else {"seq": checkpoint.seq, "hash": checkpoint.hash},
    }
