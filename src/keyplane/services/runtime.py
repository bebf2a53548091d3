"""The composition root: builds the store, caches and services from settings."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from keyplane.domain.clock import Clock, SystemClock
from keyplane.domain.tenancy import ManagementKeyRecord, Organization, Project
from keyplane.services.cache import TtlCache
from keyplane.services.keys import KeyService
from keyplane.services.last_used import LastUsedRecorder
from keyplane.services.management import ManagementKeys
from keyplane.services.projects import Projects
from keyplane.services.verify import Verifier
from keyplane.settings import Settings, resolve_server_secret
from keyplane.store.base import SecretMatch
from keyplane.store.migrate import migrate
from keyplane.store.sql import SqlStore


@dataclass
class Runtime:
    settings: Settings
    store: SqlStore
    clock: Clock
    org: Organization
    default_project: Project
    key_cache: TtlCache[SecretMatch]
    management_cache: TtlCache[ManagementKeyRecord]
    last_used: LastUsedRecorder
    management_last_used: LastUsedRecorder
    keys: KeyService
    verifier: Verifier
    management: ManagementKeys
    projects: Projects
    #: Set when this start generated the first management key; shown once, never stored.
    generated_root_key: str | None = None
    _background: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    async def start(cls, settings: Settings, clock: Clock | None = None) -> Runtime:
        clock = clock or SystemClock()
        server_secret = resolve_server_secret(settings)
        store = SqlStore.from_url(settings.async_database_url, settings.database_schema)
        try:
            if settings.migrate_on_start:
                await migrate(store.engine, settings.database_schema)
            org, project = await store.ensure_default_tenancy(clock.now())
        except BaseException:
            await store.close()
            raise
        key_cache: TtlCache[SecretMatch] = TtlCache(
            store.find_by_secret,
            lambda match: match.record.id,
            ttl=settings.cache_ttl_seconds,
            negative_ttl=settings.negative_cache_ttl_seconds,
            max_entries=settings.cache_max_entries,
        )
        management_cache: TtlCache[ManagementKeyRecord] = TtlCache(
            store.find_management_key,
            lambda record: record.id,
            ttl=settings.cache_ttl_seconds,
            negative_ttl=settings.negative_cache_ttl_seconds,
            max_entries=10_000,
        )
        last_used = LastUsedRecorder(store.touch_keys, settings.last_used_flush_seconds)
        management_last_used = LastUsedRecorder(
            store.touch_management_keys, settings.last_used_flush_seconds
        )
        root_key = None if settings.root_key is None else settings.root_key.get_secret_value()
        management = ManagementKeys(
            store, management_cache, clock, server_secret, org, root_key, management_last_used
        )
        runtime = cls(
            settings=settings,
            store=store,
            clock=clock,
            org=org,
            default_project=project,
            key_cache=key_cache,
            management_cache=management_cache,
            last_used=last_used,
            management_last_used=management_last_used,
            keys=KeyService(store, key_cache, clock, server_secret, project),
            verifier=Verifier(key_cache, clock, server_secret, last_used),
            management=management,
            projects=Projects(store, clock),
        )
        if root_key is None and await store.count_management_keys() == 0:
            issued = await management.issue(org.id, "root", ("*",), None, created_by=None)
            runtime.generated_root_key = issued.secret
        loop = asyncio.get_running_loop()
        runtime._background = [
            loop.create_task(last_used.run()),
            loop.create_task(management_last_used.run()),
        ]
        return runtime

    async def stop(self) -> None:
        """Stop background work, write what it still holds, then close the store."""
        for task in self._background:
            task.cancel()
        if self._background:
            # asyncio.wait, not gather: gather would return at the first cancelled task.
            await asyncio.wait(self._background)
        await self.last_used.flush()
        await self.management_last_used.flush()
        await self.store.close()
