"""The ``TenancyStore`` contract (``db.tenancy``), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

import pytest

from keyplane.domain import ids
from keyplane.domain.tenancy import Project
from keyplane.errors import ConflictError
from keyplane.store.database import Database as Db
from keyplane.store.tables import organizations
from tests.store.conftest import NOW, tenancy


async def test_default_tenancy_is_created_once(db: Db) -> None:
    first = await db.tenancy.ensure_default_tenancy(NOW)
    second = await db.tenancy.ensure_default_tenancy(NOW + timedelta(hours=1))
    assert first == second
    assert first[1].key_prefix == "kp"


async def test_projects(db: Db) -> None:
    org, default = await tenancy(db)
    project = Project(ids.new_id("proj"), org, "fastrouter", "sk-fr", NOW)
    await db.tenancy.create_project(project)
    assert await db.tenancy.get_project(org, project.id) == project
    assert {p.id for p in await db.tenancy.list_projects(org)} == {default, project.id}
    with pytest.raises(ConflictError):
        await db.tenancy.create_project(dataclasses.replace(project, id=ids.new_id("proj")))


async def test_a_new_organization_gets_its_own_default_project(db: Db) -> None:
    default_org, _ = await db.tenancy.ensure_default_tenancy(NOW)
    org, project = await db.tenancy.create_organization("acme", NOW)
    assert org.name == "acme" and org.id != default_org.id
    assert (project.org_id, project.name, project.key_prefix) == (org.id, "default", "kp")
    assert await db.tenancy.default_project(org.id, NOW + timedelta(days=1)) == project
    assert await db.tenancy.list_projects(org.id) == [project]
    # The first organization stays the default one.
    assert (await db.tenancy.ensure_default_tenancy(NOW))[0] == default_org


async def test_concurrent_callers_get_one_default_project(db: Db) -> None:
    await db.tenancy.ensure_default_tenancy(NOW)
    # An organization from before projects existed: it has none yet.
    bare = "org_" + "b" * 26
    async with db.unit.write() as conn:
        await conn.execute(organizations.insert().values(id=bare, name="bare", created_at=NOW))
    found = await asyncio.gather(*(db.tenancy.default_project(bare, NOW) for _ in range(6)))
    assert len({project.id for project in found}) == 1
    assert [p.id for p in await db.tenancy.list_projects(bare)] == [found[0].id]


async def test_another_organizations_projects_are_invisible(db: Db) -> None:
    org, _ = await tenancy(db)
    other, other_default = await db.tenancy.create_organization("other", NOW)
    theirs = await db.tenancy.create_project(Project(ids.new_id("proj"), other.id, "x", "kp", NOW))
    assert await db.tenancy.get_project(org, theirs.id) is None
    assert await db.tenancy.get_project(org, other_default.id) is None
    assert theirs.id not in {p.id for p in await db.tenancy.list_projects(org)}
    assert await db.tenancy.get_project(other.id, theirs.id) == theirs
    # Project names are unique per organization only.
    await db.tenancy.create_project(Project(ids.new_id("proj"), org, "x", "kp", NOW))


async def test_organization_aliases_name_one_organization_each(db: Db) -> None:
    org, _ = await tenancy(db)
    other, _ = await db.tenancy.create_organization("other", NOW)
    assert await db.tenancy.org_of_alias("fr-org-1") is None
    await db.tenancy.add_org_alias(org, "fr-org-1", NOW)
    await db.tenancy.add_org_alias(org, "fr-org-1", NOW)  # idempotent
    await db.tenancy.add_org_alias(org, "acme", NOW)
    assert await db.tenancy.org_aliases(org) == ["acme", "fr-org-1"]
    assert await db.tenancy.org_of_alias("fr-org-1") == org
    with pytest.raises(ConflictError):
        await db.tenancy.add_org_alias(other.id, "fr-org-1", NOW)
    assert await db.tenancy.remove_org_alias(other.id, "acme") is False  # not its alias
    assert await db.tenancy.remove_org_alias(org, "acme") is True
    assert await db.tenancy.org_aliases(org) == ["fr-org-1"]
    assert await db.tenancy.org_aliases(other.id) == []
    await db.tenancy.add_org_alias(other.id, "acme", NOW)  # free again
    assert await db.tenancy.org_of_alias("acme") == other.id
