"""Batched ``last_used_at`` writes, so verify never waits on a database write."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime

from keyplane.services.batching import LatestBatcher

Touch = Callable[[Mapping[str, datetime]], Awaitable[None]]


class LastUsedRecorder(LatestBatcher[str, datetime]):
    """Collects the latest use of each key in memory and writes them in one transaction.

    ``last_used_at`` is informational: losing up to one flush interval of it in a crash is the
    accepted price of a verify path with no synchronous write.
    """

    def __init__(self, touch: Touch, interval: float) -> None:
        super().__init__(touch, interval, "last_used")
