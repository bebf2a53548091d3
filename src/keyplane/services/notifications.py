"""Notifications that are not one write's change: refused requests per key and minute, and
keys about to expire. Both reach the webhook outbox as journal changes (``audited=False``).

- :class:`RefusalTally` counts rate, token and concurrency refusals per key and minute in
  memory on the verify path (a dict update, no I/O) and a supervised loop flushes each
  finished minute as one ``rate_limit.exceeded`` per key: never one event per refusal. Each
  instance tallies what it refused, so with several instances a key may get one per instance.
- :class:`ExpiryNotices` looks, once a minute, for keys expiring within each configured
  number of days (``KEYPLANE_KEY_EXPIRING_DAYS``, default 30, 7, 1) and sends
  ``key.expiring`` once per key, expiry time and number of days, across any number of
  instances (``webhook_notices`` records what was sent, in the same transaction).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from keyplane.domain.changes import SYSTEM, Journal
from keyplane.domain.clock import Clock
from keyplane.domain.decisions import Code
from keyplane.domain.keys import KeyRecord
from keyplane.errors import KeyplaneError
from keyplane.services.supervisor import uninterrupted
from keyplane.store.webhooks import WebhookStore

log = logging.getLogger(__name__)

#: Refusals tallied: the limits a key ran into (not a wrong or revoked key).
TALLIED = frozenset({Code.RATE_LIMITED, Code.TOKEN_LIMITED, Code.CONCURRENCY_EXCEEDED})
#: Most (key, minute) tallies held between flushes; past it new keys are not counted until
#: the next flush (bounded memory under a flood of distinct keys).
MAX_TALLIES = 100_000


@dataclass
class _Tally:
    record: KeyRecord
    by_code: dict[str, int] = field(default_factory=dict)


class RefusalTally:
    """Refused requests per key and minute, flushed as ``rate_limit.exceeded``."""

    def __init__(self, store: WebhookStore, clock: Clock, period: float = 10.0) -> None:
        self._store = store
        self._clock = clock
        self._period = period
        self._tallies: dict[tuple[str, datetime], _Tally] = {}

    def refused(self, record: KeyRecord, code: Code, at: datetime) -> None:
        """Count one refusal (called on the verify path: memory only)."""
        if code not in TALLIED:
            return
        minute = at.replace(second=0, microsecond=0)
        tally = self._tallies.get((record.id, minute))
        if tally is None:
            if len(self._tallies) >= MAX_TALLIES:
                return
            tally = self._tallies[(record.id, minute)] = _Tally(record)
        tally.by_code[code.value] = tally.by_code.get(code.value, 0) + 1

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._period)
            try:
                await uninterrupted(self.flush())
            except KeyplaneError as exc:
                log.warning("flushing refusal tallies failed: %s", type(exc).__name__)

    async def flush(self, everything: bool = False) -> int:
        """Send the finished minutes (every minute when ``everything``); how many events."""
        current = self._clock.now().replace(second=0, microsecond=0)
        done = [slot for slot in self._tallies if everything or slot[1] < current]
        if not done:
            return 0
        journal = Journal(SYSTEM, self._clock.now())
        for slot in sorted(done, key=lambda s: (s[1], s[0])):
            tally = self._tallies[slot]
            record = tally.record
            journal.record(
                "rate_limit.exceeded",
                org_id=record.org_id,
                target_type="key",
                target_id=record.id,
                project_id=record.project_id,
                details={
                    "name": record.name,
                    "owner": record.owner,
                    "start": record.start,
                    "end": record.end,
                    "minute": slot[1],
                    "refused": sum(tally.by_code.values()),
                    "by_code": dict(tally.by_code),
                },
                audited=False,
            )
        await self._store.notify(journal)
        for slot in done:
            del self._tallies[slot]
        return len(done)


class ExpiryNotices:
    """``key.expiring`` N days ahead, once per key and N."""

    def __init__(
        self,
        store: WebhookStore,
        clock: Clock,
        days: Sequence[int],
        period: float = 60.0,
        batch: int = 500,
    ) -> None:
        self._store = store
        self._clock = clock
        self._days = sorted(set(days))
        self._period = period
        self._batch = batch

    async def run(self) -> None:
        while True:
            try:
                await uninterrupted(self.run_once())
            except KeyplaneError as exc:
                log.warning("key expiry notices failed: %s", type(exc).__name__)
            await asyncio.sleep(self._period)

    async def run_once(self) -> int:
        """Send what is due now; how many notices were sent."""
        if not self._days:
            return 0
        now = self._clock.now()
        sent = 0
        until = now + timedelta(days=self._days[-1])
        cursor: tuple[datetime, str] | None = None
        while True:
            page = await self._store.expiring_keys(now, until, cursor, self._batch)
            for key in page:
                sent += await self._notice(key, now)
            if len(page) < self._batch:
                return sent
            last = page[-1]
            if last.expires_at is None:  # pragma: no cover - selected on it
                return sent
            cursor = (last.expires_at, last.id)

    async def _notice(self, key: KeyRecord, now: datetime) -> int:
        if key.expires_at is None:  # pragma: no cover - selected on it
            return 0
        left = key.expires_at - now
        # The nearest band only: a key found 2 days before expiry gets the 7-day notice,
        # never a late 30-day one.
        days = next(d for d in self._days if left <= timedelta(days=d))
        subject = f"key.expiring:{key.id}:{days}:{int(key.expires_at.timestamp())}"
        journal = Journal(SYSTEM, now)
        journal.record(
            "key.expiring",
            org_id=key.org_id,
            target_type="key",
            target_id=key.id,
            project_id=key.project_id,
            details={
                "name": key.name,
                "owner": key.owner,
                "start": key.start,
                "end": key.end,
                "expires_at": key.expires_at,
                "days": days,
            },
            audited=False,
        )
        return 1 if await self._store.notice_once(subject, journal, now) else 0
