"""Reading the event log (``budget.threshold_crossed``, ...), within the caller's reach."""

from __future__ import annotations

from typing import Any

from keyplane.domain.tenancy import Principal
from keyplane.services.authz import require_scope
from keyplane.store.base import EventStore


class Events:
    """The events of the caller's organization (and project, for a project-bound caller)."""

    def __init__(self, store: EventStore) -> None:
        self._store = store

    async def list(
        self, principal: Principal, key_id: str | None, cursor: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """Up to ``limit`` events after ``cursor``, oldest first; needs ``usage:read``."""
        require_scope(principal, "usage:read")
        return await self._store.list_page(
            principal.org_id, cursor, limit, key_id, principal.project_id
        )
