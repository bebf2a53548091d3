"""Each project's leak response: :class:`LeakResponseStore` and its SQL implementation."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from sqlalchemy import select

from keyplane.domain.changes import Journal
from keyplane.domain.leaks import LeakAction
from keyplane.store.tables import project_leak_responses
from keyplane.store.unit import UnitOfWork


class LeakResponseStore(Protocol):
    async def action(self, project_id: str) -> LeakAction | None:
        """The project's configured action; ``None`` when it has none (the default applies)."""
        ...

    async def set_action(
        self, org_id: str, project_id: str, action: LeakAction, now: datetime, journal: Journal
    ) -> None:
        """Set (insert or replace) the project's action, with what ``journal`` recorded."""
        ...


class SqlLeakResponseStore:
    """:class:`LeakResponseStore` over the shared unit of work."""

    def __init__(self, unit: UnitOfWork) -> None:
        self._unit = unit

    async def action(self, project_id: str) -> LeakAction | None:
        query = select(project_leak_responses.c.action).where(
            project_leak_responses.c.project_id == project_id
        )
        async with self._unit.read() as conn:
            value = (await conn.execute(query)).scalar_one_or_none()
        return None if value is None else LeakAction(value)

    async def set_action(
        self, org_id: str, project_id: str, action: LeakAction, now: datetime, journal: Journal
    ) -> None:
        values = {
            "project_id": project_id,
            "org_id": org_id,
            "action": action.value,
            "updated_at": now,
        }
        statement = self._unit.insert(project_leak_responses).values(**values)
        statement = statement.on_conflict_do_update(
            index_elements=[project_leak_responses.c.project_id],
            set_={"action": action.value, "updated_at": now},
        )
        async with self._unit.write(journal) as conn:
            await conn.execute(statement)
