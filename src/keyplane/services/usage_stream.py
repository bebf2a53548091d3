"""The live usage stream: every usage report, once durable, to the subscribers that want it.

A report written by the ledger (``services/usage.py`` hands it over once it is durable, a
retry that counted nothing is not sent again) becomes a :class:`UsageEvent`. The instance that
wrote it *publishes* it on a broadcast every instance of the deployment listens to; each
instance hands what it hears to its own subscribers (:class:`StreamHub`). Which broadcast:

* Redis pub/sub when Redis is configured (:class:`RedisBroadcast`),
* PostgreSQL ``LISTEN``/``NOTIFY`` on PostgreSQL without Redis (:class:`PostgresBroadcast`),
* in process otherwise (SQLite: one process is the whole deployment; :class:`LocalBroadcast`).

Nothing is buffered without bound. Published events wait in one bounded queue, sent in
batches by a background loop (``usage_stream``); when the broadcast cannot keep up the oldest
are dropped and counted, never the report (it is durable already). Each subscriber has a
bounded queue (``KEYPLANE_USAGE_STREAM_QUEUE``): a subscriber that falls that far behind is
dropped, its queue emptied, and it receives one final :data:`DROPPED` notice instead. Delivery
is at most once: a stream is a live view, the ledger and the analytics are the record.

An event holds ids, the model, amounts, tokens, latency and status: no key, no secret, no
body. A subscriber only ever sees its own organization's events, and only the projects its
management key reaches (:class:`StreamFilter`, built by :meth:`UsageStreams.subscribe`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from keyplane.domain import ids
from keyplane.domain.tenancy import Principal
from keyplane.errors import CapacityError, NotFoundError, StorageError, ValidationError
from keyplane.limits.redis import close_pubsub
from keyplane.metrics import REDIS_ERRORS, STREAM_DROPPED, STREAM_SUBSCRIBERS
from keyplane.services.authz import require_scope
from keyplane.services.directory import KeyDirectory
from keyplane.services.invalidation import driver_name, wrapped

log = logging.getLogger(__name__)

#: Events sent in one broadcast message at most (PostgreSQL's NOTIFY takes < 8000 bytes).
BATCH_EVENTS = 100
NOTIFY_BYTES = 7000
#: Published events waiting for the broadcast, at most (the oldest go first past it).
OUTBOX_MAX = 10_000
#: Longest owner filter accepted (owners are key names' ``owner`` fields).
MAX_OWNER = 200


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """One durable usage report, as streams show it (no key, no secret)."""

    id: str
    org_id: str
    project_id: str
    key_id: str
    owner: str | None
    request_id: str | None
    model: str | None
    cost_micros: int
    input_tokens: int
    output_tokens: int
    latency_ms: int | None
    status: int | None
    recorded_at: datetime

    def encode(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "org": self.org_id,
            "project": self.project_id,
            "key": self.key_id,
            "owner": self.owner,
            "request_id": self.request_id,
            "model": self.model,
            "cost": self.cost_micros,
            "in": self.input_tokens,
            "out": self.output_tokens,
            "latency": self.latency_ms,
            "status": self.status,
            "at": self.recorded_at.isoformat(),
        }

    @classmethod
    def decode(cls, data: dict[str, Any]) -> UsageEvent:
        """Raises ValueError, KeyError or TypeError on a message that is not an event."""

        def optional_int(value: Any) -> int | None:
            return None if value is None else int(value)

        def optional_str(value: Any) -> str | None:
            return None if value is None else str(value)

        return cls(
            id=str(data["id"]),
            org_id=str(data["org"]),
            project_id=str(data["project"]),
            key_id=str(data["key"]),
            owner=optional_str(data["owner"]),
            request_id=optional_str(data["request_id"]),
            model=optional_str(data["model"]),
            cost_micros=int(data["cost"]),
            input_tokens=int(data["in"]),
            output_tokens=int(data["out"]),
            latency_ms=optional_int(data["latency"]),
            status=optional_int(data["status"]),
            recorded_at=datetime.fromisoformat(str(data["at"])),
        )


@dataclass(frozen=True, slots=True)
class StreamFilter:
    """Which events one subscriber receives. ``org_id`` always; the rest when set."""

    org_id: str
    project_id: str | None = None
    key_id: str | None = None
    owner: str | None = None
    min_cost: int = 0

    def matches(self, event: UsageEvent) -> bool:
        return (
            event.org_id == self.org_id
            and (self.project_id is None or event.project_id == self.project_id)
            and (self.key_id is None or event.key_id == self.key_id)
            and (self.owner is None or event.owner == self.owner)
            and event.cost_micros >= self.min_cost
        )


@dataclass(frozen=True, slots=True)
class Dropped:
    """The last item a subscriber that fell behind receives."""

    reason: str = "slow_consumer"
    #: Events it did not receive (what was waiting when it was dropped, and the one that
    #: did not fit).
    missed: int = 0


class Subscription:
    """One subscriber's bounded queue. Iterate it: events, then at most one :class:`Dropped`."""

    def __init__(self, hub: StreamHub, filter: StreamFilter, limit: int) -> None:
        self.filter = filter
        self._hub = hub
        self._limit = limit
        self._items: collections.deque[UsageEvent | Dropped] = collections.deque()
        self._ready = asyncio.Event()
        self.dropped = False

    def offer(self, event: UsageEvent) -> None:
        if self.dropped:
            return
        if len(self._items) >= self._limit:
            # Too slow: forget what it has not read (bounded memory), tell it, and stop.
            missed = len(self._items) + 1
            self._items.clear()
            self._items.append(Dropped(missed=missed))
            self.dropped = True
            STREAM_DROPPED.inc()
            self._hub.remove(self)
        else:
            self._items.append(event)
        self._ready.set()

    async def next(self, timeout: float | None = None) -> UsageEvent | Dropped | None:
        """The next item; ``None`` after ``timeout`` seconds without one (a heartbeat is due)."""
        while not self._items:
            self._ready.clear()
            if timeout is None:
                await self._ready.wait()
            else:
                try:
                    await asyncio.wait_for(self._ready.wait(), timeout)
                except TimeoutError:
                    return None
        return self._items.popleft()

    def close(self) -> None:
        self._hub.remove(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StreamHub:
    """This instance's subscribers; hands each event to those whose filter it matches."""

    def __init__(self, queue_limit: int, max_subscribers: int) -> None:
        self._queue_limit = queue_limit
        self._max = max_subscribers
        self._subscriptions: set[Subscription] = set()

    def subscribe(self, filter: StreamFilter) -> Subscription:
        if len(self._subscriptions) >= self._max:
            raise CapacityError(
                "this instance serves as many usage streams as it is configured for",
                code="TOO_MANY_STREAMS",
            )
        subscription = Subscription(self, filter, self._queue_limit)
        self._subscriptions.add(subscription)
        STREAM_SUBSCRIBERS.inc()
        return subscription

    def remove(self, subscription: Subscription) -> None:
        if subscription in self._subscriptions:
            self._subscriptions.discard(subscription)
            STREAM_SUBSCRIBERS.dec()

    @property
    def subscribers(self) -> int:
        return len(self._subscriptions)

    def hear(self, message: Any) -> None:
        """A broadcast message, decoded and delivered; not even decoded when no one here
        subscribes (every instance hears every report of the deployment)."""
        if self._subscriptions:
            self.deliver(_decode_batch(message))

    def deliver(self, events: list[UsageEvent]) -> None:
        if not self._subscriptions:
            return
        for event in events:
            for subscription in list(self._subscriptions):
                if subscription.filter.matches(event):
                    subscription.offer(event)


def _decode_batch(data: Any) -> list[UsageEvent]:
    try:
        return [UsageEvent.decode(item) for item in json.loads(data)]
    except (ValueError, KeyError, TypeError):
        log.warning("ignored a malformed usage stream message")
        return []


class LocalBroadcast:
    """One process is the deployment (SQLite): published events go straight to the hub."""

    #: Whether what is sent reaches other instances' hubs (whose subscribers are not known here).
    across_instances = False

    def __init__(self, hub: StreamHub) -> None:
        self._hub = hub
        self.subscribed = asyncio.Event()
        self.subscribed.set()

    async def send(self, events: list[UsageEvent]) -> None:
        self._hub.deliver(events)

    async def run(self) -> None:
        await asyncio.Event().wait()  # nothing to listen to; runs until stopped

    async def close(self) -> None:
        return None


class RedisBroadcast:
    """Redis pub/sub, on a channel of this deployment (named after its organization)."""

    across_instances = True

    def __init__(self, redis: Redis, channel: str, hub: StreamHub) -> None:
        self._redis = redis
        self._channel = channel
        self._hub = hub
        self.subscribed = asyncio.Event()

    async def send(self, events: list[UsageEvent]) -> None:
        message = json.dumps([event.encode() for event in events])
        try:
            with wrapped((RedisError,), "usage stream"):
                await self._redis.publish(self._channel, message)
        except StorageError as exc:
            REDIS_ERRORS.labels("usage_stream").inc()
            log.warning("usage events not published: %s", driver_name(exc))

    async def run(self) -> None:
        while True:
            pubsub = self._redis.pubsub()
            try:
                with wrapped((RedisError,), "usage stream"):
                    await pubsub.subscribe(self._channel)
                    self.subscribed.set()
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self._hub.hear(message["data"])
            except StorageError as exc:
                self.subscribed.clear()
                REDIS_ERRORS.labels("usage_stream").inc()
                log.warning("usage stream channel lost (%s); retrying", driver_name(exc))
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(RedisError, RuntimeError):
                    await close_pubsub(pubsub)

    async def close(self) -> None:
        return None


class PostgresBroadcast:
    """PostgreSQL ``LISTEN``/``NOTIFY`` for instances sharing a database but no Redis."""

    across_instances = True

    def __init__(self, dsn: str, channel: str, hub: StreamHub) -> None:
        self._dsn = dsn
        self._channel = channel
        self._hub = hub
        self._sender: Any = None
        self.subscribed = asyncio.Event()

    async def send(self, events: list[UsageEvent]) -> None:
        import asyncpg

        from keyplane.services.invalidation import _connect

        try:
            with wrapped((OSError, asyncpg.PostgresError), "usage stream"):
                if self._sender is None or self._sender.is_closed():
                    self._sender = await _connect(self._dsn)
                for message in _notify_payloads(events):
                    await self._sender.execute("SELECT pg_notify($1, $2)", self._channel, message)
        except StorageError as exc:
            log.warning("usage events not published: %s", driver_name(exc))

    async def run(self) -> None:
        import asyncpg

        from keyplane.services.invalidation import _connect

        while True:
            connection = None
            try:
                with wrapped((OSError, asyncpg.PostgresError), "usage stream"):
                    connection = await _connect(self._dsn)
                    lost = asyncio.Event()
                    connection.add_termination_listener(lambda _conn, lost=lost: lost.set())
                    await connection.add_listener(
                        self._channel,
                        lambda _conn, _pid, _channel, payload: self._hub.hear(payload),
                    )
                    self.subscribed.set()
                    await lost.wait()
            except StorageError as exc:
                log.warning("usage stream channel lost (%s); retrying", driver_name(exc))
            finally:
                self.subscribed.clear()
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await connection.close()
            await asyncio.sleep(1.0)

    async def close(self) -> None:
        if self._sender is not None:
            with contextlib.suppress(Exception):
                await self._sender.close()


def _notify_payloads(events: list[UsageEvent]) -> list[str]:
    """``events`` as JSON arrays that each fit one NOTIFY."""
    payloads: list[str] = []
    chunk: list[str] = []
    size = 2
    for event in events:
        text = json.dumps(event.encode())
        if chunk and size + len(text) + 1 > NOTIFY_BYTES:
            payloads.append("[" + ",".join(chunk) + "]")
            chunk, size = [], 2
        chunk.append(text)
        size += len(text) + 1
    if chunk:
        payloads.append("[" + ",".join(chunk) + "]")
    return payloads


Broadcast = LocalBroadcast | RedisBroadcast | PostgresBroadcast


class UsageStreams:
    """Publishes durable usage reports and subscribes callers to them (the use case)."""

    def __init__(
        self,
        hub: StreamHub,
        broadcast: Broadcast,
        directory: KeyDirectory,
        project_exists: Callable[[str, str], Awaitable[bool]],
    ) -> None:
        self.hub = hub
        self.broadcast = broadcast
        self._directory = directory
        self._project_exists = project_exists
        self._outbox: collections.deque[UsageEvent] = collections.deque(maxlen=OUTBOX_MAX)
        self._waiting = asyncio.Event()
        #: Events dropped because the broadcast could not keep up.
        self.overflowed = 0

    @property
    def listened_to(self) -> bool:
        """Whether a published event may reach a subscriber: always when instances share a
        broadcast (another instance's subscribers are not known here); in one process, only
        while it has one. The stream is live: a report made while no one listens is no one's
        to hear, so it is not even made into an event."""
        return self.hub.subscribers > 0 or self.broadcast.across_instances

    def publish(self, event: UsageEvent) -> None:
        """Queue ``event`` for every instance's subscribers; never waits."""
        if len(self._outbox) == OUTBOX_MAX:
            self.overflowed += 1
        self._outbox.append(event)
        self._waiting.set()

    async def run(self) -> None:
        """Send queued events in batches (a supervised loop)."""
        while True:
            await self._waiting.wait()
            self._waiting.clear()
            await self.flush()

    async def flush(self) -> None:
        while self._outbox:
            batch = [self._outbox.popleft() for _ in range(min(BATCH_EVENTS, len(self._outbox)))]
            await self.broadcast.send(batch)

    async def subscribe(
        self,
        principal: Principal,
        *,
        key_id: str | None = None,
        project_id: str | None = None,
        owner: str | None = None,
        min_cost: int = 0,
    ) -> Subscription:
        """Subscribe ``principal`` (``usage:read``) to its organization's usage events.

        ``key_id`` narrows to one key (``NotFoundError`` unless the caller reaches it);
        ``project_id`` to one project (a caller limited to one project gets only that one);
        ``owner`` to the keys of one owner; ``min_cost`` (micro-credits) to reports that cost
        at least that.
        """
        require_scope(principal, "usage:read")
        if min_cost < 0:
            raise ValidationError("min_cost must not be negative", code="INVALID_MIN_COST")
        if owner is not None and not 1 <= len(owner) <= MAX_OWNER:
            raise ValidationError(f"owner must be 1-{MAX_OWNER} characters", code="INVALID_OWNER")
        if project_id is not None and not ids.looks_like_id(project_id, "proj"):
            raise NotFoundError("no such project", code="PROJECT_NOT_FOUND")
        if project_id is not None and (
            not principal.reaches_project(project_id)
            or not await self._project_exists(principal.org_id, project_id)
        ):
            raise NotFoundError("no such project", code="PROJECT_NOT_FOUND")
        if key_id is not None:
            entry = (
                await self._directory.by_id(key_id) if ids.looks_like_id(key_id, "key") else None
            )
            if entry is None or (
                entry.record.org_id != principal.org_id
                or not principal.reaches_project(entry.record.project_id)
            ):
                raise NotFoundError("no such key", code="KEY_NOT_FOUND")
        return self.hub.subscribe(
            StreamFilter(
                org_id=principal.org_id,
                project_id=project_id if project_id is not None else principal.project_id,
                key_id=key_id,
                owner=owner,
                min_cost=min_cost,
            )
        )


def event_of(
    entry_id: str,
    record: Any,
    report: Any,
    recorded_at: datetime,
) -> UsageEvent:
    """The event for a durable report of ``record`` (a KeyRecord) with ``report``'s amounts."""
    return UsageEvent(
        id=entry_id,
        org_id=record.org_id,
        project_id=record.project_id,
        key_id=record.id,
        owner=record.owner,
        request_id=report.request_id,
        model=report.model,
        cost_micros=report.cost,
        input_tokens=report.input_tokens,
        output_tokens=report.output_tokens,
        latency_ms=report.latency_ms,
        status=report.status,
        recorded_at=recorded_at,
    )
