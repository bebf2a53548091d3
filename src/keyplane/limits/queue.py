"""Queued concurrency: verifies that may wait (``wait_ms``) for a slot, first come first served.

A key whose policy sets ``concurrency.max_queued`` keeps a queue of tickets beside its
concurrency slots. :func:`admit_queued` is the whole protocol:

- a verify that finds others queued does not take a slot before them (no barging): it queues
  too, or, asked not to wait, is refused at once;
- otherwise it asks the limiter as usual; refused for concurrency only, it takes a ticket,
  unless ``max_queued`` tickets are already out (then ``CONCURRENCY_EXCEEDED`` at once);
- only the oldest ticket (the queue's head) asks the limiter again, each time a slot is
  released (the usage report's settlement, :meth:`SlotQueue.released`) or its ticket-holder
  ahead leaves, and at the latest every :data:`RECHECK_SECONDS` (a slot freed by a hold that
  timed out tells nobody); admitted, or out of time, it leaves the queue, which wakes the next.

The limiter's own atomic admission still decides every slot, so there are never more than
``max_parallel`` holders; the queue's entry is atomic too (one Lua script on Redis), so never
more than ``max_queued`` waiters. Waiting is on an :class:`asyncio.Event` per key, set by the
local release or, in scale-out, by a Redis pub/sub message from any instance: nothing polls.

:class:`MemorySlotQueue` serves one process; :class:`RedisSlotQueue` every instance sharing a
Redis: its queue is a sorted set per key (``<prefix>:{<key id>}:queue``, ticket by arrival
number), and a ticket whose instance died is dropped once it reaches the head and its time is
up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from keyplane.domain.admission import Admission, AdmissionResult
from keyplane.domain.decisions import Code
from keyplane.limits.base import Limiter
from keyplane.limits.redis import close_pubsub

log = logging.getLogger(__name__)

#: A waiter asks again at least this often, whatever it hears.
RECHECK_SECONDS = 0.5
#: What a refusal for a full queue or a wait that ran out suggests (seconds): a slot's release
#: cannot be foreseen.
RETRY_AFTER_SECONDS = 1.0
#: A Redis ticket outlives its waiter's deadline by this much before another may drop it.
_TICKET_MARGIN_US = 5_000_000


class SlotQueue(Protocol):
    def watch(self, key_id: str) -> asyncio.Event:
        """The event the next wake-up of ``key_id``'s waiters sets (take it before looking)."""
        ...

    async def waiting(self, key_id: str) -> bool:
        """Whether anyone is queued for one of the key's slots."""
        ...

    async def enter(self, key_id: str, ticket: str, max_queued: int, wait_seconds: float) -> bool:
        """Queue ``ticket`` last, unless ``max_queued`` tickets are already out."""
        ...

    async def is_head(self, key_id: str, ticket: str) -> bool:
        """Whether ``ticket`` is the oldest one queued."""
        ...

    async def leave(self, key_id: str, ticket: str) -> None:
        """Take ``ticket`` out of the queue and wake the others (the next may be head now)."""
        ...

    async def released(self, key_id: str) -> None:
        """A slot of the key was released: wake its waiters, on every instance."""
        ...


class _Wakers:
    """One event per key with waiters; a wake-up sets it and the next watcher gets a new one."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def watch(self, key_id: str) -> asyncio.Event:
        event = self._events.get(key_id)
        if event is None:
            event = self._events[key_id] = asyncio.Event()
        return event

    def wake(self, key_id: str) -> None:
        event = self._events.pop(key_id, None)
        if event is not None:
            event.set()


class MemorySlotQueue:
    """The queue of one process (with :class:`~keyplane.limits.memory.MemoryLimiter`)."""

    def __init__(self) -> None:
        #: Per key, its tickets in arrival order (dicts keep insertion order).
        self._queues: dict[str, dict[str, None]] = {}
        self._wakers = _Wakers()

    def watch(self, key_id: str) -> asyncio.Event:
        return self._wakers.watch(key_id)

    async def waiting(self, key_id: str) -> bool:
        return bool(self._queues.get(key_id))

    async def enter(self, key_id: str, ticket: str, max_queued: int, wait_seconds: float) -> bool:
        queue = self._queues.setdefault(key_id, {})
        if len(queue) >= max_queued:
            if not queue:
                del self._queues[key_id]
            return False
        queue[ticket] = None
        return True

    async def is_head(self, key_id: str, ticket: str) -> bool:
        queue = self._queues.get(key_id)
        return bool(queue) and next(iter(queue)) == ticket  # type: ignore[arg-type]

    async def leave(self, key_id: str, ticket: str) -> None:
        queue = self._queues.get(key_id)
        if queue is not None:
            queue.pop(ticket, None)
            if not queue:
                del self._queues[key_id]
        self._wakers.wake(key_id)

    async def released(self, key_id: str) -> None:
        self._wakers.wake(key_id)


# KEYS: the queue (zset: ticket by arrival number), its arrival counter.
# ARGV: ticket, max queued, now (us), the ticket's deadline (us), keys' lifetime (ms).
# Tickets are "<deadline us>|<random>": an expired head (its waiter died) is dropped first.
_PRUNE = """
local function prune(queue, now)
  while true do
    local head = redis.call('ZRANGE', queue, 0, 0)[1]
    if not head then return nil end
    local deadline = tonumber(string.match(head, '^(%d+)|'))
    if deadline and deadline >= now then return head end
    redis.call('ZREM', queue, head)
  end
end
"""
_ENTER = (
    _PRUNE
    + """
