"""Migrations build exactly the schema that ``tables.py`` describes, on every backend."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import insert, select
from sqlalchemy.engine import Connection

from keyplane.settings import to_async_url
from keyplane.store import migrate as migrate_module
from keyplane.store.keys import KeyFilter, SqlKeyStore, _key_values
from keyplane.store.migrate import migrate
from keyplane.store.tables import api_keys, metadata, organizations, projects
from keyplane.store.unit import UnitOfWork, create_engine
from tests.conftest import PG_URL, Database, postgres_schema
from tests.store.conftest import key_record


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """Empty files and schemas, never the migrated SQLite copy the other tests start from."""
    if request.param == "sqlite":
        yield Database("sqlite", f"sqlite:///{tmp_path / 'empty.db'}")
        return
    with postgres_schema() as schema:
        yield Database("postgres", PG_URL, schema)


async def test_migrated_schema_matches_the_table_definitions(database: Database) -> None:
    engine = create_engine(to_async_url(database.url), database.schema)
    try:
        await migrate(engine)

        def diff(connection: Connection) -> list[Any]:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, metadata))

        async with engine.connect() as conn:
            differences = await conn.run_sync(diff)
    finally:
        await engine.dispose()
    assert differences == []


async def test_0005_gives_every_org_without_one_a_default_project(database: Database) -> None:
    engine = create_engine(to_async_url(database.url), database.schema)
    now = datetime(2026, 12, 1, tzinfo=UTC)
    try:
        await migrate(engine, revision="0004")
        async with engine.begin() as conn:
            for org in ("org_a", "org_b"):
                await conn.execute(insert(organizations).values(id=org, name=org, created_at=now))
            await conn.execute(
                insert(projects).values(
                    id="proj_a", org_id="org_a", name="default", key_prefix="kp", created_at=now
                )
            )
        await migrate(engine)
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(projects.c.org_id, projects.c.id).where(projects.c.name == "default")
                )
            ).all()
    finally:
        await engine.dispose()
    by_org = dict(sorted((org, pid) for org, pid in rows))
    assert set(by_org) == {"org_a", "org_b"} and len(rows) == 2
    assert by_org["org_a"] == "proj_a"  # an existing default project is kept


async def test_a_database_at_head_is_not_migrated_again(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every start migrates; one at head reads its version and leaves Alembic's scripts alone."""
    engine = create_engine(to_async_url(database.url), database.schema)
    upgrades: list[str] = []
    real_upgrade = migrate_module.command.upgrade

    def counting_upgrade(config: Any, revision: str) -> None:
        upgrades.append(revision)
        real_upgrade(config, revision)

    monkeypatch.setattr(migrate_module.command, "upgrade", counting_upgrade)
    try:
        await migrate(engine)
        await migrate(engine)
        await migrate(engine, revision="0004")  # an explicit revision still goes through Alembic
    finally:
        await engine.dispose()
    assert upgrades == ["head", "0004"]


async def test_0021_indexes_the_metadata_of_existing_keys(database: Database) -> None:
    engine = create_engine(to_async_url(database.url), database.schema)
    now = datetime(2026, 12, 1, tzinfo=UTC)
    try:
        await migrate(engine, revision="0020_plan_rotation")
        async with engine.begin() as conn:
            await conn.execute(insert(organizations).values(id="org_a", name="a", created_at=now))
            await conn.execute(
                insert(projects).values(
                    id="proj_a", org_id="org_a", name="default", key_prefix="kp", created_at=now
                )
            )
            for tier in ["pro", "free", "pro"]:
                record = key_record("org_a", "proj_a", metadata={"billing": {"tier": tier}})
                await conn.execute(insert(api_keys).values(**_key_values(record)))
        await migrate(engine)
        keys = SqlKeyStore(UnitOfWork(engine))
        page = await keys.list_page(
            "org_a", KeyFilter(metadata=((("billing", "tier"), "pro"),)), now, None, 10
        )
    finally:
        await engine.dispose()
    assert [r.metadata for r in page] == [{"billing": {"tier": "pro"}}] * 2
