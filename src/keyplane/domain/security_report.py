"""The security report (seed 000's ``security_audit()``): which keys look risky, and why (pure).

The store counts keys in groups (:class:`KeyGroup`: same plan, policy, environment, scopes),
with the time comparisons already made in SQL, so a million keys cost no per-key work in
Python; the listed issues come from light rows (:class:`KeyFacts`) read until the list is full.

Issue types keep seed 000's names (``dormant_key``,
``unlimited_key``, ``stale_key``) and add ours.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from keyplane.domain import policy_spec
from keyplane.domain.policy_spec import PolicySpec


class IssueType(StrEnum):
    #: Never used, or not used for ``dormant_days``.
    DORMANT_KEY = "dormant_key"
    #: No budget and no rate limit in the effective policy (plan merged with key).
    UNLIMITED_KEY = "unlimited_key"
    #: Its current secret is older than ``stale_days`` (created or last rotated then).
    STALE_KEY = "stale_key"
    #: A ``live`` key holding a wildcard scope (``*``, ``read:*``).
    WILDCARD_SCOPE_KEY = "wildcard_scope_key"
    #: A ``live`` key with no IP allow list, origin or referrer rule.
    UNRESTRICTED_NETWORK_KEY = "unrestricted_network_key"
    #: Expires within ``expiring_days``.
    EXPIRING_KEY = "expiring_key"
    #: A management key not used for ``management_unused_days`` (or never).
    DORMANT_MANAGEMENT_KEY = "dormant_management_key"
    #: A management key holding ``*`` (every scope).
    WILDCARD_MANAGEMENT_KEY = "wildcard_management_key"


SEVERITY: Mapping[IssueType, str] = {
    IssueType.DORMANT_KEY: "low",
    IssueType.UNLIMITED_KEY: "high",
    IssueType.STALE_KEY: "medium",
    IssueType.WILDCARD_SCOPE_KEY: "medium",
    IssueType.UNRESTRICTED_NETWORK_KEY: "low",
    IssueType.EXPIRING_KEY: "info",
    IssueType.DORMANT_MANAGEMENT_KEY: "medium",
    IssueType.WILDCARD_MANAGEMENT_KEY: "high",
}

#: Bounds of every day threshold (one day to ten years).
MIN_DAYS = 1
MAX_DAYS = 3650
#: Most issues one report lists (the counts always cover every key).
MAX_LISTED = 1000
#: Issue types decided by SQL alone (dates): a list of only these reads flagged rows only.
DATE_TYPES = frozenset({"dormant_key", "stale_key", "expiring_key"})


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The report's parameters, in days."""

    dormant_days: int = 90
    stale_days: int = 180
    expiring_days: int = 14
    management_unused_days: int = 90

    def __post_init__(self) -> None:
        for name in ("dormant_days", "stale_days", "expiring_days", "management_unused_days"):
            value = getattr(self, name)
            if not MIN_DAYS <= value <= MAX_DAYS:
                raise ValueError(f"{name} is {MIN_DAYS}-{MAX_DAYS}")

    def cutoffs(self, now: datetime) -> Cutoffs:
        return Cutoffs(
            now=now,
            dormant_before=now - timedelta(days=self.dormant_days),
            stale_before=now - timedelta(days=self.stale_days),
            expiring_before=now + timedelta(days=self.expiring_days),
            management_unused_before=now - timedelta(days=self.management_unused_days),
        )


@dataclass(frozen=True, slots=True)
class Cutoffs:
    """The instants the store compares against (the thresholds at one ``now``)."""

    now: datetime
    dormant_before: datetime
    stale_before: datetime
    expiring_before: datetime
    management_unused_before: datetime


@dataclass(frozen=True, slots=True)
class KeyFacts:
    """One usable (not revoked, not expired) key as the store reads it for the report."""

    id: str
    project_id: str
    name: str
    live: bool
    plan_id: str | None
    #: The key's stored policy document as JSON text (parsed once per distinct text).
    policy_text: str
    #: The key's scopes as JSON text.
    scopes_text: str
    dormant: bool
    stale: bool
    expiring: bool


@dataclass(frozen=True, slots=True)
class KeyGroup:
    """Usable keys sharing a plan, a policy, an environment and scopes, counted by the store."""

    plan_id: str | None
    policy_text: str
    live: bool
    scopes_text: str
    count: int
    dormant: int
    stale: int
    expiring: int


@dataclass(frozen=True, slots=True)
class ManagementKeyFacts:
    id: str
    project_id: str | None
    name: str
    scopes: tuple[str, ...]
    dormant: bool


@dataclass(frozen=True, slots=True)
class Issue:
    type: IssueType
    target_type: str
    target_id: str
    project_id: str | None
    name: str

    @property
    def severity(self) -> str:
        return SEVERITY[self.type]


@dataclass(frozen=True, slots=True)
class PolicyTraits:
    """What the report needs of an effective policy."""

    limited: bool
    network_restricted: bool


