"""What must outlive Redis of the limits kept there: marker promises and long windows' state.

See :mod:`keyplane.limits.markers` for how they are used. The
durable versions live in the database (``SqlUsageStore.guard_limit_state`` and
``SqlUsageStore.keep_limit_windows``); :class:`MemoryGuard` keeps them in this process, for tests
and for one instance whose Redis restarts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from keyplane.services.batching import LatestBatcher

#: Puts a key's marker in Redis, given the running promise (None if there is none) and the
#: long windows kept for the key (window id -> when it is full again, us); returns the
#: marker's new end.
Install = Callable[[int | None, Mapping[str, int]], Awaitable[int]]
#: Runs ``install`` for a key and durably records the promise it returns; one at a time per
#: key across every instance.
Guard = Callable[[str, Install], Awaitable[None]]
#: Durably keeps, per (key id, window id), the latest instant the window is full again.
Keep = Callable[[Mapping[tuple[str, str], int]], Awaitable[None]]


class MemoryGuard:
    """Marker promises and kept windows in this process: for tests, and one instance.

    Instances that share a Redis must share these too (the database), or one that never
    promised a key would take its lost marker for a new key.
    """

    def __init__(self) -> None:
        self._promised: dict[str, int] = {}
        self._kept: dict[str, dict[str, int]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def __call__(self, key_id: str, install: Install) -> None:
        async with self._locks.setdefault(key_id, asyncio.Lock()):
            promised = self._promised.get(key_id)
            until = await install(promised, dict(self._kept.get(key_id, {})))
            self._promised[key_id] = until if promised is None else max(until, promised)

    async def keep(self, rows: Mapping[tuple[str, str], int]) -> None:
        for (key_id, window), full_at in rows.items():
            kept = self._kept.setdefault(key_id, {})
            kept[window] = max(full_at, kept.get(window, full_at))


class WindowKeeper:
    """Collects when each long window is full again and writes them in one batch per interval.

    Up to one interval of admissions is not yet durable when Redis loses its data: that is the
    bound ``reseed`` states (docs/deployment.md).
    """

    def __init__(self, keep: Keep, interval: float) -> None:
        self._batch: LatestBatcher[tuple[str, str], int] = LatestBatcher(
            keep, interval, "limit windows"
        )

    def record(self, key_id: str, window: str, full_at_us: int) -> None:
        self._batch.record((key_id, window), full_at_us)

    async def flush(self) -> None:
        await self._batch.flush()

    async def run(self) -> None:
        """Flush every ``interval`` seconds until cancelled (the owner flushes once more)."""
        await self._batch.run()
