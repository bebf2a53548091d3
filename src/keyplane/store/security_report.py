"""What the security report reads: :class:`SecurityReportStore` and its SQL implementation.

Built for a million keys: the counts come from one aggregate query (the time comparisons are
made in SQL, keys are grouped by plan, policy text, environment and scopes text, which a
population has few of), so no per-key row reaches Python; the listed issues come from short
keyset pages along the ``(org_id, id)`` index, read only until the list is full.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Text, and_, case, cast, func, or_, select
from sqlalchemy.sql import ColumnElement

from keyplane.domain.keys import Environment, KeyStatus
from keyplane.domain.security_report import Cutoffs, KeyFacts, KeyGroup, ManagementKeyFacts
from keyplane.store.tables import api_key_secrets, api_keys, management_keys, organizations
from keyplane.store.unit import UnitOfWork


class SecurityReportStore(Protocol):
    async def key_groups(
        self, org_id: str, project_id: str | None, cutoffs: Cutoffs
    ) -> list[KeyGroup]:
        """The usable keys of ``org_id`` (of ``project_id`` when given) counted by plan, policy
        text, environment and scopes text, with how many of each group are dormant, stale and
        expiring at ``cutoffs``. Usable: not revoked, not expired at ``cutoffs.now``. One
        aggregate query: the rows never leave the database."""
        ...

    async def key_facts(
        self,
        org_id: str,
        project_id: str | None,
        cutoffs: Cutoffs,
        *,
        after: str | None,
        limit: int,
        flagged_only: bool = False,
    ) -> list[KeyFacts]:
        """Up to ``limit`` usable keys in id order after the id ``after``; only those dormant,
        stale or expiring when ``flagged_only``."""
        ...

    async def management_key_facts(
        self, org_id: str, project_id: str | None, cutoffs: Cutoffs
    ) -> list[ManagementKeyFacts]:
        """The unrevoked management keys of ``org_id`` (bound to ``project_id`` when given)."""
        ...

    async def org_ids(self) -> list[str]:
        """Every organization's id, in id order (for the scheduled report)."""
        ...


class SqlSecurityReportStore:
    """:class:`SecurityReportStore` over the shared unit of work."""

    def __init__(self, unit: UnitOfWork) -> None:
        self._unit = unit

    async def key_groups(
        self, org_id: str, project_id: str | None, cutoffs: Cutoffs
    ) -> list[KeyGroup]:
        k = api_keys.c
        dormant, stale, expiring = _flags(cutoffs)
        policy, scopes = cast(k.policy, Text), cast(k.scopes, Text)
        query = (
            select(
                k.plan_id,
                policy,
                k.environment,
                scopes,
                func.count(),
                func.sum(dormant),
                func.sum(stale),
                func.sum(expiring),
            )
            .join(api_key_secrets, api_key_secrets.c.hash == k.hash)
            .where(*_usable(org_id, project_id, cutoffs))
            .group_by(k.plan_id, policy, k.environment, scopes)
        )
        async with self._unit.read() as conn:
            rows = (await conn.execute(query)).all()
        live = Environment.LIVE.value
        return [
            KeyGroup(
                plan_id=row[0],
                policy_text=row[1] or "",
                live=row[2] == live,
                scopes_text=row[3] or "",
                count=int(row[4]),
                dormant=int(row[5] or 0),
                stale=int(row[6] or 0),
                expiring=int(row[7] or 0),
            )
            for row in rows
        ]

    async def key_facts(
        self,
        org_id: str,
        project_id: str | None,
        cutoffs: Cutoffs,
        *,
        after: str | None,
        limit: int,
        flagged_only: bool = False,
    ) -> list[KeyFacts]:
        k = api_keys.c
        dormant, stale, expiring = _flags(cutoffs)
        conditions = _usable(org_id, project_id, cutoffs)
        if after is not None:
            conditions.append(k.id > after)
        if flagged_only:
            conditions.append(or_(dormant == 1, stale == 1, expiring == 1))
        query = (
            select(
                k.id,
                k.project_id,
                k.name,
                k.environment,
                k.plan_id,
                cast(k.policy, Text),
                cast(k.scopes, Text),
                dormant,
                stale,
                expiring,
            )
            .join(api_key_secrets, api_key_secrets.c.hash == k.hash)
            .where(*conditions)
            .order_by(k.id)
            .limit(limit)
        )
        async with self._unit.read() as conn:
            rows = (await conn.execute(query)).all()
        live = Environment.LIVE.value
        return [
            KeyFacts(
                id=row[0],
                project_id=row[1],
                name=row[2],
                live=row[3] == live,
                plan_id=row[4],
                policy_text=row[5] or "",
                scopes_text=row[6] or "",
                dormant=bool(row[7]),
                stale=bool(row[8]),
                expiring=bool(row[9]),
            )
            for row in rows
        ]

    async def management_key_facts(
        self, org_id: str, project_id: str | None, cutoffs: Cutoffs
    ) -> list[ManagementKeyFacts]:
        m = management_keys.c
        conditions: list[ColumnElement[bool]] = [m.org_id == org_id, m.revoked_at.is_(None)]
        if project_id is not None:
            conditions.append(m.project_id == project_id)
        unused = _unused_since(m.last_used_at, m.created_at, cutoffs.management_unused_before)
        query = (
            select(m.id, m.project_id, m.name, m.scopes, _flag(unused))
            .where(*conditions)
            .order_by(m.id)
        )
        async with self._unit.read() as conn:
            rows = (await conn.execute(query)).all()
        return [
            ManagementKeyFacts(
                id=row[0],
                project_id=row[1],
                name=row[2],
                scopes=tuple(row[3] or ()),
                dormant=bool(row[4]),
            )
            for row in rows
        ]

    async def org_ids(self) -> list[str]:
        async with self._unit.read() as conn:
            rows = await conn.execute(select(organizations.c.id).order_by(organizations.c.id))
            return [row[0] for row in rows]


def _usable(org_id: str, project_id: str | None, cutoffs: Cutoffs) -> list[ColumnElement[bool]]:
    k = api_keys.c
    conditions: list[ColumnElement[bool]] = [
        k.org_id == org_id,
        k.status != KeyStatus.REVOKED.value,
        or_(k.expires_at.is_(None), k.expires_at > cutoffs.now),
    ]
    if project_id is not None:
        conditions.append(k.project_id == project_id)
    return conditions


def _flags(cutoffs: Cutoffs) -> tuple[Any, Any, Any]:
    """Dormant, stale and expiring as 0/1 columns."""
    k = api_keys.c
    return (
        _flag(_unused_since(k.last_used_at, k.created_at, cutoffs.dormant_before)),
        # The current secret's row says when it was made: at creation or last rotation.
        _flag(api_key_secrets.c.created_at < cutoffs.stale_before),
        _flag(and_(k.expires_at.is_not(None), k.expires_at <= cutoffs.expiring_before)),
    )


def _unused_since(last_used: Any, created: Any, cutoff: datetime) -> ColumnElement[bool]:
    """Not used since ``cutoff``: used before it, or never used and made before it (a key
    issued yesterday and not used yet is not dormant)."""
    return or_(last_used < cutoff, and_(last_used.is_(None), created < cutoff))


def _flag(condition: ColumnElement[bool]) -> Any:
    """A condition as a 0/1 column (the same on SQLite and PostgreSQL)."""
    return case((condition, 1), else_=0)
