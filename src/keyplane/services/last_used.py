"""Batched ``last_used_at`` writes, so verify never waits on a database write."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime

from keyplane.errors import KeyplaneError

Touch = Callable[[Mapping[str, datetime]], Awaitable[None]]

log = logging.getLogger(__name__)


class LastUsedRecorder:
    """Collects the latest use of each key in memory and writes them in one transaction.

    ``last_used_at`` is informational: losing up to one flush interval of it in a crash is the
    accepted price of a verify path with no synchronous write.
    """

    def __init__(self, touch: Touch, interval: float) -> None:
        self._touch = touch
        self._interval = interval
        self._pending: dict[str, datetime] = {}
        # One flush at a time: the final flush at shutdown waits for one already running.
        self._lock = asyncio.Lock()

    def record(self, key_id: str, when: datetime) -> None:
        previous = self._pending.get(key_id)
        if previous is None or when > previous:
            self._pending[key_id] = when

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self) -> None:
        async with self._lock:
            if not self._pending:
                return
            batch, self._pending = self._pending, {}
            try:
                await self._touch(batch)
            except KeyplaneError:
                log.warning("last_used flush failed; will retry", extra={"keys": len(batch)})
                for key_id, when in batch.items():
                    self.record(key_id, when)

    async def run(self) -> None:
        """Flush every ``interval`` seconds until cancelled.

        The owner flushes once more after cancelling this (``Runtime.stop``); ``flush`` waits
        for a flush still in flight, so nothing recorded before the stop is lost.
        """
        while True:
            await asyncio.sleep(self._interval)
            # Shielded: cancelling mid-write would abandon a database connection.
            await asyncio.shield(self.flush())
