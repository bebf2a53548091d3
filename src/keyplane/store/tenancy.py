"""Organizations and their projects: :class:`TenancyStore` and its SQL implementation."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import delete, func, insert, select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from keyplane.domain import ids
from keyplane.domain.changes import SYSTEM, Journal
from keyplane.domain.keyformat import DEFAULT_PREFIX
from keyplane.domain.tenancy import Organization, Project
from keyplane.errors import ConflictError
from keyplane.store.tables import organization_aliases, organizations, projects
from keyplane.store.unit import UnitOfWork

DEFAULT_ORG_NAME = "default"
DEFAULT_PROJECT_NAME = "default"


class TenancyStore(Protocol):
    """Organizations and projects. Every object of Keyplane lives in one organization; a
    project is found only within its own organization."""

    async def ensure_default_tenancy(self, now: datetime) -> tuple[Organization, Project]:
        """The first organization and its default project, created if missing.

        Idempotent and safe to race: instances starting together on PostgreSQL take turns
        (an advisory lock), so exactly one default organization is ever made.
        """
        ...

    async def create_organization(self, name: str, now: datetime) -> tuple[Organization, Project]:
        """A new organization with its own default project, in one transaction."""
        ...

    async def default_project(self, org_id: str, now: datetime) -> Project:
        """The organization's default project, created if it has none yet.

        Concurrent callers get the same project (the name is unique per organization).
        """
        ...

    async def create_project(self, project: Project, journal: Journal | None = None) -> Project:
        """Insert a project; ConflictError when its name is taken in its organization."""
        ...

    async def get_project(self, org_id: str, project_id: str) -> Project | None:
        """The project, if it exists in ``org_id`` (another org's project is ``None``)."""
        ...

    async def list_projects(self, org_id: str) -> list[Project]:
        """The organization's projects in id (creation) order."""
        ...

    async def add_org_alias(self, org_id: str, alias: str, now: datetime) -> None:
        """Let ``alias`` name the organization. Idempotent for the same organization;
        ConflictError when it names another one (an alias names one org per deployment)."""
        ...

    async def remove_org_alias(self, org_id: str, alias: str) -> bool:
        """Forget the alias if it names ``org_id``; whether it did."""
        ...

    async def org_aliases(self, org_id: str) -> list[str]:
        """The organization's aliases, sorted."""
        ...

    async def org_of_alias(self, alias: str) -> str | None:
        """The id of the organization ``alias`` names, if any."""
        ...


class SqlTenancyStore:
    """:class:`TenancyStore` over the shared unit of work."""

    def __init__(self, unit: UnitOfWork) -> None:
        self._unit = unit

    async def ensure_default_tenancy(self, now: datetime) -> tuple[Organization, Project]:
        journal = Journal(SYSTEM, now)
        async with self._unit.write(journal) as conn:
            if not self._unit.is_sqlite:
                # Instances starting together take turns, so only one default org is made.
                await conn.execute(select(func.pg_advisory_xact_lock(4242002)))
            org_row = (
                await conn.execute(select(organizations).order_by(organizations.c.id).limit(1))
            ).first()
            if org_row is None:
                org = Organization(ids.new_id("org"), DEFAULT_ORG_NAME, now)
                await conn.execute(
                    insert(organizations).values(id=org.id, name=org.name, created_at=now)
                )
                _record_organization(journal, org)
            else:
                org = Organization(org_row.id, org_row.name, org_row.created_at)
            project = await _ensure_default_project(conn, org.id, now, journal)
        return org, project

    async def create_organization(self, name: str, now: datetime) -> tuple[Organization, Project]:
        org = Organization(ids.new_id("org"), name, now)
        journal = Journal(SYSTEM, now)
        _record_organization(journal, org)
        async with self._unit.write(journal) as conn:
            await conn.execute(insert(organizations).values(id=org.id, name=name, created_at=now))
            project = await _ensure_default_project(conn, org.id, now, journal)
        return org, project

    async def default_project(self, org_id: str, now: datetime) -> Project:
        # An org from before migration 0005 has no default project until asked for one.
        async with self._unit.read() as conn:
            row = (
                await conn.execute(
                    select(projects).where(
                        projects.c.org_id == org_id, projects.c.name == DEFAULT_PROJECT_NAME
                    )
                )
            ).first()
        if row is not None:
            return project_from_row(row)
        try:
            journal = Journal(SYSTEM, now)
            async with self._unit.write(journal) as conn:
                return await _ensure_default_project(conn, org_id, now, journal)
        except ConflictError:
            # Made meanwhile by a concurrent request (the name is unique per org): read it.
            return await self.default_project(org_id, now)

    async def create_project(self, project: Project, journal: Journal | None = None) -> Project:
        async with self._unit.write(journal) as conn:
            await conn.execute(insert(projects).values(**_project_values(project)))
        return project

    async def get_project(self, org_id: str, project_id: str) -> Project | None:
        async with self._unit.read() as conn:
            row = (
                await conn.execute(
                    select(projects).where(projects.c.org_id == org_id, projects.c.id == project_id)
                )
            ).first()
        return None if row is None else project_from_row(row)

    async def list_projects(self, org_id: str) -> list[Project]:
        async with self._unit.read() as conn:
            rows = await conn.execute(
                select(projects).where(projects.c.org_id == org_id).order_by(projects.c.id)
            )
            return [project_from_row(row) for row in rows]

    async def add_org_alias(self, org_id: str, alias: str, now: datetime) -> None:
        owner = await self.org_of_alias(alias)
        if owner == org_id:
            return
        if owner is not None:
            raise ConflictError("the alias names another organization", code="ALIAS_TAKEN")
        # A concurrent insert of the same alias fails on the primary key: ConflictError too.
        async with self._unit.write() as conn:
            await conn.execute(
                insert(organization_aliases).values(alias=alias, org_id=org_id, created_at=now)
            )

    async def remove_org_alias(self, org_id: str, alias: str) -> bool:
        async with self._unit.write() as conn:
            result = await conn.execute(
                delete(organization_aliases).where(
                    organization_aliases.c.alias == alias, organization_aliases.c.org_id == org_id
                )
            )
        return bool(result.rowcount)

    async def org_aliases(self, org_id: str) -> list[str]:
        async with self._unit.read() as conn:
            rows = await conn.execute(
                select(organization_aliases.c.alias)
                .where(organization_aliases.c.org_id == org_id)
                .order_by(organization_aliases.c.alias)
            )
            return [row.alias for row in rows]

    async def org_of_alias(self, alias: str) -> str | None:
        async with self._unit.read() as conn:
            org_id = (
                await conn.execute(
                    select(organization_aliases.c.org_id).where(
                        organization_aliases.c.alias == alias
                    )
                )
            ).scalar_one_or_none()
        return None if org_id is None else str(org_id)


def _project_values(project: Project) -> dict[str, Any]:
    return {
        "id": project.id,
        "org_id": project.org_id,
        "name": project.name,
        "key_prefix": project.key_prefix,
        "created_at": project.created_at,
    }


def project_from_row(row: Row[Any]) -> Project:
    """A :class:`Project` from a row of ``projects``."""
    return Project(row.id, row.org_id, row.name, row.key_prefix, row.created_at)


def _record_organization(journal: Journal, org: Organization) -> None:
    journal.record(
        "organization.created",
        org_id=org.id,
        target_type="organization",
        target_id=org.id,
        details={"name": org.name},
    )


def record_project(journal: Journal, project: Project) -> None:
    """Record ``project.created`` for ``project`` in ``journal``."""
    journal.record(
        "project.created",
        org_id=project.org_id,
        target_type="project",
        target_id=project.id,
        project_id=project.id,
        details={"name": project.name, "key_prefix": project.key_prefix},
    )


async def _ensure_default_project(
    conn: AsyncConnection, org_id: str, now: datetime, journal: Journal
) -> Project:
    """The org's project named ``default`` (unique per org), inserted if missing (recorded
    in ``journal``)."""
    row = (
        await conn.execute(
            select(projects).where(
                projects.c.org_id == org_id, projects.c.name == DEFAULT_PROJECT_NAME
            )
        )
    ).first()
    if row is not None:
        return project_from_row(row)
    project = Project(ids.new_id("proj"), org_id, DEFAULT_PROJECT_NAME, DEFAULT_PREFIX, now)
    await conn.execute(insert(projects).values(**_project_values(project)))
    record_project(journal, project)
    return project
