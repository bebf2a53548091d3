"""Reading the audit log (``store/audit.py`` writes it): :class:`AuditQueryStore`.

Every read names its organization, and a project when the caller reaches one project only:
another tenant's entries are never returned. Pages are keyset pages on ``seq`` (the entry's
place in its organization's chain), so a page costs the same at the millionth entry as at the
first, and an export reads in bounded pages instead of holding a result set open.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import ColumnElement, func, or_, select

from keyplane.store.tables import audit_log
from keyplane.store.unit import UnitOfWork


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which entries of one organization to read; empty tuples filter nothing.

    Attributes:
        org_id: the organization (always required).
        project_id: only entries of this project (a project-bound caller's reach).
        target_ids: entries about any of these objects (a key, a plan, a credential...).
        actor_ids: entries made by any of these actors (management key ids, ``system``).
        actions: exact action names; ``action_prefixes``: name prefixes ending in ``.``.
            An entry matches when it matches either list (when any is given).
        outcomes: ``success``, ``failure``, ``denied``.
        start, end: ``start <= occurred_at < end``.
    """

    org_id: str
    project_id: str | None = None
    target_ids: tuple[str, ...] = ()
    actor_ids: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    action_prefixes: tuple[str, ...] = ()
    outcomes: tuple[str, ...] = ()
    start: datetime | None = None
    end: datetime | None = None


class AuditQueryStore(Protocol):
    """Read access to the audit log. Rows are dicts of the ``audit_log`` columns."""

    async def page(
        self, where: AuditFilter, before_seq: int | None, limit: int
    ) -> list[dict[str, Any]]:
        """Up to ``limit`` matching entries with ``seq < before_seq`` (all when None),
        newest (highest seq) first."""
        ...

    async def scan(
        self, where: AuditFilter, after_seq: int, up_to_seq: int, limit: int
    ) -> list[dict[str, Any]]:
        """Up to ``limit`` matching entries with ``after_seq < seq <= up_to_seq``, oldest
        first: the export's pages (keyset on seq, one short read each)."""
        ...

    async def head_seq(self, org_id: str) -> int:
        """The highest seq of the organization's entries (0 when it has none): an export
        stops there, so entries appended while it runs are not half in it."""
        ...

    async def get(self, org_id: str, entry_id: str) -> dict[str, Any] | None:
        """The entry ``entry_id`` of ``org_id``, or None (also for another org's entry)."""
        ...


class SqlAuditQueryStore:
    """:class:`AuditQueryStore` over the shared unit of work."""

    def __init__(self, unit: UnitOfWork) -> None:
        self._unit = unit

    async def page(
        self, where: AuditFilter, before_seq: int | None, limit: int
    ) -> list[dict[str, Any]]:
        conditions = _conditions(where)
        if before_seq is not None:
            conditions.append(audit_log.c.seq < before_seq)
        query = select(audit_log).where(*conditions).order_by(audit_log.c.seq.desc()).limit(limit)
        async with self._unit.read() as conn:
            return [dict(row._mapping) for row in await conn.execute(query)]

    async def scan(
        self, where: AuditFilter, after_seq: int, up_to_seq: int, limit: int
    ) -> list[dict[str, Any]]:
        conditions = _conditions(where)
        conditions += [audit_log.c.seq > after_seq, audit_log.c.seq <= up_to_seq]
        query = select(audit_log).where(*conditions).order_by(audit_log.c.seq).limit(limit)
        async with self._unit.read() as conn:
            return [dict(row._mapping) for row in await conn.execute(query)]

    async def head_seq(self, org_id: str) -> int:
        query = select(func.max(audit_log.c.seq)).where(audit_log.c.org_id == org_id)
        async with self._unit.read() as conn:
            value = (await conn.execute(query)).scalar()
        return int(value or 0)

    async def get(self, org_id: str, entry_id: str) -> dict[str, Any] | None:
        query = select(audit_log).where(audit_log.c.org_id == org_id, audit_log.c.id == entry_id)
        async with self._unit.read() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else dict(row._mapping)


def _conditions(where: AuditFilter) -> list[ColumnElement[bool]]:
    c = audit_log.c
    conditions: list[ColumnElement[bool]] = [c.org_id == where.org_id]
    if where.project_id is not None:
        conditions.append(c.project_id == where.project_id)
    if where.target_ids:
        conditions.append(c.target_id.in_(where.target_ids))
    if where.actor_ids:
        conditions.append(c.actor_id.in_(where.actor_ids))
    if where.actions or where.action_prefixes:
        # autoescape: ``_`` (as in ``management_key.``) is a LIKE wildcard otherwise.
        matches: list[ColumnElement[bool]] = [c.action.in_(where.actions)] if where.actions else []
        matches += [c.action.startswith(p, autoescape=True) for p in where.action_prefixes]
        conditions.append(or_(*matches))
    if where.outcomes:
        conditions.append(c.outcome.in_(where.outcomes))
    if where.start is not None:
        conditions.append(c.occurred_at >= where.start)
    if where.end is not None:
        conditions.append(c.occurred_at < where.end)
    return conditions
