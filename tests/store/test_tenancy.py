"""The ``TenancyStore`` contract (``db.tenancy``), on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from keyplane.domain import ids
from keyplane.domain.tenancy import Project
from keyplane.errors import ConflictError
from keyplane.store.database import Database as Db
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
