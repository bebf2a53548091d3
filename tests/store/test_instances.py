"""The instance registry in PostgreSQL (``db.instances``): the same contract as the Redis
registry. PostgreSQL only: it runs on the database's clock (``now()``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy import func, update

from keyplane.settings import to_async_url
from keyplane.store.database import Database as Db
from keyplane.store.migrate import migrate
from keyplane.store.tables import instances
from tests.conftest import PG_URL, postgres_schema

pytestmark = pytest.mark.postgres


@pytest.fixture
def schema() -> Iterator[str]:
    with postgres_schema() as name:
        yield name


@pytest.fixture
async def pg(schema: str) -> AsyncIterator[Db]:
    db = Db.from_url(to_async_url(PG_URL), schema, instance_liveness_seconds=60)
    await migrate(db.engine, schema)
    yield db
    await db.close()


async def test_beating_instances_are_live_until_they_leave(pg: Db) -> None:
    assert await pg.instances.live() == set()
    await asyncio.gather(pg.instances.beat("i-1"), pg.instances.beat("i-2"))
    await pg.instances.beat("i-1")  # a second beat is an update, not a conflict
    assert await pg.instances.live() == {"i-1", "i-2"}
    await pg.instances.leave("i-1")
    await pg.instances.leave("i-unknown")
    assert await pg.instances.live() == {"i-2"}


async def test_acknowledgements_are_kept_per_eviction(pg: Db) -> None:
    await pg.instances.acknowledge("ev-1", "i-1")
    await pg.instances.acknowledge("ev-1", "i-1")  # idempotent
    await pg.instances.acknowledge("ev-1", "i-2")
    await pg.instances.acknowledge("ev-2", "i-3")
    assert await pg.instances.acknowledged("ev-1") == {"i-1", "i-2"}
    assert await pg.instances.acknowledged("ev-2") == {"i-3"}
    assert await pg.instances.acknowledged("ev-3") == set()


async def test_an_instance_silent_past_the_liveness_is_not_live(pg: Db) -> None:
    await pg.instances.beat("i-1")
    await pg.instances.beat("i-2")
    async with pg.unit.write() as conn:  # i-1 last beat two minutes ago (liveness: 60 s)
        await conn.execute(
            update(instances)
            .where(instances.c.id == "i-1")
            .values(last_seen=func.now() - func.make_interval(0, 0, 0, 0, 0, 2))
        )
    assert await pg.instances.live() == {"i-2"}
