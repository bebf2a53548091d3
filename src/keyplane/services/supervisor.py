"""Supervised background loops: a crashed loop is restarted, logged and reported.

Every long-running task of a :class:`~keyplane.services.runtime.Runtime` (the ledger writer,
the last-used flushes, reservation expiry, replay-secret erasure, heartbeats, the invalidation
listener, the window keeper) runs under one :class:`Supervisor`. A loop that raises is logged
(its exception *type* only: messages of driver errors can carry connection strings or key
material) and started again after an exponential backoff, capped. A loop that returns has
finished on purpose (the ledger writer after ``close``) and is not restarted.

A loop's database work runs :func:`uninterrupted`: a stop that cancels the loop mid-write
waits for the write to end instead of abandoning its transaction (a connection reset under a
cancelled task fails, is logged by the pool, and the work is lost or left half done).

Each loop's state is visible in ``/readyz`` and ``/metrics``. A loop is ``critical`` when the
server answers wrongly while it is down, not merely later or less tidily: readiness is
degraded while a critical loop is restarting, so a load balancer sends traffic elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar

from keyplane.metrics import LOOP_RESTARTS

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How the supervisor waits out a backoff; injected in tests so nothing really waits.
Sleep = Callable[[float], Awaitable[None]]


async def uninterrupted(work: Awaitable[T]) -> T:
    """Await ``work`` to its end even when the caller is cancelled meanwhile, then let the
    cancellation through.

    ``asyncio.shield`` alone lets the caller end at once while the work goes on unwatched:
    the supervisor's stop would then close the store under it. Here the caller ends only
    once the work has (or when cancelled a second time: the stop's grace period bounds it).
    """
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        if not task.cancelled():
            task.exception()  # retrieved: the caller is stopping, its cancellation wins
        raise


class LoopStatus(StrEnum):
    RUNNING = "running"
    RESTARTING = "restarting"
    #: Returned on its own (finished its work) or stopped by the supervisor.
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class LoopState:
    """What ``/readyz`` and ``/metrics`` say about one loop."""

    name: str
    critical: bool
    status: LoopStatus
    restarts: int
    #: The type name of the last exception the loop raised (never its message).
    last_error: str | None


@dataclass(slots=True)
class _Loop:
    name: str
    body: Callable[[], Awaitable[None]]
    critical: bool
    task: asyncio.Task[None] | None = None
    status: LoopStatus = LoopStatus.RUNNING
    restarts: int = 0
    last_error: str | None = None
    #: Set by :meth:`Supervisor.finish`: run once more at most, never restart again.
    finishing: asyncio.Event = field(default_factory=asyncio.Event)


class Supervisor:
    """Runs named loops, restarting a crashed one with capped exponential backoff.

    Args:
        base_delay: seconds before the first restart; doubled for each crash in a row.
        max_delay: the cap on that delay.
        sleep: how a backoff is waited out (``asyncio.sleep``; tests pass one that returns at
            once, or waits for an event).
        monotonic: seconds from a monotonic clock (``time.monotonic``).
        stop_grace: how long :meth:`stop` waits for cancelled loops to end.

    A loop that ran ``max_delay`` seconds or longer before crashing starts its backoff from
    ``base_delay`` again: only crashes in quick succession back off further.
    """

    def __init__(
        self,
        *,
        base_delay: float = 0.5,
        max_delay: float = 30.0,
        sleep: Sleep = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        stop_grace: float = 10.0,
    ) -> None:
        if base_delay <= 0 or max_delay < base_delay:
            raise ValueError("need 0 < base_delay <= max_delay")
        self._stop_grace = stop_grace
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._sleep = sleep
        self._monotonic = monotonic
        self._loops: dict[str, _Loop] = {}

    def start(self, name: str, body: Callable[[], Awaitable[None]], *, critical: bool) -> None:
        """Run ``body()`` as the loop ``name``, restarting it whenever it raises."""
        if name in self._loops:
            raise ValueError(f"a loop named {name!r} is already supervised")
        loop = _Loop(name, body, critical)
        loop.task = asyncio.get_running_loop().create_task(self._supervise(loop), name=name)
        self._loops[name] = loop

    def delay(self, crashes_in_a_row: int) -> float:
        """Seconds waited before restarting a loop that crashed ``crashes_in_a_row`` times."""
        return min(self._max_delay, self._base_delay * 2.0 ** max(0, crashes_in_a_row - 1))

    async def _supervise(self, loop: _Loop) -> None:
        in_a_row = 0
        while True:
            loop.status = LoopStatus.RUNNING
            started = self._monotonic()
            try:
                await loop.body()
            except asyncio.CancelledError:
                loop.status = LoopStatus.STOPPED
                raise
            except Exception as exc:
                loop.last_error = type(exc).__name__
                if loop.finishing.is_set():
                    # Told to finish (a stop is under way): no restart, or a loop that keeps
                    # crashing would hold the stop forever.
                    log.error(
                        "background loop %s crashed (%s) while finishing",
                        loop.name,
                        loop.last_error,
                    )
                    loop.status = LoopStatus.STOPPED
                    return
                in_a_row = 1 if self._monotonic() - started >= self._max_delay else in_a_row + 1
                loop.restarts += 1
                LOOP_RESTARTS.labels(loop.name).inc()
                loop.status = LoopStatus.RESTARTING
                wait = self.delay(in_a_row)
                # The type only: a driver's message may hold a URL with a password, or a key.
                log.error(
                    "background loop %s crashed (%s); restarting in %.1f s (restart %d)",
                    loop.name,
                    loop.last_error,
                    wait,
                    loop.restarts,
                )
                try:
                    await self._backoff(loop, wait)
                except asyncio.CancelledError:
                    loop.status = LoopStatus.STOPPED
                    raise
                continue
            loop.status = LoopStatus.STOPPED
            return

    async def _backoff(self, loop: _Loop, seconds: float) -> None:
        """Wait out the backoff, or less when the loop is told to finish meanwhile: its owner
        is waiting for it to do its last work (the ledger writer drains its queue)."""
        if loop.finishing.is_set():
            return
        sleeping = asyncio.ensure_future(self._sleep(seconds))
        finishing = asyncio.ensure_future(loop.finishing.wait())
        try:
            await asyncio.wait({sleeping, finishing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (sleeping, finishing):
                waiter.cancel()
            await asyncio.wait({sleeping, finishing})

    def states(self) -> list[LoopState]:
        """Every supervised loop's state, by name."""
        return [
            LoopState(loop.name, loop.critical, loop.status, loop.restarts, loop.last_error)
            for loop in sorted(self._loops.values(), key=lambda loop: loop.name)
        ]

    @property
    def healthy(self) -> bool:
        """False while a critical loop is restarting (readiness is degraded then)."""
        return not any(
            loop.critical and loop.status is LoopStatus.RESTARTING for loop in self._loops.values()
        )

    async def finish(self, name: str) -> None:
        """Wait for the loop ``name`` to return on its own (its owner told it to).

        From now on the loop is not restarted after a crash, and one waiting out a backoff
        runs at once: its last run is the one that counts.
        """
        loop = self._loops.get(name)
        if loop is not None and loop.task is not None:
            loop.finishing.set()
            await asyncio.wait([loop.task])

    async def stop(self) -> None:
        """Cancel every loop still running and wait until all have ended, or ``stop_grace``
        seconds: a loop that does not end by then is named in an error and left behind.

        Why not wait for ever: a loop stuck in a call that does not give way to its
        cancellation (a driver's uncancellable teardown, say) would hold the server's
        shutdown for ever. The owner goes on to close the connections the loop waits on.
        """
        tasks = {
            loop.task: loop
            for loop in self._loops.values()
            if loop.task is not None and not loop.task.done()
        }
        for task in tasks:
            task.cancel()
        if tasks:
            # asyncio.wait, not gather: gather would return at the first cancelled task.
            _, stuck = await asyncio.wait(tasks, timeout=self._stop_grace)
            if stuck:
                log.error(
                    "background loop(s) %s did not stop within %.0f s of being cancelled; "
                    "stopping without them",
                    ", ".join(sorted(tasks[task].name for task in stuck)),
                    self._stop_grace,
                )
        for loop in self._loops.values():
            loop.status = LoopStatus.STOPPED
