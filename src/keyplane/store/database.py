"""The database as one object: every concept store over one shared unit of work.

Built by :meth:`Database.from_url`; callers reach a concept through its attribute
(``db.keys.create(...)``, ``db.usage.record(...)``) and should depend on that concept's
protocol (``KeyStore``, ``UsageStore``, ...) rather than on the whole database.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine

from keyplane.store.analytics import SqlAnalyticsStore
from keyplane.store.audit import SqlAuditStore
from keyplane.store.audit_query import SqlAuditQueryStore
from keyplane.store.events import SqlEventStore
from keyplane.store.idempotency import SqlIdempotencyStore
from keyplane.store.instances import SqlInstanceRegistry
from keyplane.store.jobs import SqlJobStore
from keyplane.store.keys import SqlKeyStore
from keyplane.store.leaks import SqlLeakResponseStore
from keyplane.store.lean import LeanKeyReads
from keyplane.store.management_keys import SqlManagementKeyStore
from keyplane.store.plans import SqlPlanStore
from keyplane.store.rotations import SqlRotationStore
from keyplane.store.security_report import SqlSecurityReportStore
from keyplane.store.signing_secrets import SqlSigningSecretStore
from keyplane.store.tenancy import SqlTenancyStore
from keyplane.store.unit import DEFAULT_MAX_OVERFLOW, DEFAULT_POOL_SIZE, UnitOfWork, create_engine
from keyplane.store.usage import SqlUsageStore
from keyplane.store.vault import SqlVaultStore
from keyplane.store.vault_sealed import SqlSealedSecretStore
from keyplane.store.webhooks import SqlWebhookStore

if TYPE_CHECKING:
    from keyplane.settings import Settings

#: How long an instance that stopped beating still counts as live, unless told otherwise.
DEFAULT_INSTANCE_LIVENESS_SECONDS = 15.0


class Database:
    """SQLite or PostgreSQL, as the concept stores Keyplane uses.

    Attributes:
        unit: the shared unit of work (engine, transactions, driver error wrapping).
        keys, management_keys, tenancy, plans, usage, analytics, events, idempotency,
        vault, sealed_secrets, signing_secrets, webhooks, audit, audit_query, jobs,
        rotations, security_report, leak_responses: the concept stores (see each module's
        protocol).
        instances: the instance registry in the database (PostgreSQL only).
    """

    def __init__(
        self,
        unit: UnitOfWork,
        *,
        instance_liveness_seconds: float = DEFAULT_INSTANCE_LIVENESS_SECONDS,
    ) -> None:
        self.unit = unit
        self.keys = SqlKeyStore(unit)
        #: The key cache's loads, through the driver (``keys`` reads the same, the reference).
        self.key_reads = LeanKeyReads(unit)
        self.management_keys = SqlManagementKeyStore(unit)
        self.tenancy = SqlTenancyStore(unit)
        self.plans = SqlPlanStore(unit)
        self.analytics = SqlAnalyticsStore(unit)
        self.usage = SqlUsageStore(unit, self.analytics)
        self.events = SqlEventStore(unit)
        self.idempotency = SqlIdempotencyStore(unit)
        self.vault = SqlVaultStore(unit, self.tenancy)
        self.sealed_secrets = SqlSealedSecretStore(unit)
        self.signing_secrets = SqlSigningSecretStore(unit)
        self.webhooks = SqlWebhookStore(unit)
        self.audit = SqlAuditStore(unit)
        self.instances = SqlInstanceRegistry(unit, instance_liveness_seconds)
        self.audit_query = SqlAuditQueryStore(unit)
        self.jobs = SqlJobStore(unit)
        self.rotations = SqlRotationStore(unit)
        self.security_report = SqlSecurityReportStore(unit)
        self.leak_responses = SqlLeakResponseStore(unit)

    @classmethod
    def from_url(
        cls,
        async_url: str,
        schema: str | None = None,
        *,
        pool_size: int = DEFAULT_POOL_SIZE,
        max_overflow: int = DEFAULT_MAX_OVERFLOW,
        instance_liveness_seconds: float = DEFAULT_INSTANCE_LIVENESS_SECONDS,
    ) -> Database:
        """The database at ``async_url`` (``sqlite+aiosqlite://`` or
        ``postgresql+asyncpg://``); ``schema``, ``pool_size`` and ``max_overflow`` apply to
        PostgreSQL only (see :func:`keyplane.store.unit.create_engine`)."""
        engine = create_engine(async_url, schema, pool_size=pool_size, max_overflow=max_overflow)
        return cls(UnitOfWork(engine), instance_liveness_seconds=instance_liveness_seconds)

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        """The database the settings name (``KEYPLANE_DATABASE_URL``, ``_SCHEMA``,
        ``_POOL_SIZE``, ``_MAX_OVERFLOW``, ``KEYPLANE_INSTANCE_LIVENESS_SECONDS``)."""
        return cls.from_url(
            settings.async_database_url,
            settings.database_schema,
            pool_size=settings.database_pool_size,
            max_overflow=settings.database_max_overflow,
            instance_liveness_seconds=settings.instance_liveness_seconds,
        )

    @property
    def engine(self) -> AsyncEngine:
        """The engine (for migrations and tests)."""
        return self.unit.engine

    async def ping(self) -> None:
        """Raise StorageError when the database cannot answer."""
        await self.unit.ping()

    async def close(self) -> None:
        """Close every pooled connection."""
        await self.key_reads.close()
        await self.unit.close()
