"""An in-process cache of records looked up by secret hash, for the verify hot path.

* Positive entries live ``ttl`` seconds, so a missed invalidation is repaired within that bound.
* Unknown hashes are cached for ``negative_ttl`` seconds, so a flood of bad keys costs one
  database query per distinct key per period, not one per request.
* Concurrent misses for the same hash share one load (single flight).
* ``invalidate(record_id)`` evicts every hash of a record at once (current and rotated-out),
  and returns only once the eviction has been handed to the other instances (``on_change``).
* An eviction also detaches loads in flight: a lookup that starts after a write has been
  evicted never joins a load that read the database before the write.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class TtlCache(Generic[T]):
    def __init__(
        self,
        loader: Callable[[str], Awaitable[T | None]],
        record_id: Callable[[T], str],
        *,
        ttl: float,
        negative_ttl: float,
        max_entries: int,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._loader = loader
        self._record_id = record_id
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._max_entries = max_entries
        self._monotonic = monotonic
        self._entries: dict[str, tuple[T | None, float]] = {}
        self._hashes_of: dict[str, set[str]] = {}
        self._inflight: dict[str, asyncio.Task[T | None]] = {}
        # Bumped by every invalidation; a load that started before a bump is not cached, so a
        # write racing a load can never leave the pre-write record behind.
        self._epoch = 0
        self.hits = 0
        self.misses = 0
        #: Told of every invalidation, to pass it on to other instances; awaited, so a write
        #: does not return before its eviction is on its way to them.
        self.on_change: Callable[[str | None, tuple[str, ...]], Awaitable[None]] | None = None

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, secret_hash: str) -> T | None:
        entry = self._entries.get(secret_hash)
        if entry is not None and entry[1] > self._monotonic():
            self.hits += 1
            return entry[0]
        self.misses += 1
        task = self._inflight.get(secret_hash)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._load(secret_hash))
            task.add_done_callback(_consume_exception)
            self._inflight[secret_hash] = task
        # shield: a caller that gives up (client disconnected) must not cancel the shared load.
        return await asyncio.shield(task)

    async def _load(self, secret_hash: str) -> T | None:
        epoch = self._epoch
        me = asyncio.current_task()
        try:
            value = await self._loader(secret_hash)
        finally:
            # Only this load's own slot: after an eviction a newer load may hold it.
            if self._inflight.get(secret_hash) is me:
                del self._inflight[secret_hash]
        if epoch == self._epoch:
            self._put(secret_hash, value)
        return value

    def _put(self, secret_hash: str, value: T | None) -> None:
        ttl = self._ttl if value is not None else self._negative_ttl
        if ttl <= 0:
            return
        self._entries.pop(secret_hash, None)
        while len(self._entries) >= self._max_entries:
            oldest = next(iter(self._entries))
            self._evict(oldest)
        self._entries[secret_hash] = (value, self._monotonic() + ttl)
        if value is not None:
            self._hashes_of.setdefault(self._record_id(value), set()).add(secret_hash)

    def _evict(self, secret_hash: str) -> None:
        value, _ = self._entries.pop(secret_hash)
        if value is not None:
            hashes = self._hashes_of.get(self._record_id(value))
            if hashes is not None:
                hashes.discard(secret_hash)
                if not hashes:
                    del self._hashes_of[self._record_id(value)]

    async def invalidate(self, record_id: str, extra_hashes: tuple[str, ...] = ()) -> None:
        """Forget every cached hash of ``record_id``, plus ``extra_hashes`` (e.g. a new one),
        here and, through ``on_change``, on every other instance."""
        self.evict(record_id, extra_hashes)
        if self.on_change is not None:
            await self.on_change(record_id, extra_hashes)

    async def clear(self) -> None:
        """Forget everything, here and on every other instance."""
        self.evict(None)
        if self.on_change is not None:
            await self.on_change(None, ())

    def evict(self, record_id: str | None, extra_hashes: tuple[str, ...] = ()) -> None:
        """Forget ``record_id`` (everything when None) in this process only."""
        self._epoch += 1
        # A load in flight may have read the record before the write: later lookups start
        # their own (its current waiters still get its answer; it is not cached, see _load).
        self._inflight.clear()
        if record_id is None:
            self._entries.clear()
            self._hashes_of.clear()
            return
        for secret_hash in self._hashes_of.pop(record_id, set()) | set(extra_hashes):
            self._entries.pop(secret_hash, None)


def _consume_exception(task: asyncio.Task[object]) -> None:
    # Mark a failed load's exception as retrieved: its waiters re-raise it, and when every
    # waiter went away asyncio would otherwise log "exception was never retrieved".
    if not task.cancelled():
        task.exception()
