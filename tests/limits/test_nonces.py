"""Nonce stores: each nonce claimed once per key while remembered; bounded memory; Redis
``SET NX EX`` shared by instances (1,000 concurrent claims of one nonce: one wins)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from redis.asyncio import Redis

from keyplane.domain.clock import ManualClock
from keyplane.limits.nonces import MemoryNonces, RedisNonces


async def test_memory_nonces_are_claimed_once_until_they_expire(clock: ManualClock) -> None:
    nonces = MemoryNonces(clock, max_entries=1000)
    assert await nonces.claim("key_a", "n" * 16, 10)
    assert not await nonces.claim("key_a", "n" * 16, 10)
    assert await nonces.claim("key_b", "n" * 16, 10)  # per key
    clock.advance(9)
    assert not await nonces.claim("key_a", "n" * 16, 10)
    clock.advance(1)
    assert await nonces.claim("key_a", "n" * 16, 10)  # forgotten once expired
    results = await asyncio.gather(*(nonces.claim("key_c", "same", 60) for _ in range(1000)))
    assert results.count(True) == 1


async def test_memory_nonces_are_bounded_and_fail_closed(clock: ManualClock) -> None:
    nonces = MemoryNonces(clock, max_entries=1000)
    assert all([await nonces.claim("key", f"nonce-{i:06d}", 5) for i in range(1000)])
    assert not await nonces.claim("key", "one-too-many", 5)  # full: refused, not grown
    assert len(nonces) == 1000
    clock.advance(5)
    assert await nonces.claim("key", "one-too-many", 5)
    assert len(nonces) == 1  # the expired ones were dropped on the way


async def test_redis_nonces_are_claimed_once_across_instances(
    prefix: str, clients: Callable[..., Redis]
) -> None:
    first, second = RedisNonces(clients(), prefix), RedisNonces(clients(), prefix)
    results = await asyncio.gather(
        *((first, second)[i % 2].claim("key_a", "replayed-nonce-1", 300) for i in range(1000))
    )
    assert results.count(True) == 1
    assert await second.claim("key_b", "replayed-nonce-1", 300)
    ttl = await clients().ttl(f"{prefix}:{{key_a}}:nonce:replayed-nonce-1")
    assert 0 < ttl <= 300
