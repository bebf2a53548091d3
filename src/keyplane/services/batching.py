"""Latest-value buffers written in batches, so the hot path records and never waits on a write.

The hot path calls ``record`` (a dict update); a supervised loop calls ``flush`` every interval,
and the owner flushes once more when it stops. A failed write puts its rows back for the next
flush, keeping whichever value is greater if the slot was recorded again meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Any, Generic, Protocol, TypeVar

from keyplane.errors import KeyplaneError
from keyplane.services.supervisor import uninterrupted

log = logging.getLogger(__name__)


class _Ordered(Protocol):
    def __gt__(self, other: Any, /) -> bool: ...


K = TypeVar("K", bound=Hashable)
V = TypeVar("V", bound=_Ordered)


class LatestBatcher(Generic[K, V]):
    """Keeps the greatest value recorded per slot and writes them all in one call per interval."""

    def __init__(
        self, write: Callable[[Mapping[K, V]], Awaitable[None]], interval: float, what: str
    ) -> None:
        self._write = write
        self._interval = interval
        self._what = what
        self._pending: dict[K, V] = {}
        # One flush at a time: the final flush at shutdown waits for one already running.
        self._lock = asyncio.Lock()

    def record(self, slot: K, value: V) -> None:
        previous = self._pending.get(slot)
        if previous is None or value > previous:
            self._pending[slot] = value

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self) -> None:
        async with self._lock:
            if not self._pending:
                return
            batch, self._pending = self._pending, {}
            try:
                await self._write(batch)
            except KeyplaneError:
                log.warning("%s flush failed; will retry", self._what, extra={"rows": len(batch)})
                for slot, value in batch.items():
                    self.record(slot, value)

    async def run(self) -> None:
        """Flush every interval until cancelled.

        The owner flushes once more after cancelling this (``Runtime.stop``); ``flush`` waits
        for a flush still in flight, so nothing recorded before the stop is lost.
        """
        while True:
            await asyncio.sleep(self._interval)
            await uninterrupted(self.flush())
