"""``/v1/reports/security``: seed 000's ``security_audit()`` over the caller's keys."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from keyplane.api.deps import PrincipalDep, SecurityReportsDep
from keyplane.api.params import reject_unknown_params
from keyplane.api.report_schemas import IssueTypeName, SecurityReportEnvelope, SecurityReportOut
from keyplane.domain.security_report import MAX_DAYS, MAX_LISTED, MIN_DAYS, IssueType, Thresholds

router = APIRouter(prefix="/v1/reports", tags=["reports"])


def _days(what: str, default: int) -> object:
    return Query(ge=MIN_DAYS, le=MAX_DAYS, description=f"{what} (days, default {default})")


DormantDays = Annotated[int, _days("a key unused this long is dormant", 90)]
StaleDays = Annotated[int, _days("a secret this old, never rotated since, is stale", 180)]
ExpiringDays = Annotated[int, _days("a key expiring within this is reported", 14)]
ManagementUnusedDays = Annotated[int, _days("a management key unused this long is reported", 90)]
_PARAMS = {
    "dormant_days",
    "stale_days",
    "expiring_days",
    "management_unused_days",
    "type",
    "limit",
}


@router.get("/security", response_model=SecurityReportEnvelope)
async def security_report(
    request: Request,
    principal: PrincipalDep,
    reports: SecurityReportsDep,
    dormant_days: DormantDays = 90,
    stale_days: StaleDays = 180,
    expiring_days: ExpiringDays = 14,
    management_unused_days: ManagementUnusedDays = 90,
    type: Annotated[
        list[IssueTypeName] | None,
        Query(max_length=len(IssueType), description="list only these issue types (repeatable)"),
    ] = None,
    limit: Annotated[
        int, Query(ge=0, le=MAX_LISTED, description="most issues listed (counts cover all)")
    ] = 100,
) -> SecurityReportEnvelope:
    """Risky keys: dormant, unlimited, stale, wildcard, open network, expiring (reports:read)."""
    reject_unknown_params(request, _PARAMS)
    thresholds = Thresholds(dormant_days, stale_days, expiring_days, management_unused_days)
    types = None if not type else frozenset(IssueType(name) for name in type)
    report = await reports.report(principal, thresholds, types=types, limit=limit)
    return SecurityReportEnvelope(data=SecurityReportOut.of(report))
