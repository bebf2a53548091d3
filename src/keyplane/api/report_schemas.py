"""Response bodies of ``/v1/reports/security``."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, cast

from pydantic import BaseModel, Field

from keyplane.domain.security_report import Issue
from keyplane.services.security_reports import SecurityReport

IssueTypeName = Literal[
    "dormant_key",
    "unlimited_key",
    "stale_key",
    "wildcard_scope_key",
    "unrestricted_network_key",
    "expiring_key",
    "dormant_management_key",
    "wildcard_management_key",
]

Severity = Literal["info", "low", "medium", "high"]
TargetType = Literal["key", "management_key"]


class ThresholdsOut(BaseModel):
    dormant_days: int
    stale_days: int
    expiring_days: int
    management_unused_days: int


class IssueOut(BaseModel):
    type: IssueTypeName
    severity: Severity
    target_type: TargetType
    target_id: str
    project_id: str | None
    name: str

    @classmethod
    def of(cls, issue: Issue) -> IssueOut:
        return cls(
            type=issue.type.value,
            severity=cast(Severity, issue.severity),
            target_type=cast(TargetType, issue.target_type),
            target_id=issue.target_id,
            project_id=issue.project_id,
            name=issue.name,
        )


class SecurityReportOut(BaseModel):
    org_id: str
    project_id: str | None = Field(description="set when the management key is project-bound")
    generated_at: datetime
    thresholds: ThresholdsOut
    keys_scanned: int = Field(description="usable keys read (revoked and expired left out)")
    counts: dict[str, int] = Field(description="issues per type, over every key")
    issues: list[IssueOut] = Field(description="the first `limit` issues, in key id order")
    truncated: bool = Field(description="more issues exist than `issues` lists")

    @classmethod
    def of(cls, report: SecurityReport) -> SecurityReportOut:
        t = report.thresholds
        return cls(
            org_id=report.org_id,
            project_id=report.project_id,
            generated_at=report.generated_at,
            thresholds=ThresholdsOut(
                dormant_days=t.dormant_days,
                stale_days=t.stale_days,
                expiring_days=t.expiring_days,
                management_unused_days=t.management_unused_days,
            ),
            keys_scanned=report.keys_scanned,
            counts=report.counts,
            issues=[IssueOut.of(issue) for issue in report.issues],
            truncated=report.truncated,
        )


class SecurityReportEnvelope(BaseModel):
    data: SecurityReportOut
