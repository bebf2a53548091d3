"""Fixtures of the limits tests: Redis clients and prefixes, and both limiters as one."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.limits.harness import (
    Limits,
    delete_prefix,
    memory_limits,
    new_client,
    redis_limits,
    renewals_settled,
    require_redis,
)

MakeLimits = Callable[..., Limits]


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    require_redis()
    name = f"kpt{secrets.token_hex(6)}"
    yield name
    await delete_prefix(name)


@pytest.fixture
async def clients() -> AsyncIterator[Callable[..., Redis]]:
    """Makes clients (closed afterwards)."""
    made: list[Redis] = []

    def make(**pool: Any) -> Redis:
        made.append(new_client(**pool))
        return made[-1]

    yield make
    await renewals_settled()
    for client in made:
        await client.aclose()


@pytest.fixture(params=["memory", "redis"])
async def make_limits(
    request: pytest.FixtureRequest, clients: Callable[..., Redis]
) -> AsyncIterator[MakeLimits]:
    """Both limiters; the Redis one on the callers' clock, so scenarios can move time."""
    if request.param == "memory":
        yield memory_limits
        return
    require_redis()
    name = f"kpt{secrets.token_hex(6)}"
    client = clients()
    yield lambda spent=0: redis_limits(client, name, spent)
    await delete_prefix(name)
