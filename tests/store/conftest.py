"""Fixtures and builders shared by the per-concept store contract tests.

Every test taking ``db`` runs against SQLite and PostgreSQL (``database`` is parametrised).
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from keyplane.domain import ids
from keyplane.domain.keys import Environment, KeyRecord
from keyplane.settings import to_async_url
from keyplane.store.database import Database as Db
from keyplane.store.migrate import migrate
from tests.conftest import Database

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def db(database: Database) -> AsyncIterator[Db]:
    db = Db.from_url(to_async_url(database.url), database.schema)
    await migrate(db.engine)
    yield db
    await db.close()


@pytest.fixture
async def postgres_db(postgres_database: Database) -> AsyncIterator[Db]:
    """``db`` on PostgreSQL only (behaviour of its driver or server), schema already at head."""
    db = Db.from_url(to_async_url(postgres_database.url), postgres_database.schema)
    yield db
    await db.close()


async def tenancy(db: Db) -> tuple[str, str]:
    """The default organization's id and its default project's id."""
    org, project = await db.tenancy.ensure_default_tenancy(NOW)
    return org.id, project.id


async def other_tenancy(db: Db) -> tuple[str, str]:
    """A second organization's id and its default project's id."""
    org, project = await db.tenancy.create_organization("other", NOW)
    return org.id, project.id


def key_record(org_id: str, project_id: str, **changes: object) -> KeyRecord:
    record = KeyRecord(
        id=ids.new_id("key"),
        org_id=org_id,
        project_id=project_id,
        hash=secrets.token_hex(32),
        start="kp_live_abcd",
        end="wxyz",
        name="name",
        environment=Environment.LIVE,
        created_at=NOW,
        updated_at=NOW,
    )
    return dataclasses.replace(record, **changes)  # type: ignore[arg-type]
