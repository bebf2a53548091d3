"""Events (budget alerts and the like, written by the usage ledger): :class:`EventStore`."""

from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy import select

from keyplane.store.tables import api_keys, events
from keyplane.store.unit import UnitOfWork


class EventStore(Protocol):
    """Read access to the events of an organization (``store/usage.py`` writes them)."""

    async def list_page(
        self,
        org_id: str,
        after: str | None,
        limit: int,
        subject_id: str | None = None,
        project_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Up to ``limit`` events of ``org_id`` in id (time) order after ``after``; only those
        about ``subject_id``, or about keys of ``project_id``, when given. Each is a dict of
        the ``events`` row (id, org_id, type, subject_id, dedupe_key, payload, created_at)."""
        ...


class SqlEventStore:
    """:class:`EventStore` over the shared unit of work."""

    def __init__(self, unit: UnitOfWork) -> None:
        self._unit = unit

    async def list_page(
        self,
        org_id: str,
        after: str | None,
        limit: int,
        subject_id: str | None = None,
        project_id: str | None = None,
    ) -> list[dict[str, Any]]:
        conditions = [events.c.org_id == org_id]
        if project_id is not None:
            conditions.append(
                events.c.subject_id.in_(
                    select(api_keys.c.id).where(api_keys.c.project_id == project_id)
                )
            )
        if after is not None:
            conditions.append(events.c.id > after)
        if subject_id is not None:
            conditions.append(events.c.subject_id == subject_id)
        query = select(events).where(*conditions).order_by(events.c.id).limit(limit)
        async with self._unit.read() as conn:
            return [dict(row._mapping) for row in await conn.execute(query)]
