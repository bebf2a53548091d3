"""Projects: groups of keys within an organization, each with its own key prefix."""

from __future__ import annotations

from keyplane.domain import ids, keyformat
from keyplane.domain.changes import Journal
from keyplane.domain.clock import Clock
from keyplane.domain.tenancy import Principal, Project
from keyplane.errors import NotFoundError, PermissionDeniedError, ValidationError
from keyplane.services.authz import require_scope
from keyplane.services.compat import find_project, project_names
from keyplane.store.base import TenancyStore
from keyplane.store.tenancy import record_project


class Projects:
    def __init__(self, store: TenancyStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def create(self, principal: Principal, name: str, key_prefix: str) -> Project:
        require_scope(principal, "projects:write")
        if principal.project_id is not None:
            raise PermissionDeniedError("a project-bound key cannot create projects")
        if not keyformat.is_valid_prefix(key_prefix):
            raise ValidationError(
                "key_prefix must match [a-z][a-z0-9_-]{0,15}", code="INVALID_PREFIX"
            )
        now = self._clock.now()
        project = Project(ids.new_id("proj"), principal.org_id, name, key_prefix, now)
        journal = Journal(principal.actor, now)
        record_project(journal, project)
        return await self._store.create_project(project, journal)

    async def get(self, principal: Principal, project_id: str) -> Project:
        require_scope(principal, "projects:read")
        project = await self._store.get_project(principal.org_id, project_id)
        if project is None or not principal.reaches_project(project.id):
            raise NotFoundError(f"no project {project_id!r}", code="PROJECT_NOT_FOUND")
        return project

    async def list(self, principal: Principal) -> list[Project]:
        require_scope(principal, "projects:read")
        return [
            p
            for p in await self._store.list_projects(principal.org_id)
            if principal.reaches_project(p.id)
        ]

    async def names(self, principal: Principal) -> dict[str, str]:
        """Names by id of the caller's organization's projects, to show next to its keys.

        Part of answering a key read (the compatibility surfaces show a key's project name),
        so it needs no scope beyond the read it accompanies; it never leaves the caller's org.
        """
        return await project_names(self._store, principal.org_id)

    async def named_in_request(
        self,
        principal: Principal,
        default: Project,
        project_id: str | None,
        project_name: str | None,
    ) -> Project:
        """The project a key-creating request names, within the caller's reach (see
        :func:`keyplane.services.compat.find_project`)."""
        return await find_project(self._store, principal, default, project_id, project_name)
