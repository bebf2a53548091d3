"""The composition root: builds the store, caches and services from settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from redis.asyncio import BlockingConnectionPool, Redis

from keyplane.domain.analytics import Retention
from keyplane.domain.audit import chain_key
from keyplane.domain.clock import Clock, SystemClock
from keyplane.domain.envelope import Keyring
from keyplane.domain.sealing import request_signing_sealing_key
from keyplane.domain.tenancy import ManagementKeyRecord, Organization, Project
from keyplane.errors import ConfigurationError, KeyplaneError, StorageError
from keyplane.limits.base import Limiter
from keyplane.limits.keeper import WindowKeeper
from keyplane.limits.memory import MemoryLimiter
from keyplane.limits.nonces import MemoryNonces, RedisNonces
from keyplane.limits.queue import MemorySlotQueue, RedisSlotQueue
from keyplane.limits.redis import RedisLimiter
from keyplane.limits.resilient import ResilientLimiter
from keyplane.services.analytics import Analytics, RollupFolder, RollupPruner, VerdictRecorder
from keyplane.services.audit import AuditService, retention_of
from keyplane.services.audit_read import AuditReader
from keyplane.services.cache import TtlCache
from keyplane.services.carry import CarryBook
from keyplane.services.directory import KeyDirectory
from keyplane.services.email import EmailSender
from keyplane.services.events import Events
from keyplane.services.geoip import GeoIp
from keyplane.services.instances import (
    REGISTRY_ERRORS,
    Confirmation,
    InstanceRegistry,
    RedisInstanceRegistry,
    await_confirmations,
    confirmed_after_this_write,
)
from keyplane.services.invalidation import Eviction, PostgresInvalidation, RedisInvalidation
from keyplane.services.jobs import JobRunner
from keyplane.services.key_limits import KeyLimits
from keyplane.services.keys import KeyService
from keyplane.services.last_used import LastUsedRecorder
from keyplane.services.leaks import LeakResponse
from keyplane.services.ledger import LedgerSeeder, UsageLedger
from keyplane.services.management import ManagementKeys
from keyplane.services.notifications import ExpiryNotices, RefusalTally
from keyplane.services.outbound import OutboundGuard
from keyplane.services.plans import Plans
from keyplane.services.projects import Projects
from keyplane.services.rotation import Rotations
from keyplane.services.sampling import RuntimeSampler
from keyplane.services.security_events import SecurityEvents
from keyplane.services.security_reports import SecurityReports
from keyplane.services.signing_secrets import SigningSecrets
from keyplane.services.supervisor import Supervisor, uninterrupted
from keyplane.services.usage import UsageService
from keyplane.services.usage_stream import (
    Broadcast,
    LocalBroadcast,
    PostgresBroadcast,
    RedisBroadcast,
    StreamHub,
    UsageStreams,
)
from keyplane.services.vault import VaultService, configured_strategy
from keyplane.services.verify import Verifier
from keyplane.services.webhooks import WebhookDispatcher, WebhookService
from keyplane.settings import Settings, resolve_server_secret
from keyplane.store.database import Database
from keyplane.store.migrate import migrate
from keyplane.webhooks import signature_headers

log = logging.getLogger(__name__)


#: How long a crashed background loop waits before its first restart, and at most.
RESTART_BASE_DELAY = 0.5
RESTART_MAX_DELAY = 30.0


@dataclass(frozen=True, slots=True)
class Services:
    """The use cases, one object each: what routes, the CLI and integrations depend on.

    Each checks its caller's scope and tenancy itself (``services.authz``): holding one of
    these is not a permission.
    """

    keys: KeyService
    key_limits: KeyLimits
    verifier: Verifier
    management: ManagementKeys
    projects: Projects
    plans: Plans
    usage: UsageService
    events: Events
    vault: VaultService
    analytics: Analytics
    streams: UsageStreams
    signing_secrets: SigningSecrets
    webhooks: WebhookService
    audit_read: AuditReader
    audit: AuditService
    rotations: Rotations
    jobs: JobRunner
    security_reports: SecurityReports
    leaks: LeakResponse


@dataclass
class Runtime:
    """The running object graph: the services, and what their lifecycle needs to stop cleanly.

    :meth:`start` is the composition root, the only place services are built from settings
    (``keyplane.vault`` builds its vault through :func:`open_vault_service`).
    """

    settings: Settings
    store: Database
    clock: Clock
    default_project: Project
    services: Services
    directory: KeyDirectory
    management_cache: TtlCache[ManagementKeyRecord]
    last_used: LastUsedRecorder
    management_last_used: LastUsedRecorder
    limiter: Limiter
    ledger: UsageLedger
    supervisor: Supervisor
    #: Failed authentications, denials and verify refusals, counted and flushed to the audit log.
    security: SecurityEvents
    #: Verify outcome counts, flushed to the analytics rollups (None: rollups off).
    verdict_recorder: VerdictRecorder | None = None
    #: Folds the usage the ledger keeps pending into the rollups (None: rollups off).
    rollup_folder: RollupFolder | None = None
    rollup_pruner: RollupPruner | None = None
    redis: Redis | None = None
    #: The limiter when it is Redis with a local fallback (its degradation is monitored).
    resilient_limiter: ResilientLimiter | None = None
    #: Verifies waiting for a concurrency slot (``concurrency.max_queued``).
    slot_queue: MemorySlotQueue | RedisSlotQueue | None = None
    invalidation: RedisInvalidation | PostgresInvalidation | None = None
    #: Writes long windows' state for KEYPLANE_LIMITS_AFTER_REDIS_LOSS=reseed.
    window_keeper: WindowKeeper | None = None
    instance_id: str = ""
    #: Heartbeats and acknowledgements of the deployment's instances (None: one process).
    instances: InstanceRegistry | None = None
    #: Delivers the webhook outbox (None when KEYPLANE_WEBHOOK_WORKERS is 0).
    webhook_dispatcher: WebhookDispatcher | None = None
    #: Refused requests per key and minute, flushed as rate_limit.exceeded.
    refusals: RefusalTally | None = None
    #: key.expiring, N days ahead.
    expiry_notices: ExpiryNotices | None = None
    #: The SSRF-guarded HTTP client webhooks go out through (its pool is closed at stop).
    outbound: OutboundGuard | None = None
    #: Set when this start generated the first management key; shown once, never stored.
    generated_root_key: str | None = None
    #: Samples the counts kept by the objects above into the Prometheus metrics.
    sampler: RuntimeSampler | None = None
    _acks: set[asyncio.Task[None]] = field(default_factory=set)

    @classmethod
    async def start(
        cls, settings: Settings, clock: Clock | None = None, supervisor: Supervisor | None = None
    ) -> Runtime:
        """Open the store, build every service, and start the background loops.

        ``supervisor`` runs the loops (tests pass one whose backoff does not really wait).
        """
        clock = clock or SystemClock()
        server_secret = resolve_server_secret(settings)
        # Read (and checked) before anything opens: a bad vault key stops the start.
        vault_keyring = settings.vault_keyring()
        if vault_keyring is None:
            # An expected state, said once here; its requests answer 503 VAULT_NOT_CONFIGURED
            # without a log line each (api/problems.py).
            log.warning(
                "the vault has no master key (KEYPLANE_VAULT_KEY or KEYPLANE_VAULT_KEY_FILE): "
                "its endpoints answer 503 VAULT_NOT_CONFIGURED"
            )
        # Loaded whole before anything opens: a missing or broken file stops the start.
        geoip = None if settings.geoip_database is None else GeoIp(settings.geoip_database)
        store = Database.from_settings(settings)
        enable_audit(store, server_secret)
        try:
            if settings.migrate_on_start:
                await migrate(store.engine, settings.database_schema)
            org, project = await store.tenancy.ensure_default_tenancy(clock.now())
        except BaseException:
            await store.close()
            raise
        directory = KeyDirectory(
            store.key_reads, settings, request_signing_sealing_key(server_secret)
        )
        store.analytics.max_values = settings.rollup_max_values_per_key
        if not settings.rollups_enabled:
            store.usage.analytics = None
        retention = Retention(
            minute=timedelta(hours=settings.rollup_minute_retention_hours),
            hour=timedelta(days=settings.rollup_hour_retention_days),
        )
        verdict_recorder = (
            VerdictRecorder(store.analytics, settings.rollup_flush_seconds)
            if settings.rollups_enabled
            else None
        )
        redis = None
        if settings.redis_url is not None:
            # Blocking pool: under a burst, requests queue for a connection instead of failing.
            pool = BlockingConnectionPool.from_url(
                settings.redis_url, max_connections=settings.redis_max_connections, timeout=5
            )
            redis = Redis(connection_pool=pool)
        # The limiters seed budget counters from the ledger (see services.ledger), each into
        # itself: a counter Redis asked for must land in Redis.
        seeder = LedgerSeeder(store.usage)
        limiter: Limiter
        keeper = None
        if redis is not None and settings.limits_after_redis_loss == "reseed":
            keeper = WindowKeeper(
                store.usage.keep_limit_windows, settings.limit_windows_flush_seconds
            )
        resilient: ResilientLimiter | None = None  # what /metrics reports degradation of
        slot_queue: MemorySlotQueue | RedisSlotQueue
        if redis is None:
            limiter = MemoryLimiter(seeder, clock=clock)
            slot_queue = MemorySlotQueue()
        else:
            shared = RedisLimiter(
                redis,
                seeder,
                guard=store.usage.guard_limit_state,
                after_loss=settings.limits_after_redis_loss,
                keeper=keeper,
            )
            slot_queue = RedisSlotQueue(redis)  # the limiter's default prefix, "kp"
            local = MemoryLimiter(seeder, clock=clock)
            limiter = resilient = ResilientLimiter(
                shared,
                local,
                mode=settings.limits_on_redis_failure,
                instances=settings.expected_instances,
            )
        ledger = UsageLedger(store.usage, limiter, settings.usage_batch_max)
        # The webhook outbox: every journalled change's events, in the change's transaction.
        store.unit.journal_writers.append(store.webhooks.write_outbox)
        poster = OutboundGuard.from_settings(settings)
        management_cache: TtlCache[ManagementKeyRecord] = TtlCache(
            store.management_keys.find_by_secret,
            lambda record: record.id,
            ttl=settings.cache_ttl_seconds,
            negative_ttl=settings.negative_cache_ttl_seconds,
            max_entries=10_000,
        )
        last_used = LastUsedRecorder(store.keys.touch, settings.last_used_flush_seconds)
        management_last_used = LastUsedRecorder(
            store.management_keys.touch, settings.last_used_flush_seconds
        )
        root_key = None if settings.root_key is None else settings.root_key.get_secret_value()
        security = SecurityEvents(store.audit.record, clock, interval=settings.audit_flush_seconds)
        management = ManagementKeys(
            store,
            management_cache,
            clock,
            server_secret,
            org,
            root_key,
            management_last_used,
            security,
        )
        keys = KeyService(
            store,
            directory,
            clock,
            server_secret,
            timedelta(seconds=settings.idempotency_secret_window_seconds),
        )
        hub = StreamHub(settings.usage_stream_queue, settings.usage_stream_max_subscribers)
        broadcast: Broadcast
        if redis is not None:
            # Named after the organization, which only instances of this deployment share.
            broadcast = RedisBroadcast(redis, f"keyplane:usage:{org.id}", hub)
        elif settings.async_database_url.startswith("postgresql"):
            broadcast = PostgresBroadcast(
                settings.async_database_url.replace("postgresql+asyncpg://", "postgresql://", 1),
                f"keyplane_usage_{org.id}".lower(),
                hub,
            )
        else:
            broadcast = LocalBroadcast(hub)
        tenancy = store.tenancy

        async def project_exists(org_id: str, project_id: str) -> bool:
            return await tenancy.get_project(org_id, project_id) is not None

        streams = UsageStreams(hub, broadcast, directory, project_exists)
        instance_id = settings.instance_id or _default_instance_id()
        jobs = JobRunner(
            store.jobs,
            clock,
            instance_id,
            lease=timedelta(seconds=settings.job_lease_seconds),
            poll=settings.jobs_poll_seconds,
        )
        rotations = Rotations(
            store,
            directory,
            clock,
            server_secret,
            notice_ahead=timedelta(hours=settings.rotation_notice_hours),
        )
        register_rotation_jobs(jobs, rotations)
        services = Services(
            keys=keys,
            key_limits=KeyLimits(store, directory, limiter, clock),
            verifier=Verifier(
                directory,
                clock,
                server_secret,
                last_used,
                limiter,
                timedelta(seconds=settings.reservation_timeout_seconds),
                verdict_recorder,
                security,
                CarryBook(store.usage),
                nonces=(
                    MemoryNonces(clock, settings.nonce_max_entries)
                    if redis is None
                    else RedisNonces(redis)
                ),
                geoip=geoip,
                queue=slot_queue,
            ),
            management=management,
            projects=Projects(store.tenancy, clock, create_missing=settings.compat_create_projects),
            plans=Plans(store.plans, directory, clock),
            usage=UsageService(
                directory, ledger, limiter, clock, server_secret, streams, slot_queue
            ),
            events=Events(store.events),
            vault=_vault_service(store, vault_keyring, clock, settings),
            analytics=Analytics(store.analytics, directory, clock, retention),
            streams=streams,
            webhooks=WebhookService(
                store.webhooks,
                store.tenancy,
                poster,
                clock,
                server_secret,
                timedelta(hours=settings.webhook_secret_overlap_hours),
            ),
            audit_read=AuditReader(store.audit_query, store.keys, clock),
            audit=AuditService(
                store.audit,
                chain_key(server_secret),
                clock,
                retention_of(settings.audit_retention_days),
            ),
            signing_secrets=SigningSecrets(store.signing_secrets, clock, server_secret),
            rotations=rotations,
            jobs=jobs,
            security_reports=SecurityReports(
                store.security_report, store.plans, store.audit, clock
            ),
            leaks=LeakResponse(
                store.keys,
                store.leak_responses,
                store.tenancy,
                store.audit,
                directory,
                clock,
                server_secret,
                settings.secret_scanning_public_keys(),
                rotator=rotations,
                rotate_grace=timedelta(minutes=settings.leak_rotate_grace_minutes),
            ),
        )
        if settings.security_report_schedule is not None:
            register_security_report(
                jobs, services.security_reports, settings.security_report_schedule
            )
        runtime = cls(
            settings=settings,
            store=store,
            clock=clock,
            default_project=project,
            services=services,
            directory=directory,
            management_cache=management_cache,
            last_used=last_used,
            management_last_used=management_last_used,
            limiter=limiter,
            slot_queue=slot_queue,
            ledger=ledger,
            supervisor=supervisor
            or Supervisor(base_delay=RESTART_BASE_DELAY, max_delay=RESTART_MAX_DELAY),
            verdict_recorder=verdict_recorder,
            rollup_folder=RollupFolder(store.analytics, settings.rollup_fold_seconds)
            if settings.rollups_enabled
            else None,
            rollup_pruner=RollupPruner(
                store.analytics,
                clock,
                retention,
                None
                if settings.usage_event_retention_days is None
                else timedelta(days=settings.usage_event_retention_days),
                settings.rollup_prune_seconds,
            ),
            security=security,
        )
        invalidation: RedisInvalidation | PostgresInvalidation | None = None
        if redis is not None:
            invalidation = RedisInvalidation(redis, runtime._apply_eviction)
        elif settings.async_database_url.startswith("postgresql"):
            # No Redis: instances sharing the database still hear each other's writes.
            invalidation = PostgresInvalidation(
                settings.async_database_url.replace("postgresql+asyncpg://", "postgresql://", 1),
                settings.database_schema,
                runtime._apply_eviction,
            )
        runtime.instance_id = instance_id
        if invalidation is not None:

            async def publish_keys(record_id: str | None, hashes: tuple[str, ...]) -> None:
                await runtime.broadcast_eviction(("keys", record_id, hashes))

            async def publish_management(record_id: str | None, hashes: tuple[str, ...]) -> None:
                await runtime.broadcast_eviction(("management", record_id, hashes))

            directory.on_change = publish_keys
            management_cache.on_change = publish_management
            invalidation.on_applied = runtime._acknowledge
            runtime.invalidation = invalidation
        if redis is not None:
            # Namespaced by the organization id, which only instances of this deployment
            # (sharing its database) share.
            runtime.instances = RedisInstanceRegistry(
                redis, org.id, settings.instance_liveness_seconds
            )
        elif invalidation is not None:
            # PostgreSQL without Redis: the registry lives in the shared database.
            runtime.instances = store.instances
        runtime.redis = redis
        runtime.resilient_limiter = resilient
        runtime.window_keeper = keeper
        if root_key is None and await store.management_keys.count() == 0:
            issued = await management.issue(org.id, "root", ("*",), None, created_by=None)
            runtime.generated_root_key = issued.secret
        runtime.sampler = RuntimeSampler(
            directory.hashes,
            runtime.supervisor,
            resilient,
            runtime.invalidation,
            services.verifier.verdicts,
        )
        runtime.outbound = poster
        runtime.refusals = RefusalTally(store.webhooks, clock)
        services.verifier.on_refused = runtime.refusals.refused
        runtime.expiry_notices = ExpiryNotices(store.webhooks, clock, settings.key_expiring_days)
        if settings.webhook_workers > 0:
            runtime.webhook_dispatcher = WebhookDispatcher(
                store.webhooks,
                poster,
                signature_headers,
                clock,
                server_secret,
                timeout=settings.webhook_timeout_seconds,
                lease=timedelta(seconds=settings.webhook_claim_lease_seconds),
                poll=settings.webhook_poll_seconds,
                batch=settings.webhook_batch,
                disable_after=timedelta(hours=settings.webhook_disable_after_hours),
                mailer=EmailSender.from_settings(settings),
            )
        runtime._start_loops(keeper)
        if runtime.instances is not None:
            await runtime._beat()  # live before serving: a confirmed revoke waits for it
            runtime.supervisor.start("heartbeats", runtime._heartbeats, critical=False)
        try:
            await asyncio.wait_for(streams.broadcast.subscribed.wait(), timeout=5)
        except TimeoutError:
            log.warning("usage stream channel not ready; serving anyway")
        if runtime.invalidation is not None:
            runtime.supervisor.start("invalidation", runtime.invalidation.run, critical=True)
            # Serve once evictions from other instances are being heard, or go on without
            # them (bounded by the cache TTL) if Redis does not answer in time.
            try:
                await asyncio.wait_for(runtime.invalidation.subscribed.wait(), timeout=5)
            except TimeoutError:
                log.warning("cache invalidation channel not ready; serving anyway")
        return runtime

    def _start_loops(self, keeper: WindowKeeper | None) -> None:
        """The background loops, under the supervisor.

        Critical (readiness degrades while one is restarting), because the server answers
        wrongly without them: the ledger writer (usage reports are acknowledged only once
        written: without it they hang), reservation expiry (held budget and concurrency
        slots are never freed: verifies are refused that should pass) and the invalidation
        listener (another instance's revoke is not heard: a revoked key stays valid here
        until the cache TTL). Not critical, because they only delay work a later run or
        the stop does anyway: last-used flushes, replay-secret erasure (a secret past its
        window is refused on replay already), heartbeats (other instances stop waiting
        for this one's confirmations), the window keeper (its state is rewritten on
        its next run), verify outcome flushes (counts wait in memory), rollup folding
        (pending usage waits in the database, and reads fold it) and rollup pruning (old
        rows wait for the next pass).
        """
        supervise = self.supervisor.start
        supervise("ledger", self.ledger.run, critical=True)
        supervise("last_used", self.last_used.run, critical=False)
        supervise("management_last_used", self.management_last_used.run, critical=False)
        supervise("reservation_expiry", self._expire_reservations, critical=True)
        supervise("replay_secret_erasure", self._erase_replay_secrets, critical=False)
        if keeper is not None:
            supervise("window_keeper", keeper.run, critical=False)
        if self.verdict_recorder is not None:
            supervise("verify_outcomes", self.verdict_recorder.run, critical=False)
        if self.rollup_folder is not None:
            supervise("rollup_folding", self.rollup_folder.run, critical=False)
        if self.rollup_pruner is not None:
            supervise("rollup_pruning", self.rollup_pruner.run, critical=False)
        if self.sampler is not None:
            supervise("metrics_sampler", self.sampler.run, critical=False)
        # Not critical: a live view; reports are durable without it.
        supervise("usage_stream", self.services.streams.run, critical=False)
        supervise("usage_stream_listener", self.services.streams.broadcast.run, critical=False)
        if self.refusals is not None:
            supervise("rate_limit_notices", self.refusals.run, critical=False)
        if self.expiry_notices is not None:
            supervise("key_expiry_notices", self.expiry_notices.run, critical=False)
        dispatcher = self.webhook_dispatcher
        if dispatcher is not None:
            # SQLite has one writer: one worker. PostgreSQL's workers skip each other's rows.
            workers = 1 if self.store.unit.is_sqlite else self.settings.webhook_workers
            for number in range(workers):
                supervise(f"webhooks_{number}", dispatcher.run, critical=False)
        # Not critical: a late flush or pass loses nothing (counts wait in memory, due
        # events and pruning are picked up by the next pass).
        supervise("audit_security_events", self.security.run, critical=False)
        supervise("audit_due_events", self.services.audit.run_due, critical=False)
        supervise("audit_retention", self.services.audit.run_retention, critical=False)
        # Not critical: a job not run now is due still, and runs on the next tick.
        supervise("jobs", self.services.jobs.run, critical=False)

    async def ping(self) -> None:
        """Raise StorageError unless the database answers (readiness)."""
        await self.store.ping()

    def _apply_eviction(self, eviction: Eviction) -> None:
        """An eviction published by some instance (this one included): apply it here only."""
        cache, record_id, hashes = eviction
        if cache in ("keys", "*"):
            self.directory.evict(record_id, hashes)
        if cache in ("management", "*"):
            self.management_cache.evict(record_id, hashes)

    async def confirm_eviction(
        self, cache: str, record_id: str, hashes: tuple[str, ...], timeout: float
    ) -> Confirmation:
        """Evict a record that was just written on every live instance, and say which ones
        confirmed having dropped it within ``timeout`` seconds (``?wait=confirmed``).

        The write has committed: an instance that applied this eviction reloads the record
        from the database on its next use, and so sees the write.
        """
        if self.invalidation is None:
            # One process: nothing else caches, and this one evicted when it wrote.
            return Confirmation((self.instance_id,), ())
        return await self._publish_confirmed((cache, record_id, hashes), timeout)

    async def broadcast_eviction(self, eviction: Eviction) -> None:
        """Send a write's eviction to every instance, and wait (at most
        ``KEYPLANE_EVICTION_WAIT_SECONDS``) until each other live instance applied it.

        Published alone, the eviction has reached the other instances' sockets but maybe not
        their event loops: a client's next request could be served from the old entry first.
        An instance that does not acknowledge in time (paused, cut off) is named in a warning;
        it holds the entry at most until it reconnects or ``KEYPLANE_CACHE_TTL_SECONDS``.
        """
        if self.invalidation is None:
            return
        wait = self.settings.eviction_wait_seconds
        if wait <= 0 or confirmed_after_this_write():
            await self.invalidation.publish(eviction)
            return
        confirmation = await self._publish_confirmed(eviction, wait, include_self=False)
        if not confirmation.complete:
            log.warning(
                "eviction not confirmed within %ss by: %s",
                wait,
                ", ".join(confirmation.unconfirmed) or confirmation.error,
            )

    async def _publish_confirmed(
        self, eviction: Eviction, timeout: float, *, include_self: bool = True
    ) -> Confirmation:
        """Publish ``eviction`` with a fresh id and wait for the live instances' acks."""
        channel, registry = self.invalidation, self.instances
        if channel is None or registry is None:  # pragma: no cover - set together at start
            raise AssertionError("an invalidation channel without an instance registry")

        async def publish(eviction_id: str) -> None:
            await channel.publish(eviction, eviction_id)

        return await await_confirmations(
            registry, self.instance_id, publish, timeout, include_self=include_self
        )

    def _acknowledge(self, eviction_id: str) -> None:
        """Tell the registry this instance applied ``eviction_id`` (called on receipt)."""
        if self.instances is None:
            return
        task = asyncio.get_running_loop().create_task(self._send_ack(self.instances, eviction_id))
        self._acks.add(task)
        task.add_done_callback(self._acks.discard)

    async def _send_ack(self, registry: InstanceRegistry, eviction_id: str) -> None:
        try:
            await registry.acknowledge(eviction_id, self.instance_id)
        except REGISTRY_ERRORS as exc:
            log.warning("eviction not acknowledged: %s", type(exc).__name__)

    async def _beat(self) -> None:
        if self.instances is None:
            return
        try:
            await uninterrupted(self.instances.beat(self.instance_id))
        except REGISTRY_ERRORS as exc:
            log.warning("instance heartbeat failed: %s", type(exc).__name__)

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.settings.instance_heartbeat_seconds)
            await self._beat()

    async def _expire_reservations(self) -> None:
        """Free reservations and slots whose usage report never came."""
        while True:
            await asyncio.sleep(1.0)
            try:
                await uninterrupted(self.limiter.expire(self.clock.now()))
            except StorageError as exc:  # the limiter wraps Redis's errors (LimiterUnavailable)
                log.warning("expiring reservations failed: %s", type(exc).__name__)

    async def _erase_replay_secrets(self) -> None:
        """Erase sealed replay secrets once their window has passed, even if never retried."""
        period = min(60.0, self.settings.idempotency_secret_window_seconds / 2)
        while True:
            await asyncio.sleep(period)
            try:
                await uninterrupted(self.services.keys.erase_expired_secrets())
            except KeyplaneError as exc:
                log.warning("erasing expired replay secrets failed: %s", type(exc).__name__)

    async def stop(self) -> None:
        """Stop background work, write what it still holds, then close the store."""
        # Queued usage reports are written, not dropped: their senders are waiting.
        await self.ledger.close()
        await self.supervisor.finish("ledger")
        await self.supervisor.stop()
        with contextlib.suppress(KeyplaneError):
            await self.services.streams.flush()  # events of reports written while stopping
        await self.services.streams.broadcast.close()
        if self.sampler is not None:
            self.sampler.sample()  # the final counts, for a scrape of the remaining workers
        if self.outbound is not None:
            await self.outbound.aclose()
        if self.refusals is not None:
            try:
                await self.refusals.flush(everything=True)
            except KeyplaneError as exc:
                log.warning("refusal tallies not sent: %s", type(exc).__name__)
        await self.last_used.flush()
        await self.management_last_used.flush()
        if self.verdict_recorder is not None:
            await self.verdict_recorder.flush()
        if self.rollup_folder is not None:
            await self.rollup_folder.fold()
        try:
            await self.security.flush()
        except KeyplaneError as exc:
            log.warning("security events not written: %s", type(exc).__name__)
        if self.window_keeper is not None:
            await self.window_keeper.flush()
        if self.instances is not None:
            # Stopping cleanly: nobody should wait for this instance's confirmations.
            try:
                await self.instances.leave(self.instance_id)
            except REGISTRY_ERRORS as exc:
                log.warning("instance not removed from the registry: %s", type(exc).__name__)
        if self._acks:
            await asyncio.wait(list(self._acks))
        if self.invalidation is not None:
            await self.invalidation.flush()
        if isinstance(self.slot_queue, RedisSlotQueue):
            await self.slot_queue.aclose()
        if self.redis is not None:
            # The pool was built here too: close its connections, not only the client.
            await self.redis.aclose(close_connection_pool=True)
        await self.store.close()


