"""What the security report reads: :class:`SecurityReportStore` and its SQL implementation.

Built for a million keys: the time comparisons (dormant, stale, expiring) are made in SQL, the
policy and scopes come back as JSON text (no per-row JSON or datetime decoding), and rows are
read in keyset batches along the ``(org_id, id)`` index, so memory stays flat and no
transaction is held open across the scan.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Text, and_, case, cast, or_, select, true
from sqlalchemy.sql import ColumnElement

from keyplane.domain.keys import Environment, KeyStatus
from keyplane.domain.security_report import Cutoffs, KeyFacts, ManagementKeyFacts
from keyplane.store.tables import api_key_secrets, api_keys, management_keys, organizations
from keyplane.store.unit import UnitOfWork

#: Keys per batch: big enough that a batch's round trip is small beside its rows.
BATCH = 20_000


class SecurityReportStore(Protocol):
    def key_facts(
        self, org_id: str, project_id: str | None, cutoffs: Cutoffs, batch: int = BATCH
    ) -> AsyncIterator[list[KeyFacts]]:
        """Usable keys of ``org_id`` (of ``project_id`` when given) in id order, in batches:
        revoked keys and keys expired at ``cutoffs.now`` are left out (they cannot be used).
        Each batch is its own read; a key written during the scan may or may not appear."""
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

    async def key_facts(
        self, org_id: str, project_id: str | None, cutoffs: Cutoffs, batch: int = BATCH
    ) -> AsyncIterator[list[KeyFacts]]:
        k = api_keys.c
        current_secret = api_key_secrets.c
        conditions: list[ColumnElement[bool]] = [
            k.org_id == org_id,
            k.status != KeyStatus.REVOKED.value,
            or_(k.expires_at.is_(None), k.expires_at > cutoffs.now),
        ]
        if project_id is not None:
            conditions.append(k.project_id == project_id)
        query = (
            select(
                k.id,
                k.project_id,
                k.name,
                k.environment,
                k.plan_id,
                cast(k.policy, Text),
                cast(k.scopes, Text),
                _flag(_unused_since(k.last_used_at, k.created_at, cutoffs.dormant_before)),
                # The current secret's row says when it was made: at creation or last rotation.
                _flag(current_secret.created_at < cutoffs.stale_before),
                _flag(and_(k.expires_at.is_not(None), k.expires_at <= cutoffs.expiring_before)),
            )
            .join(api_key_secrets, current_secret.hash == k.hash)
            .order_by(k.id)
            .limit(batch)
        )
        after: str | None = None
        live = Environment.LIVE.value
        while True:
            page = query.where(*conditions, k.id > after if after is not None else true())
            async with self._unit.read() as conn:
                rows = (await conn.execute(page)).all()
            if not rows:
                return
            yield [
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
            if len(rows) < batch:
                return
            after = rows[-1][0]

    async def management_key_facts(
        self, org_id: str, project_id: str | None, cutoffs: Cutoffs
    ) -> list[ManagementKeyFacts]:
        m = management_keys.c
        conditions: list[ColumnElement[bool]] = [m.org_id == org_id, m.revoked_at.is_(None)]
        if project_id is not None:
            conditions.append(m.project_id == project_id)
        query = (
            select(
                m.id,
                m.project_id,
                m.name,
                m.scopes,
                _flag(
                    _unused_since(m.last_used_at, m.created_at, cutoffs.management_unused_before)
                ),
            )
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


def _unused_since(last_used: Any, created: Any, cutoff: datetime) -> ColumnElement[bool]:
    """Not used since ``cutoff``: used before it, or never used and made before it (a key
    issued yesterday and not used yet is not dormant)."""
    return or_(last_used < cutoff, and_(last_used.is_(None), created < cutoff))


def _flag(condition: ColumnElement[bool]) -> Any:
    """A condition as a 0/1 column (the same on SQLite and PostgreSQL)."""
    return case((condition, 1), else_=0)
