"""Nonces of signed requests, each accepted exactly once while its timestamp is acceptable.

:class:`NonceStore` is the whole contract: ``claim`` is one atomic test-and-set. On one node
:class:`MemoryNonces` holds them in a dict with an expiry heap (bounded: past
``max_entries`` live nonces a new one is refused, fail closed, rather than memory growing
with what callers send); in scale-out :class:`RedisNonces` does ``SET NX EX`` so that, of the
same nonce presented to any number of instances at once, exactly one wins.
"""

from __future__ import annotations

import heapq
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from keyplane.domain.clock import Clock
from keyplane.errors import LimiterUnavailableError


class NonceStore(Protocol):
    async def claim(self, key_id: str, nonce: str, ttl_seconds: int) -> bool:
        """Remember ``nonce`` for ``key_id`` for ``ttl_seconds``; True only for the first
        claim of it in that time, on this instance or (shared stores) any other.

        Raises:
            LimiterUnavailableError: the shared store cannot be reached (fail closed).
        """
        ...


class MemoryNonces:
    """One process's nonces: a dict for the test-and-set, a heap of expiries to forget them."""

    def __init__(self, clock: Clock, max_entries: int = 1_000_000) -> None:
        self._clock = clock
        self._max_entries = max_entries
        self._expiry: dict[tuple[str, str], float] = {}
        self._heap: list[tuple[float, str, str]] = []

    def __len__(self) -> int:
        return len(self._expiry)

    async def claim(self, key_id: str, nonce: str, ttl_seconds: int) -> bool:
        # No await in here: on one event loop the test and the set cannot interleave.
        now = self._clock.now().timestamp()
        self._forget_expired(now)
        entry = (key_id, nonce)
        expires = self._expiry.get(entry)
        if expires is not None and expires > now:
            return False
        if len(self._expiry) >= self._max_entries:
            return False
        self._expiry[entry] = now + ttl_seconds
        heapq.heappush(self._heap, (now + ttl_seconds, key_id, nonce))
        return True

    def _forget_expired(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            expires, key_id, nonce = heapq.heappop(heap)
            if self._expiry.get((key_id, nonce)) == expires:
                del self._expiry[(key_id, nonce)]


class RedisNonces:
    """Nonces shared by every instance on one Redis: ``SET <key> 1 NX EX <ttl>``."""

    def __init__(self, redis: Redis, prefix: str = "kp") -> None:
        self._redis = redis
        self._prefix = prefix

    async def claim(self, key_id: str, nonce: str, ttl_seconds: int) -> bool:
        # Hash-tagged by key id like the limiter's keys (one Redis Cluster slot per API key);
        # the nonce's charset (request_signing.NONCE) holds no braces, spaces or colons.
        name = f"{self._prefix}:{{{key_id}}}:nonce:{nonce}"
        try:
            return bool(await self._redis.set(name, b"1", nx=True, ex=ttl_seconds))
        except RedisError as exc:
            raise LimiterUnavailableError("the nonce store (Redis) is unreachable") from exc