def register_rotation_jobs(jobs: JobRunner, rotations: Rotations) -> None:
    """The rotation jobs: due keys rotated, held secrets expired, upcoming rotations told."""
    jobs.register("rotation.sweep", rotations.sweep, every=timedelta(minutes=1))
    jobs.register("rotation.held_expiry", rotations.expire_held, every=timedelta(minutes=1))
    jobs.register("rotation.notices", rotations.announce, every=timedelta(minutes=10))


def register_security_report(jobs: JobRunner, reports: SecurityReports, cron: str) -> None:
    """The scheduled security report: every organization's, sent as a ``security.report``."""

    async def run(now: datetime) -> object:
        return len(await reports.run_scheduled())

    jobs.register("security.report", run, cron=cron)


def enable_audit(store: Database, server_secret: bytes) -> None:
    """Every journaled change appends to the audit log, in the change's own transaction
    (the runtime, the vault library and the CLI's embedded commands call this)."""
    store.audit.key = chain_key(server_secret)
    store.unit.journal_writers.append(store.audit.append)


def _vault_service(
    store: Database, keyring: Keyring | None, clock: Clock, settings: Settings
) -> VaultService:
    return VaultService(store.vault, keyring, clock, default_strategy=configured_strategy(settings))


@contextlib.asynccontextmanager
async def open_vault_service(
    settings: Settings, clock: Clock
) -> AsyncIterator[tuple[VaultService, Organization]]:
    """The vault alone, for ``keyplane.vault``'s in-process mode: no limiter, no loops.

    Built like the server's (same store, keyring and strategy), migrating first when
    ``migrate_on_start`` is set. Yields the service and the default organization.
    """
    keyring = settings.vault_keyring()
    store = Database.from_settings(settings)
    try:
        enable_audit(store, resolve_server_secret(settings))
    except ConfigurationError:
        # The library on PostgreSQL without KEYPLANE_SECRET (it hashes no keys): its vault
        # changes cannot be chained, so they go unaudited; say so once.
        log.warning("KEYPLANE_SECRET is unset: vault changes made here are not audited")
    try:
        if settings.migrate_on_start:
            await migrate(store.engine, settings.database_schema)
        org, _project = await store.tenancy.ensure_default_tenancy(clock.now())
        yield _vault_service(store, keyring, clock, settings), org
    finally:
        await store.close()


def _default_instance_id() -> str:
    """Host name, process id and a random suffix (a restarted process is a new instance)."""
    host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:40] or "host"
    return f"{host}:{os.getpid()}:{secrets.token_hex(3)}"