prune(KEYS[1], tonumber(ARGV[3]))
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
local arrival = redis.call('INCR', KEYS[2])
redis.call('ZADD', KEYS[1], arrival, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return 1
"""
)
# KEYS: the queue. ARGV: ticket, now (us). 1 when the ticket is the (live) head.
_IS_HEAD = (
    _PRUNE
    + """
local head = prune(KEYS[1], tonumber(ARGV[2]))
if head == ARGV[1] then return 1 end
return 0
"""
)


class RedisSlotQueue:
    """The queue shared by every instance on one Redis; wake-ups by pub/sub.

    Redis errors never fail a verify here: a queue that cannot be reached refuses to queue
    (``CONCURRENCY_EXCEEDED`` at once), which is what a full queue answers.
    """

    def __init__(self, redis: Redis, prefix: str = "kp") -> None:
        self._redis = redis
        self._prefix = prefix
        self._channel = f"{prefix}:queue-wake"
        self._wakers = _Wakers()
        self._enter = redis.register_script(_ENTER)
        self._is_head = redis.register_script(_IS_HEAD)
        self._listener: asyncio.Task[None] | None = None
        #: The stored member of each ticket this instance holds (it carries the deadline).
        self._held: dict[tuple[str, str], str] = {}

    def _queue(self, key_id: str) -> str:
        return f"{self._prefix}:{{{key_id}}}:queue"

    def watch(self, key_id: str) -> asyncio.Event:
        if self._listener is None or self._listener.done():
            self._listener = asyncio.get_running_loop().create_task(self._listen())
        return self._wakers.watch(key_id)

    async def _listen(self) -> None:
        """Wake this instance's waiters of each key named on the channel, by any instance."""
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self._channel)
            async for message in pubsub.listen():
                data = message.get("data")
                if isinstance(data, bytes):
                    data = data.decode()
                if isinstance(data, str):
                    self._wakers.wake(data)
        except RedisError as exc:
            # The waiters still ask again every RECHECK_SECONDS; the next watch resubscribes.
            log.warning("queue wake-ups unavailable: %s", type(exc).__name__)
        finally:
            with contextlib.suppress(RedisError):
                await close_pubsub(pubsub)

    async def aclose(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, RedisError):
                await self._listener
            self._listener = None

    async def waiting(self, key_id: str) -> bool:
        try:
            return bool(await self._redis.exists(self._queue(key_id)))
        except RedisError:
            return False  # the limiter decides alone, as without a queue

    async def enter(self, key_id: str, ticket: str, max_queued: int, wait_seconds: float) -> bool:
        now = _now_us()
        deadline = now + int(wait_seconds * 1_000_000) + _TICKET_MARGIN_US
        lifetime_ms = (deadline - now) // 1000 + 1000
        try:
            entered = await self._enter(
                keys=[self._queue(key_id), self._queue(key_id) + ":seq"],
                args=[f"{deadline}|{ticket}", max_queued, now, deadline, lifetime_ms],
            )
        except RedisError as exc:
            log.warning("queue unavailable: %s", type(exc).__name__)
            return False
        if entered:
            self._held[(key_id, ticket)] = f"{deadline}|{ticket}"
        return bool(entered)

    async def is_head(self, key_id: str, ticket: str) -> bool:
        member = self._held.get((key_id, ticket))
        if member is None:
            return False
        try:
            return bool(await self._is_head(keys=[self._queue(key_id)], args=[member, _now_us()]))
        except RedisError:
            return False

    async def leave(self, key_id: str, ticket: str) -> None:
        member = self._held.pop((key_id, ticket), None)
        try:
            if member is not None:
                await self._redis.zrem(self._queue(key_id), member)
            await self._redis.publish(self._channel, key_id)
        except RedisError as exc:
            log.warning("queue ticket not removed: %s", type(exc).__name__)
        self._wakers.wake(key_id)

    async def released(self, key_id: str) -> None:
        self._wakers.wake(key_id)
        try:
            await self._redis.publish(self._channel, key_id)
        except RedisError as exc:
            log.warning("queue wake-up not sent: %s", type(exc).__name__)


def _now_us() -> int:
    # Wall time, only to drop the tickets of waiters that died: a few ms of skew is harmless.
    return time.time_ns() // 1000


async def admit_queued(
    limiter: Limiter,
    queue: SlotQueue,
    admission: Admission,
    now: Callable[[], datetime],
    max_queued: int,
    wait_seconds: float,
) -> AdmissionResult:
    """Admit ``admission`` (which asks for a slot), waiting up to ``wait_seconds`` in line.

    ``now`` is the clock the limiter decides by (read again at each attempt).
    """
    key_id = admission.key_id
    wake = queue.watch(key_id)
    result: AdmissionResult | None = None
    if not await queue.waiting(key_id):
        result = await limiter.admit(admission, now())
        if result.refusal is not Code.CONCURRENCY_EXCEEDED:
            return result
    if wait_seconds <= 0:
        return _refused(result)
    # The request id names the ticket (for whoever looks at the queue); the suffix makes a
    # retried verify with the same id a separate waiter.
    ticket = f"{admission.request_id}#{secrets.token_hex(4)}"
    if not await queue.enter(key_id, ticket, max_queued, wait_seconds):
        return _refused(result)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    try:
        while True:
            if await queue.is_head(key_id, ticket):
                result = await limiter.admit(admission, now())
                if result.refusal is not Code.CONCURRENCY_EXCEEDED:
                    return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                return _refused(result)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), min(remaining, RECHECK_SECONDS))
            wake = queue.watch(key_id)
    finally:
        # Admitted, refused or cancelled: the ticket is spent, and the next one may be head.
        await queue.leave(key_id, ticket)


def _refused(result: AdmissionResult | None) -> AdmissionResult:
    limits = () if result is None else result.limits
    return AdmissionResult(Code.CONCURRENCY_EXCEEDED, limits, RETRY_AFTER_SECONDS)
