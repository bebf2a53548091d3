"""The security report: risky keys of an organization, on demand or on a schedule.

One pass over the organization's keys (``store/security_report.py`` reads them in batches, the
domain folds them, ``domain/security_report.py``): the counts cover every key, the list holds
the first ``limit`` issues in key id order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from keyplane.domain.changes import SYSTEM, Journal
from keyplane.domain.clock import Clock
from keyplane.domain.security_report import (
    DATE_TYPES,
    MAX_LISTED,
    Issue,
    IssueType,
    ReportBuilder,
    Thresholds,
    summary,
)
from keyplane.domain.tenancy import Principal
from keyplane.errors import ValidationError
from keyplane.services.authz import require_scope
from keyplane.store.plans import PlanStore
from keyplane.store.security_report import SecurityReportStore

READ = "reports:read"
#: Keys read per page while filling the list of issues.
PAGE = 1000
#: The event a scheduled report sends (and the audit action it is recorded as).
REPORT_EVENT = "security.report"


class JournalRecorder(Protocol):
    async def record_alone(self, journal: Journal) -> None:
        """Commit ``journal`` on its own (audit log and webhook outbox)."""
        ...


@dataclass(frozen=True, slots=True)
class SecurityReport:
    org_id: str
    project_id: str | None
    generated_at: datetime
    thresholds: Thresholds
    keys_scanned: int
    counts: dict[str, int]
    issues: Sequence[Issue]
    #: More issues exist than ``issues`` lists (see ``counts``).
    truncated: bool


class SecurityReports:
    def __init__(
        self, store: SecurityReportStore, plans: PlanStore, audit: JournalRecorder, clock: Clock
    ) -> None:
        self._store = store
        self._plans = plans
        self._audit = audit
        self._clock = clock

    async def report(
        self,
        principal: Principal,
        thresholds: Thresholds,
        *,
        types: frozenset[IssueType] | None = None,
        limit: int = 100,
    ) -> SecurityReport:
        """The caller's report: its organization, or only its project when it is bound to one."""
        require_scope(principal, READ)
        if not 0 <= limit <= MAX_LISTED:
            raise ValidationError(f"limit is 0-{MAX_LISTED}")
        return await self._build(
            principal.org_id, principal.project_id, thresholds, types=types, limit=limit
        )

    async def run_scheduled(self, thresholds: Thresholds | None = None) -> list[SecurityReport]:
        """Build every organization's report and send each as a ``security.report`` event
        (journaled with actor SYSTEM, so audited). For the job runner; no caller to check."""
        thresholds = thresholds or Thresholds()
        reports = []
        for org_id in await self._store.org_ids():
            report = await self._build(org_id, None, thresholds, types=None, limit=0)
            journal = Journal(SYSTEM, self._clock.now())
            journal.record(
                REPORT_EVENT,
                org_id=org_id,
                target_type="organization",
                target_id=org_id,
                details={
                    "keys_scanned": report.keys_scanned,
                    "counts": report.counts,
                    "thresholds": _thresholds(thresholds),
                },
            )
            await self._audit.record_alone(journal)
            reports.append(report)
        return reports

    async def _build(
        self,
        org_id: str,
        project_id: str | None,
        thresholds: Thresholds,
        *,
        types: frozenset[IssueType] | None,
        limit: int,
    ) -> SecurityReport:
        now = self._clock.now()
        cutoffs = thresholds.cutoffs(now)
        plans = {plan.id: plan.policy for plan in await self._plans.list_all(org_id)}
        builder = ReportBuilder(plans, listed_types=types, limit=limit)
        builder.count_groups(await self._store.key_groups(org_id, project_id, cutoffs))
        # Management keys first: few, and the riskiest (they manage everything else).
        builder.add_management_keys(
            await self._store.management_key_facts(org_id, project_id, cutoffs)
        )
        flagged_only = types is not None and {kind.value for kind in types} <= DATE_TYPES
        after: str | None = None
        while not builder.full:
            page = await self._store.key_facts(
                org_id, project_id, cutoffs, after=after, limit=PAGE, flagged_only=flagged_only
            )
            builder.list_keys(page)
            if len(page) < PAGE:
                break
            after = page[-1].id
        listed_total = sum(
            count for kind, count in builder.counts.items() if types is None or kind in types
        )
        return SecurityReport(
            org_id=org_id,
            project_id=project_id,
            generated_at=now,
            thresholds=thresholds,
            keys_scanned=builder.keys_scanned,
            counts=summary(builder.counts),
            issues=tuple(builder.issues),
            truncated=listed_total > len(builder.issues),
        )


def _thresholds(thresholds: Thresholds) -> dict[str, int]:
    return {
        "dormant_days": thresholds.dormant_days,
        "stale_days": thresholds.stale_days,
        "expiring_days": thresholds.expiring_days,
        "management_unused_days": thresholds.management_unused_days,
    }
