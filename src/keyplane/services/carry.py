"""What each key's budget carries into the current period (rollover), read from the ledger
once per key, period and rule, and kept: :class:`CarryBook`.

The carry depends on the previous period's spending only (``domain/rollover.py``), which is
durable and, once the period is over, no longer moves: every instance and every restart
computes the same number, so it is cached without any invalidation but the period's end.
The verifier adds it to the budget's limit (``BudgetAsk.limit``, ``BudgetAsk.carry``); the
limiters' counters still count what the ledger says was spent, so exactness under concurrency
is theirs, unchanged. One read per (key, period) per instance, however many verifies ask at
once (single flight).

Left as it is (documented in docs/policy.md): a report received just before a period ends
but committed after an instance computed the new period's carry is not in that carry until
the entry is computed again (next period, restart, or a policy change).
"""

from __future__ import annotations

from datetime import datetime

from keyplane.domain import rollover
from keyplane.domain.periods import Reset
from keyplane.domain.usage import BUCKET_OF_RESET
from keyplane.limits.base import SingleFlight
from keyplane.store.base import UsageStore

#: Entries kept; past it the book starts afresh (costing one read per key again).
MAX_ENTRIES = 100_000

_Entry = tuple[str, Reset, datetime, int, int]


class CarryBook:
    def __init__(self, store: UsageStore, max_entries: int = MAX_ENTRIES) -> None:
        self._store = store
        self._max_entries = max_entries
        self._carries: dict[_Entry, int] = {}
        self._reading = SingleFlight()

    async def carry(
        self,
        key_id: str,
        created_at: datetime,
        reset: Reset,
        start: datetime,
        limit: int,
        max_carry: int,
    ) -> int:
        """Micro-credits the key's budget carries into the period starting at ``start``."""
        entry = (key_id, reset, start, limit, max_carry)
        known = self._carries.get(entry)
        if known is not None:
            return known
        previous = rollover.previous_period_start(reset, start, created_at)
        if previous is None:
            return 0

        async def read() -> None:
            spent = await self._store.spent_in(key_id, BUCKET_OF_RESET[reset], previous)
            if len(self._carries) >= self._max_entries:
                self._carries.clear()
            self._carries[entry] = rollover.carry(limit, max_carry, spent)

        await self._reading.run(entry, read)
        return self._carries.get(entry, 0)
