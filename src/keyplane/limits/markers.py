"""Long windows and slots that survive Redis losing its data: each key's *marker*.

Budgets come back from the ledger, but windows and slots live only in Redis, so a restart or
failover that loses them would admit a used-up 30-day window again. Every admission that touches
a long window (a period of an hour or more) or takes a slot first checks, in the same script,
the key's *marker*: a Redis key promised to last until a stated instant, and made to outlast
every long window's debt and every slot hold it covers. The promise is durable (``guard``: a
database row, renewed under a row lock, ``SqlUsageStore.guard_limit_state``), the marker is not.
A missing marker whose promise is still running means Redis lost the key's state; a missing
marker with no running promise means nothing was lost (a new key, or one idle past its marker,
whose windows and slots have run out anyway). On a loss, ``lua/restore.lua`` rebuilds what the
operator chose (``after_loss``) before anything is admitted: ``fail_closed`` counts each long
window as used up at that instant and refuses slots until every slot taken before the loss is
over (``min(now + hold, promise)``); ``reseed`` does the same for slots and rebuilds each long
window from when the database last knew it full again (written in batches by ``keeper``, so at
most one flush interval behind); ``forget`` starts them empty. Renewal takes one database write
per key per third of the marker's lifetime (three times the longest of the hold and the long
windows' full-burst times), run once per key however many verifies wait for it, and off the
request path until the marker has less than one such time left.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Literal

from redis.asyncio import Redis

from keyplane.domain.admission import WindowAsk
from keyplane.errors import CountersUnsettledError, StorageError
from keyplane.limits.keeper import Guard
from keyplane.limits.scripts import scripts, window_args, window_id

log = logging.getLogger(__name__)

#: Windows of this period and longer survive Redis losing its data (see the module docstring);
#: shorter ones may start empty again, which admits at most one more burst.
LONG_WINDOW_US = 3_600_000_000

#: What a lost Redis costs the long windows and slots: see the module docstring.
AfterLoss = Literal["fail_closed", "reseed", "forget"]


def _log_failed_renewal(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        # The next admission that needs the marker renews it on its own path and sees why.
        log.info("renewing a limit marker failed: %s", type(exc).__name__)


class Markers:
    """Renews the markers of one :class:`~keyplane.limits.redis.RedisLimiter`'s keys.

    Args:
        redis: the limiter's client.
        guard: keeps each marker's durable promise.
        after_loss: what long windows and slots do once Redis is found to have lost them.
        key: a key id's key-name base (``<prefix>:{<key id>}``).
        window_key: the key name of one of a key's windows.
        clock: the scripts' "now" argument for a caller's ``now`` (-1: Redis ``TIME``).
    """

    def __init__(
        self,
        redis: Redis,
        guard: Guard,
        after_loss: AfterLoss,
        key: Callable[[str], str],
        window_key: Callable[[str, WindowAsk], str],
        clock: Callable[[datetime], int],
    ) -> None:
        self._redis = redis
        self._guard = guard
        self._after_loss = after_loss
        self._key = key
        self._window_key = window_key
        self._clock = clock
        self._restore = scripts().restore
        # One marker renewal per key at a time, however many verifies wait for it.
        self.renewing: dict[str, asyncio.Task[None]] = {}
        self.renewals = 0  # renewals ended, of any key
        #: Keys whose long windows and slots Redis was found to have lost, for monitoring.
        self.losses = 0

    def renew_soon(
        self, key_id: str, windows: list[WindowAsk], hold_us: int, need_us: int, now: datetime
    ) -> None:
        """Start renewing the key's marker in the background, unless that is under way."""
        if key_id not in self.renewing:
            self._start(key_id, windows, hold_us, need_us, now)

    async def renew(
        self, key_id: str, windows: list[WindowAsk], hold_us: int, need_us: int, now: datetime
    ) -> None:
        """Renew the key's marker (rebuilding what a lost Redis lost), once for all waiters."""
        task = self.renewing.get(key_id) or self._start(key_id, windows, hold_us, need_us, now)
        # shield: a verify that goes away must not cancel a renewal others wait for.
        await asyncio.shield(task)

    def _start(
        self, key_id: str, windows: list[WindowAsk], hold_us: int, need_us: int, now: datetime
    ) -> asyncio.Task[None]:
        base = self._key(key_id)
        keys = [f"{base}:mark", f"{base}:lost", *(self._window_key(key_id, a) for a in windows)]

        async def install(promised: int | None, kept: Mapping[str, int]) -> int:
            args: list[str | int] = [
                self._clock(now),
                -1 if promised is None else promised,
                3 * need_us,
                self._after_loss,
                hold_us,
            ]
            for ask in windows:
                full_at = kept.get(window_id(ask), -1)
                args += [
                    ask.window.burst,
                    *window_args(ask.window),
                    full_at,
                    int(ask.calendar_day),
                ]
            reply = await self._restore(self._redis, keys, args)
            if int(reply[0]):
                self.losses += 1
                if self.losses & (self.losses - 1) == 0:  # 1, 2, 4, 8...: one line per burst
                    log.warning(
                        "Redis lost the limit state of %d key(s) so far (latest %s): "
                        "long windows and slots rebuilt as %s",
                        self.losses,
                        key_id,
                        self._after_loss,
                    )
            return int(reply[1])

        async def renew() -> None:
            try:
                await self._guard(key_id, install)
            except StorageError as exc:
                raise CountersUnsettledError("the limit marker could not be renewed") from exc

        task = asyncio.get_running_loop().create_task(renew())
        self.renewing[key_id] = task
        task.add_done_callback(lambda done: self._forget(key_id, done))
        # Also when nobody waits for it any more (a renewal in the background, or its
        # verifies went away): a failure is noted, never left unretrieved.
        task.add_done_callback(_log_failed_renewal)
        return task

    def _forget(self, key_id: str, task: asyncio.Task[None]) -> None:
        self.renewals += 1
        if self.renewing.get(key_id) is task:
            del self.renewing[key_id]
