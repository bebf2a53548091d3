"""Cache invalidation across instances, over Redis pub/sub.

Every instance caches keys by secret hash for the verify hot path. A write on one instance
evicts its own cache at once and publishes the eviction; every instance (itself included)
applies what it receives. The write's response waits until the eviction has been published
(at most ``PUBLISH_WAIT`` seconds): when it was sent from a background task instead, a client
could ask another instance before the eviction even left, and be served the old record.

A message lost to a dropped connection is covered twice over: the subscriber clears its
caches whenever it reconnects, and cache entries expire after ``KEYPLANE_CACHE_TTL_SECONDS``
anyway.

Driver exceptions (redis', asyncpg's, socket errors) are turned into
``RegistryUnavailableError`` where they are met (:func:`wrapped`); the channel logs those and
carries on, as it always did: a lost eviction is bounded by the cache TTL.

An eviction may carry an id; an instance that applied one tells ``on_applied`` (which
acknowledges it, see ``services.instances``), so a writer can wait for every instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from keyplane.errors import RegistryUnavailableError, StorageError
from keyplane.limits.redis import close_pubsub

log = logging.getLogger(__name__)

CHANNEL = "keyplane:invalidate"
#: (cache name, record id or None for "everything", secret hashes)
Eviction = tuple[str, str | None, tuple[str, ...]]
#: The longest a write waits for its eviction to be published. Past it (the channel is down
#: or slow) the write returns anyway and the cache TTL bounds how stale other instances are.
PUBLISH_WAIT = 2.0


@contextlib.contextmanager
def wrapped(drivers: tuple[type[BaseException], ...], what: str) -> Iterator[None]:
    """Raise ``RegistryUnavailableError`` from any of ``drivers``' exceptions met inside.

    The message names ``what`` failed and the driver's exception type, never its text (which
    may quote a URL with a password).
    """
    try:
        yield
    except drivers as exc:
        raise RegistryUnavailableError(f"{what} unavailable ({type(exc).__name__})") from exc


def driver_name(exc: BaseException) -> str:
    """The type name of the driver exception behind ``exc`` (what the warnings name)."""
    return type(exc.__cause__ or exc).__name__


def _encode(eviction: Eviction, eviction_id: str | None) -> str:
    cache, record_id, hashes = eviction
    payload: dict[str, Any] = {"cache": cache, "record": record_id, "hashes": list(hashes)}
    if eviction_id is not None:
        payload["id"] = eviction_id
    return json.dumps(payload)


async def _published(pending: set[asyncio.Task[None]], send: Coroutine[Any, Any, None]) -> None:
    """Run ``send`` to completion in a task of its own (a client that hangs up must not cancel
    it), waiting for it at most PUBLISH_WAIT seconds."""
    task = asyncio.get_running_loop().create_task(send)
    pending.add(task)
    task.add_done_callback(pending.discard)
    await asyncio.wait({task}, timeout=PUBLISH_WAIT)


class RedisInvalidation:
    def __init__(self, redis: Redis, apply: Callable[[Eviction], None]) -> None:
        self._redis = redis
        self.apply = apply
        #: Told the id of every eviction applied here that carried one.
        self.on_applied: Callable[[str], None] | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self.received = 0
        self.subscribed = asyncio.Event()

    async def publish(self, eviction: Eviction, eviction_id: str | None = None) -> None:
        """Send an eviction to every instance; returns once it is sent (or PUBLISH_WAIT)."""
        await _published(self._pending, self._send(_encode(eviction, eviction_id)))

    async def _send(self, message: str) -> None:
        try:
            with wrapped((RedisError,), "cache invalidation channel"):
                await self._redis.publish(CHANNEL, message)
        except StorageError as exc:
            # The other instances catch up when their cache entries expire.
            log.warning("cache invalidation not published: %s", driver_name(exc))

    async def flush(self) -> None:
        """Wait for evictions still being published (at shutdown)."""
        if self._pending:
            await asyncio.wait(list(self._pending))

    async def run(self) -> None:
        """Apply evictions published by any instance, reconnecting for as long as it runs."""
        while True:
            pubsub = self._redis.pubsub()
            try:
                with wrapped((RedisError,), "cache invalidation channel"):
                    await pubsub.subscribe(CHANNEL)
                    # Anything published while we were not listening is unknown: start clean.
                    self.apply(("*", None, ()))
                    self.subscribed.set()
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self._receive(message["data"])
            except StorageError as exc:
                self.subscribed.clear()
                log.warning("cache invalidation channel lost (%s); retrying", driver_name(exc))
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(RedisError, RuntimeError):
                    await close_pubsub(pubsub)

    def _receive(self, data: Any) -> None:
        _receive_into(self, data)


def _receive_into(channel: RedisInvalidation | PostgresInvalidation, data: Any) -> None:
    """Decode one published eviction and apply it; ignore anything malformed."""
    try:
        payload = json.loads(data)
        eviction: Eviction = (
            str(payload["cache"]),
            None if payload["record"] is None else str(payload["record"]),
            tuple(str(h) for h in payload["hashes"]),
        )
    except (ValueError, KeyError, TypeError):
        log.warning("ignored a malformed cache invalidation message")
        return
    channel.received += 1
    channel.apply(eviction)
    eviction_id = payload.get("id")
    if isinstance(eviction_id, str) and channel.on_applied is not None:
        channel.on_applied(eviction_id)


PG_CHANNEL = "keyplane_invalidate"


async def _connect(dsn: str) -> Any:
    """An asyncpg connection that is closed, not leaked, when the caller is cancelled while
    it is being opened (a server stopping right after it started)."""
    import asyncpg

    opening = asyncio.ensure_future(asyncpg.connect(dsn))
    try:
        return await asyncio.shield(opening)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            connection = await opening
            await connection.close()
        raise


class PostgresInvalidation:
    """The same broadcast over PostgreSQL LISTEN/NOTIFY, for instances that share a database
    but no Redis. NOTIFY is sent in its own statement (not tied to the write's transaction:
    the write has committed by the time the eviction is published)."""

    def __init__(self, dsn: str, schema_note: str | None, apply: Callable[[Eviction], None]):
        self._dsn = dsn
        self.apply = apply
        self.on_applied: Callable[[str], None] | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._sender: Any = None
        self._sender_lock = asyncio.Lock()
        self.received = 0
        self.subscribed = asyncio.Event()
        # Instances in different schemas of one database are different deployments.
        self._channel = PG_CHANNEL if schema_note is None else f"{PG_CHANNEL}_{schema_note}"

    async def publish(self, eviction: Eviction, eviction_id: str | None = None) -> None:
        await _published(self._pending, self._send(_encode(eviction, eviction_id)))

    async def _send(self, message: str) -> None:
        import asyncpg

        try:
            with wrapped((OSError, asyncpg.PostgresError), "cache invalidation channel"):
                # One sending connection, opened once even when several evictions race to it.
                async with self._sender_lock:
                    if self._sender is None or self._sender.is_closed():
                        self._sender = await _connect(self._dsn)
                    await self._sender.execute("SELECT pg_notify($1, $2)", self._channel, message)
        except StorageError as exc:
            log.warning("cache invalidation not published: %s", driver_name(exc))

    async def flush(self) -> None:
        if self._pending:
            await asyncio.wait(list(self._pending))
        if self._sender is not None:
            await self._sender.close()

    async def run(self) -> None:
        import asyncpg

        while True:
            connection = None
            try:
                with wrapped((OSError, asyncpg.PostgresError), "cache invalidation channel"):
                    connection = await _connect(self._dsn)
                    lost = asyncio.Event()
                    connection.add_termination_listener(lambda _conn, lost=lost: lost.set())
                    await connection.add_listener(
                        self._channel,
                        lambda _conn, _pid, _channel, payload: self._receive(payload),
                    )
                    self.apply(("*", None, ()))  # missed messages are unknown: start clean
                    self.subscribed.set()
                    await lost.wait()
            except StorageError as exc:
                log.warning("cache invalidation channel lost (%s); retrying", driver_name(exc))
            finally:
                self.subscribed.clear()
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await connection.close()
            await asyncio.sleep(1.0)

    def _receive(self, data: Any) -> None:
        _receive_into(self, data)
