"""An in-process cache of records looked up by secret hash, for the verify hot path.

* Positive entries live ``ttl`` seconds, so a missed invalidation is repaired within that bound.
* Unknown hashes are cached for ``negative_ttl`` seconds, so a flood of bad keys costs one
  database query per distinct key per period, not one per request.
* Concurrent misses for the same hash share one load (single flight).
* ``invalidate(record_id)`` evicts every hash of a record at once (current and rotated-out),
  and returns only once the eviction has been handed to the other instances (``on_change``).
* An eviction also detaches loads in flight: a lookup that starts after a write has been
  evicted never joins a load that read the database before the write.
* Bounded by ``max_entries`` with CLOCK eviction (``services/clock_map.py``): a hit sets one
  bit instead of reordering a list, and an entry costs about 150 bytes of bookkeeping besides
  its key and value (a million cached keys must fit in a few hundred megabytes).
* ``compact_key`` may store keys in a smaller form than callers pass them (a 64-character
  hex digest as its 32 bytes: 65 bytes instead of 113 per entry).
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Final, Generic, TypeVar

from keyplane.services.clock_map import ClockMap

T = TypeVar("T")

#: The value stored for a cached miss (``None`` would read as absent in the map).
_UNKNOWN = object()


class Missing(enum.Enum):
    """What :meth:`TtlCache.cached` answers when the cache does not know: ``get`` loads it."""

    MISSING = enum.auto()


MISSING: Final = Missing.MISSING


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
        compact_key: Callable[[str], Hashable] | None = None,
    ) -> None:
        self._loader = loader
        self._record_id = record_id
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._max_entries = max_entries
        self._monotonic = monotonic
        self._compact = compact_key if compact_key is not None else _same
        self._entries: ClockMap[Hashable, object] = ClockMap(max_entries, self._forget)
        # record id -> its cached key, or a tuple of them when several (current and rotated
        # out): one key is the common case, and a set per record would cost 216 bytes.
        self._hashes_of: dict[str, Hashable | tuple[Hashable, ...]] = {}
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

    def cached(self, key: Hashable) -> T | Missing | None:
        """The value cached under ``key``, in its stored form (``compact_key``'s): ``None``
        for a hash cached as unknown, ``MISSING`` when nothing is cached. No await: most
        verifies are answered from the cache, and need no coroutine for it."""
        value = self._entries.get(key, self._monotonic())
        if value is None:
            return MISSING
        self.hits += 1
        return None if value is _UNKNOWN else value  # type: ignore[return-value]

    async def get(self, secret_hash: str) -> T | None:
        value = self.cached(self._compact(secret_hash))
        if value is not MISSING:
            return value
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
        key = self._compact(secret_hash)
        now = self._monotonic()
        self._drop(key)
        self._entries.put(key, _UNKNOWN if value is None else value, now + ttl, now)
        if value is not None:
            record_id = self._record_id(value)
            known = self._hashes_of.get(record_id)
            if known is None:
                self._hashes_of[record_id] = key
            elif isinstance(known, tuple):
                self._hashes_of[record_id] = (*known, key)
            elif known != key:
                self._hashes_of[record_id] = (known, key)

    def _drop(self, key: Hashable) -> None:
        value = self._entries.pop(key)
        if value is not None:
            self._forget(key, value)

    def _forget(self, key: Hashable, value: object) -> None:
        """Unlink an entry that left the map from its record's keys."""
        if value is _UNKNOWN:
            return
        record_id = self._record_id(value)  # type: ignore[arg-type]
        known = self._hashes_of.get(record_id)
        if isinstance(known, tuple):
            rest = tuple(other for other in known if other != key)
            self._hashes_of[record_id] = rest[0] if len(rest) == 1 else rest
        elif known == key:
            del self._hashes_of[record_id]

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
        known = self._hashes_of.pop(record_id, ())
        for key in known if isinstance(known, tuple) else (known,):
            self._entries.pop(key)
        for secret_hash in extra_hashes:
            self._drop(self._compact(secret_hash))


def _same(key: str) -> Hashable:
    return key


def _consume_exception(task: asyncio.Task[object]) -> None:
    # Mark a failed load's exception as retrieved: its waiters re-raise it, and when every
    # waiter went away asyncio would otherwise log "exception was never retrieved".
    if not task.cancelled():
        task.exception()