def traits_of(spec: PolicySpec) -> PolicyTraits:
    """Whether a policy limits spending or rate, and whether it restricts where calls come from.

    A budget whose credit limit is ``None`` only meters, so it limits nothing; token windows
    and concurrency alone are not a spending or rate limit either.
    """
    budget = spec.budget
    has_budget = isinstance(budget, policy_spec.Budget) and (
        isinstance(budget.credit_limit_micros, int)
        or bool(policy_spec.value_or(budget.per_model, ()))
    )
    has_rate = bool(policy_spec.value_or(spec.rate_limits, ()))
    network = spec.network
    restricted = isinstance(network, policy_spec.NetworkRules) and any(
        policy_spec.value_or(rule, ())
        for rule in (network.ip_allow, network.origins, network.referrers)
    )
    return PolicyTraits(limited=has_budget or has_rate, network_restricted=restricted)


@dataclass
class ReportBuilder:
    """Counts issues from key groups and lists the first ``limit`` of them from key rows.

    Policies are parsed once per distinct (plan, key policy text): a population of a million
    keys typically has a handful, so neither pass parses a policy per key.
    """

    plan_policies: Mapping[str, Mapping[str, Any]]
    listed_types: frozenset[IssueType] | None = None
    limit: int = 100
    counts: Counter[IssueType] = field(default_factory=Counter)
    issues: list[Issue] = field(default_factory=list)
    keys_scanned: int = 0
    _traits: dict[tuple[str | None, str], PolicyTraits] = field(default_factory=dict)
    _wildcard: dict[str, bool] = field(default_factory=dict)

    def count_groups(self, groups: Iterable[KeyGroup]) -> None:
        for group in groups:
            self.keys_scanned += group.count
            self.counts[IssueType.DORMANT_KEY] += group.dormant
            self.counts[IssueType.STALE_KEY] += group.stale
            self.counts[IssueType.EXPIRING_KEY] += group.expiring
            traits = self._traits_of(group.plan_id, group.policy_text)
            if not traits.limited:
                self.counts[IssueType.UNLIMITED_KEY] += group.count
            if group.live:
                if self._has_wildcard(group.scopes_text):
                    self.counts[IssueType.WILDCARD_SCOPE_KEY] += group.count
                if not traits.network_restricted:
                    self.counts[IssueType.UNRESTRICTED_NETWORK_KEY] += group.count

    @property
    def full(self) -> bool:
        return len(self.issues) >= self.limit

    def list_keys(self, rows: Iterable[KeyFacts]) -> None:
        """Add the issues of ``rows`` (in id order) to the list, until it is full."""
        for row in rows:
            found = []
            if row.dormant:
                found.append(IssueType.DORMANT_KEY)
            if row.stale:
                found.append(IssueType.STALE_KEY)
            if row.expiring:
                found.append(IssueType.EXPIRING_KEY)
            traits = self._traits_of(row.plan_id, row.policy_text)
            if not traits.limited:
                found.append(IssueType.UNLIMITED_KEY)
            if row.live:
                if self._has_wildcard(row.scopes_text):
                    found.append(IssueType.WILDCARD_SCOPE_KEY)
                if not traits.network_restricted:
                    found.append(IssueType.UNRESTRICTED_NETWORK_KEY)
            for kind in found:
                if not self.full and self._listed(kind):
                    self.issues.append(Issue(kind, "key", row.id, row.project_id, row.name))

    def add_management_keys(self, rows: Iterable[ManagementKeyFacts]) -> None:
        """Count and list the management keys' issues (they are few: all are read)."""
        for row in rows:
            found = []
            if row.dormant:
                found.append(IssueType.DORMANT_MANAGEMENT_KEY)
            if "*" in row.scopes:
                found.append(IssueType.WILDCARD_MANAGEMENT_KEY)
            for kind in found:
                self.counts[kind] += 1
                if not self.full and self._listed(kind):
                    self.issues.append(
                        Issue(kind, "management_key", row.id, row.project_id, row.name)
                    )

    def _listed(self, kind: IssueType) -> bool:
        return self.listed_types is None or kind in self.listed_types

    def _traits_of(self, plan_id: str | None, policy_text: str) -> PolicyTraits:
        cache_key = (plan_id, policy_text)
        traits = self._traits.get(cache_key)
        if traits is None:
            plan = self.plan_policies.get(plan_id) if plan_id is not None else None
            overrides = _loads(policy_text)
            try:
                spec = policy_spec.effective(plan, overrides)
            except ValueError:
                spec = PolicySpec()  # unreadable stored policy: report it as unlimited
            traits = traits_of(spec)
            self._traits[cache_key] = traits
        return traits

    def _has_wildcard(self, scopes_text: str) -> bool:
        known = self._wildcard.get(scopes_text)
        if known is None:
            held = _loads(scopes_text)
            known = isinstance(held, list) and any(
                isinstance(scope, str) and "*" in scope.split(":") for scope in held
            )
            self._wildcard[scopes_text] = known
        return known


def _loads(text: str) -> Any:
    try:
        return json.loads(text) if text else {}
    except ValueError:
        return {}


def summary(counts: Mapping[IssueType, int]) -> dict[str, int]:
    """Counts for every issue type, zeros included, in the catalogue's order."""
    return {kind.value: counts.get(kind, 0) for kind in IssueType}
