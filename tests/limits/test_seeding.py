"""Budget counters seeded from the ledger on the verify path, through the whole server.

Two defects of issue 11: a thousand verifies waiting for one cold counter started a thousand
seeding transactions (on PostgreSQL that exhausted the pool: 503s), and a verify that waited
for a slow seed decided with the time it had read before waiting (RATE_LIMITED on a key
allowed a million requests a second).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from keyplane.api.app import create_app
from keyplane.domain.clock import ManualClock
from tests.conftest import PG_URL, ROOT_KEY, Api, Database, postgres_schema
from tests.limits.harness import new_client, redis_url, require_redis

BUDGET = {"budget": {"credit_limit": 1000}}
VERIFIES = 1000


@pytest.fixture
def pg_database() -> Iterator[Database]:
    with postgres_schema() as schema:
        yield Database("postgres", PG_URL, schema)


@asynccontextmanager
async def running(database: Database, clock: ManualClock, **settings: Any) -> AsyncIterator[Api]:
    app = create_app(database.settings(**settings), clock=clock)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://keyplane.test",
            headers={"Authorization": f"Bearer {ROOT_KEY}"},
        ) as client,
    ):
        yield Api(client, app, clock, database)
    redis = app.state.runtime.redis  # type: ignore[attr-defined]
    if redis is not None:
        # The runtime closes its client, not the pool it was handed: close that too.
        await redis.connection_pool.disconnect()


SeedSpent = Callable[..., Awaitable[None]]


def spy_on_seeding(api: Api, around: Callable[[SeedSpent], SeedSpent] | None = None) -> list[str]:
    """Counts the seeding transactions the store starts (each key id once per call)."""
    store = api.app.state.runtime.store.usage  # type: ignore[attr-defined]
    real: SeedSpent = store.seed_spent
    started: list[str] = []

    async def seed_spent(key_id: str, *args: Any) -> None:
        started.append(key_id)
        await real(key_id, *args)

    store.seed_spent = seed_spent if around is None else around(seed_spent)
    return started


async def _forget_redis_keys(key_id: str) -> None:
    client = new_client()
    try:
        names = [name async for name in client.scan_iter(match=f"kp:{{{key_id}}}:*")]
        if names:
            await client.unlink(*names)
    finally:
        await client.aclose()


@pytest.mark.postgres
@pytest.mark.parametrize("limiter", ["memory", "redis"])
async def test_a_thousand_cold_verifies_seed_one_counter_once(
    pg_database: Database, clock: ManualClock, limiter: str
) -> None:
    settings: dict[str, Any] = {}
    if limiter == "redis":
        require_redis()
        settings["redis_url"] = redis_url()
    async with running(pg_database, clock, **settings) as api:
        key, data = await api.create_key(policy=BUDGET)
        started = spy_on_seeding(api)
        try:
            responses = await asyncio.gather(
                *(
                    api.client.post("/v1/verify", json={"key": key, "cost": 0.01})
                    for _ in range(VERIFIES)
                )
            )
        finally:
            if limiter == "redis":
                await _forget_redis_keys(str(data["id"]))
    assert [r.status_code for r in responses].count(200) == VERIFIES  # 0 errors
    assert {r.json()["code"] for r in responses} == {"VALID"}
    assert len(started) == 1


async def test_a_verify_that_waited_for_a_slow_seed_decides_at_the_time_it_decides(
    tmp_path: Path, clock: ManualClock
) -> None:
    database = Database("sqlite", f"sqlite:///{tmp_path / 'keyplane.db'}")
    installed, release = asyncio.Event(), asyncio.Event()

    def slow(seed_spent: SeedSpent) -> SeedSpent:
        async def slowly(*args: Any) -> None:
            await seed_spent(*args)  # the counter is live from here on
            clock.advance(2)  # the database takes two seconds to commit
            installed.set()
            await release.wait()

        return slowly

    async with running(database, clock) as api:
        policy = {
            **BUDGET,
            "rate_limits": [{"name": "per_second", "limit": 1_000_000, "period": 1}],
        }
        key, _ = await api.create_key(policy=policy)
        spy_on_seeding(api, slow)
        cold = asyncio.create_task(api.verify(key, cost=0.01))
        await installed.wait()
        # Another verify comes in two seconds later, finds the counter, and is admitted.
        warm = await api.verify(key, cost=0.01)
        assert warm["code"] == "VALID"
        release.set()
        verdict = await cold
    assert verdict["code"] == "VALID", verdict
