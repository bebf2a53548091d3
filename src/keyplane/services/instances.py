"""Which instances are live, and which of them confirmed dropping a cached key.

Every instance has an id (``KEYPLANE_INSTANCE_ID``, or one made at start) and heartbeats into
a registry shared by the deployment. A write that asks for confirmation (``?wait=confirmed``)
snapshots the live instances, publishes an eviction carrying a fresh id, and waits until each
of them has acknowledged applying it, or until its timeout: see :func:`await_confirmations`.

Live means "heartbeat within ``KEYPLANE_INSTANCE_LIVENESS_SECONDS``". A paused or partitioned
instance stays live (and so is waited for and named unconfirmed) until that bound passes; an
instance that stopped cleanly leaves the registry at once. An instance that stopped without
leaving and missed the eviction holds nothing cached past ``KEYPLANE_CACHE_TTL_SECONDS`` and
starts with an empty cache, so it cannot serve the old record either.

With Redis the registry is a sorted set scored by Redis's own clock (``lua/instance_beat.lua``)
and each eviction's acknowledgements a set that expires; both are namespaced by the
deployment's organization id, so deployments sharing one Redis never wait for each other.
Without Redis, on PostgreSQL, it is two tables (``store.instances``). Registry failures are
``StorageError``s (:data:`REGISTRY_ERRORS`): the Redis registry raises
``RegistryUnavailableError`` from redis' exception, the SQL one ``StorageError`` from
SQLAlchemy's; no driver exception leaves either.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from keyplane.domain import ids
from keyplane.errors import StorageError
from keyplane.limits.scripts import Script
from keyplane.services.invalidation import driver_name, wrapped

log = logging.getLogger(__name__)

_CONFIRMED_AFTER: ContextVar[bool] = ContextVar("keyplane_confirmed_after", default=False)


@contextlib.contextmanager
def confirmed_after(wait: float | None) -> Iterator[None]:
    """Around a write whose caller then waits for every instance's confirmation itself
    (``?wait=confirmed`` with ``wait`` seconds; None: it does not): the write's evictions are
    published without their own wait (``KEYPLANE_EVICTION_WAIT_SECONDS``), which the
    confirmation repeats. A paused instance made such a write wait out both, one after the
    other."""
    if wait is None:
        yield
        return
    token = _CONFIRMED_AFTER.set(True)
    try:
        yield
    finally:
        _CONFIRMED_AFTER.reset(token)


def confirmed_after_this_write() -> bool:
    """Whether the running write is inside :func:`confirmed_after` with a wait."""
    return _CONFIRMED_AFTER.get()


#: What a registry raises when its backend is unreachable.
REGISTRY_ERRORS = (StorageError,)
#: Acknowledgements outlive any wait for them (timeouts are capped far below this).
ACK_RETENTION_MS = 10 * 60 * 1000
#: A silent instance is forgotten by the registry after this long (live is much shorter).
REGISTRY_RETENTION_MS = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class Confirmation:
    """Which live instances confirmed dropping the key, and which did not in time."""

    confirmed: tuple[str, ...]
    unconfirmed: tuple[str, ...]
    #: Why the instances could not be asked at all (the registry was unreachable), if so.
    error: str | None = None

    @property
    def complete(self) -> bool:
        return not self.unconfirmed and self.error is None


class InstanceRegistry(Protocol):
    """Heartbeats and acknowledgements shared by every instance of a deployment."""

    async def beat(self, instance_id: str) -> None:
        """Record that ``instance_id`` is alive now."""

    async def leave(self, instance_id: str) -> None:
        """Forget ``instance_id`` (it is stopping): nobody waits for it any more."""

    async def live(self) -> set[str]:
        """The instances that beat within the liveness bound."""

    async def acknowledge(self, eviction_id: str, instance_id: str) -> None:
        """Record that ``instance_id`` applied the eviction ``eviction_id``."""

    async def acknowledged(self, eviction_id: str) -> set[str]:
        """The instances that acknowledged ``eviction_id`` so far."""


class RedisInstanceRegistry:
    def __init__(self, redis: Redis, namespace: str, liveness_seconds: float) -> None:
        self._redis = redis
        self._prefix = f"keyplane:{{{namespace}}}"
        self._registry = f"{self._prefix}:instances"
        self._liveness_ms = max(1, round(liveness_seconds * 1000))
        self._beat = Script("instance_beat.lua", package="keyplane.services")
        self._live = Script("instances_live.lua", package="keyplane.services")

    def _acks(self, eviction_id: str) -> str:
        return f"{self._prefix}:acks:{eviction_id}"

    async def beat(self, instance_id: str) -> None:
        with _wrapped():
            await self._beat(self._redis, [self._registry], [instance_id, REGISTRY_RETENTION_MS])

    async def leave(self, instance_id: str) -> None:
        with _wrapped():
            await self._redis.zrem(self._registry, instance_id)

    async def live(self) -> set[str]:
        with _wrapped():
            members = await self._live(self._redis, [self._registry], [self._liveness_ms])
        return {_text(member) for member in members}

    async def acknowledge(self, eviction_id: str, instance_id: str) -> None:
        key = self._acks(eviction_id)
        with _wrapped():
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.sadd(key, instance_id)
                pipe.pexpire(key, ACK_RETENTION_MS)
                await pipe.execute()

    async def acknowledged(self, eviction_id: str) -> set[str]:
        with _wrapped():
            members = await self._redis.smembers(self._acks(eviction_id))
        return {_text(member) for member in members}


def _wrapped() -> contextlib.AbstractContextManager[None]:
    """Redis' exceptions become ``RegistryUnavailableError`` at this adapter's boundary."""
    return wrapped((RedisError,), "instance registry")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


#: Publishes an eviction carrying the given id to every instance.
Publish = Callable[[str], Awaitable[None]]


async def await_confirmations(
    registry: InstanceRegistry,
    self_id: str,
    publish: Publish,
    timeout: float,
    *,
    include_self: bool = True,
) -> Confirmation:
    """Publish an eviction and wait until every live instance acknowledged it, or ``timeout``.

    The live set is taken before publishing: an instance that starts later loads the record
    after the write and holds nothing older. The publishing instance counts too (it confirms
    through its own subscription, which also proves that subscription works), unless
    ``include_self`` is false: the writer evicted its own cache when it wrote, so the default
    wait of every write (:meth:`Runtime.broadcast_eviction`) only waits for the others, and
    does not poll at all when there are none.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    eviction_id = ids.new_id("ev")
    live: set[str] = set()
    acked: set[str] = set()
    try:
        live = await registry.live() | {self_id}
        if not include_self:
            live.discard(self_id)
        await publish(eviction_id)
        if not live:
            return Confirmation((), ())
        delay = 0.005
        while True:
            acked = await registry.acknowledged(eviction_id)
            remaining = deadline - loop.time()
            if live <= acked or remaining <= 0:
                break
            # Poll, backing off to 100 ms: a handful of small reads for the usual wait.
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.1)
    except REGISTRY_ERRORS as exc:
        log.warning("revocation confirmations unavailable: %s", driver_name(exc))
        return Confirmation(
            tuple(sorted(acked)),
            tuple(sorted(live - acked)),
            error="the instance registry is unreachable",
        )
    return Confirmation(tuple(sorted(acked)), tuple(sorted(live - acked)))
