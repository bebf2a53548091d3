"""``SqlStore``: the storage contract on SQLite (aiosqlite) and PostgreSQL (asyncpg)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    String,
    Table,
    and_,
    bindparam,
    case,
    cast,
    delete,
    event,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql import ColumnElement

from keyplane.domain import ids, money, validation
from keyplane.domain.keyformat import DEFAULT_PREFIX
from keyplane.domain.keys import Environment, KeyRecord, KeyStatus
from keyplane.domain.plans import PlanRecord
from keyplane.domain.tenancy import ManagementKeyRecord, Organization, Project
from keyplane.domain.usage import Recorded, UsageEntry, bucket_starts, crossed_thresholds
from keyplane.errors import ConflictError, NotFoundError, StorageError, ValidationError
from keyplane.settings import sqlite_path
from keyplane.store.base import IdempotencyRecord, KeyFilter, KeyMutation, SecretMatch
from keyplane.store.tables import (
    api_key_secrets,
    api_key_tags,
    api_keys,
    events,
    idempotency_records,
    limit_windows,
    management_keys,
    organizations,
    plans,
    projects,
    usage_events,
    usage_rollups,
)

#: Called inside a usage transaction with its new reports, before it commits.
BeforeCommit = Callable[[Sequence[UsageEntry]], Awaitable[None]]

DEFAULT_ORG_NAME = "default"
DEFAULT_PROJECT_NAME = "default"


def create_engine(async_url: str, schema: str | None = None) -> AsyncEngine:
    """An engine for ``async_url`` with the settings each database needs.

    ``schema`` (PostgreSQL only) puts Keyplane's tables in that schema via ``search_path``.
    """
    if async_url.startswith("sqlite"):
        return _sqlite_engine(async_url)
    connect_args = {} if schema is None else {"server_settings": {"search_path": schema}}
    return create_async_engine(
        async_url,
        pool_size=10,
        max_overflow=20,
        pool_pre_ping=True,
        connect_args=connect_args,
        # SQL parameters are key digests, metadata, amounts: never in a log line or an error.
        hide_parameters=True,
    )


def _sqlite_engine(async_url: str) -> AsyncEngine:
    path = sqlite_path(async_url)
    if path is None:
        engine = create_async_engine(
            async_url,
            poolclass=StaticPool,
            connect_args={"check_same_thread": False},
            hide_parameters=True,
        )
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(async_url, connect_args={"timeout": 30}, hide_parameters=True)

    @event.listens_for(engine.sync_engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the driver so that BEGIN is emitted where
        # SQLAlchemy begins, and reads inside a write transaction see a consistent snapshot.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk before it is acknowledged, even across a power cut
        # (NORMAL would only survive a process crash). Group commit keeps this affordable.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN")

    return engine


class SqlStore:
    """The storage contract over SQLAlchemy Core.

    On SQLite, writers in this process are serialised by an asyncio lock: SQLite admits one
    writer at a time anyway, and queueing here avoids lock-upgrade failures between two
    deferred transactions. Readers run concurrently under WAL.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._is_sqlite = engine.dialect.name == "sqlite"
        self._write_lock = asyncio.Lock()
        self._statements: _UsageStatements | None = None

    @classmethod
    def from_url(cls, async_url: str, schema: str | None = None) -> SqlStore:
        return cls(create_engine(async_url, schema))

    # -- plumbing ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StorageError("database read failed") from exc

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        lock = self._write_lock if self._is_sqlite else contextlib.nullcontext()
        async with lock:
            try:
                async with self.engine.begin() as conn:
                    yield conn
            except IntegrityError as exc:
                raise ConflictError("the change conflicts with existing data") from exc
            except SQLAlchemyError as exc:
                raise StorageError("database write failed") from exc

    async def ping(self) -> None:
        async with self._read() as conn:
            await conn.execute(select(1))

    async def close(self) -> None:
        await self.engine.dispose()

    # -- tenancy ----------------------------------------------------------------------------

    async def ensure_default_tenancy(self, now: datetime) -> tuple[Organization, Project]:
        async with self._write() as conn:
            if not self._is_sqlite:
                # Instances starting together take turns, so only one default org is made.
                await conn.execute(select(func.pg_advisory_xact_lock(4242002)))
            org_row = (
                await conn.execute(select(organizations).order_by(organizations.c.id).limit(1))
            ).first()
            if org_row is None:
                org = Organization(ids.new_id("org"), DEFAULT_ORG_NAME, now)
                await conn.execute(
                    insert(organizations).values(id=org.id, name=org.name, created_at=now)
                )
            else:
                org = Organization(org_row.id, org_row.name, org_row.created_at)
            project = await _ensure_default_project(conn, org.id, now)
        return org, project

    async def create_organization(self, name: str, now: datetime) -> tuple[Organization, Project]:
        """A new organization and, in the same transaction, its own default project."""
        org = Organization(ids.new_id("org"), name, now)
        async with self._write() as conn:
            await conn.execute(insert(organizations).values(id=org.id, name=name, created_at=now))
            project = await _ensure_default_project(conn, org.id, now)
        return org, project

    async def default_project(self, org_id: str, now: datetime) -> Project:
        """The organization's default project, made now if it has none (an org from before 0005)."""
        async with self._read() as conn:
            row = (
                await conn.execute(
                    select(projects).where(
                        projects.c.org_id == org_id, projects.c.name == DEFAULT_PROJECT_NAME
                    )
                )
            ).first()
        if row is not None:
            return _project(row)
        try:
            async with self._write() as conn:
                return await _ensure_default_project(conn, org_id, now)
        except ConflictError:
            # Made meanwhile by a concurrent request (the name is unique per org): read it.
            return await self.default_project(org_id, now)

    async def create_project(self, project: Project) -> Project:
        async with self._write() as conn:
            await conn.execute(insert(projects).values(**_project_values(project)))
        return project

    async def get_project(self, org_id: str, project_id: str) -> Project | None:
        async with self._read() as conn:
            row = (
                await conn.execute(
                    select(projects).where(projects.c.org_id == org_id, projects.c.id == project_id)
                )
            ).first()
        return None if row is None else _project(row)

    async def list_projects(self, org_id: str) -> list[Project]:
        async with self._read() as conn:
            rows = await conn.execute(
                select(projects).where(projects.c.org_id == org_id).order_by(projects.c.id)
            )
            return [_project(row) for row in rows]

    # -- API keys ---------------------------------------------------------------------------

    async def create_key(
        self, record: KeyRecord, idempotency: IdempotencyRecord | None = None
    ) -> KeyRecord:
        async with self._write() as conn:
            if idempotency is not None:
                # First, so a concurrent retry fails here, before it has inserted anything.
                await conn.execute(
                    insert(idempotency_records).values(
                        org_id=idempotency.org_id,
                        principal_id=idempotency.principal_id,
                        idempotency_key=idempotency.key_digest,
                        operation=idempotency.operation,
                        fingerprint=idempotency.fingerprint,
                        object_id=idempotency.object_id,
                        created_at=idempotency.created_at,
                        sealed_secret=idempotency.sealed_secret,
                    )
                )
            await conn.execute(insert(api_keys).values(**_key_values(record)))
            await conn.execute(
                insert(api_key_secrets).values(
                    hash=record.hash,
                    key_id=record.id,
                    created_at=record.created_at,
                    valid_until=None,
                )
            )
            await _write_tags(conn, record.id, record.tags, replace=False)
        return record

    async def get_idempotency(
        self, org_id: str, principal_id: str, key_digest: str
    ) -> IdempotencyRecord | None:
        table = idempotency_records.c
        async with self._read() as conn:
            row = (
                await conn.execute(
                    select(idempotency_records).where(
                        table.org_id == org_id,
                        table.principal_id == principal_id,
                        table.idempotency_key == key_digest,
                    )
                )
            ).first()
        if row is None:
            return None
        return IdempotencyRecord(
            org_id=row.org_id,
            principal_id=row.principal_id,
            key_digest=row.idempotency_key,
            operation=row.operation,
            fingerprint=row.fingerprint,
            object_id=row.object_id,
            created_at=row.created_at,
            sealed_secret=row.sealed_secret,
        )

    async def erase_idempotency_secrets(
        self, created_before: datetime, org_id: str | None = None, principal_id: str | None = None
    ) -> int:
        table = idempotency_records.c
        conditions = [table.created_at < created_before, table.sealed_secret.is_not(None)]
        if org_id is not None and principal_id is not None:
            conditions += [table.org_id == org_id, table.principal_id == principal_id]
        async with self._write() as conn:
            result = await conn.execute(
                update(idempotency_records).where(*conditions).values(sealed_secret=None)
            )
        return int(result.rowcount or 0)

    async def get_key(self, org_id: str, id_or_hash: str) -> KeyRecord | None:
        column = api_keys.c.id if ids.looks_like_id(id_or_hash, "key") else api_keys.c.hash
        async with self._read() as conn:
            row = (
                await conn.execute(
                    select(api_keys).where(api_keys.c.org_id == org_id, column == id_or_hash)
                )
            ).first()
        return None if row is None else _key(row)

    async def find_by_secret(self, secret_hash: str) -> SecretMatch | None:
        query = (
            self._match_query(api_key_secrets.c.valid_until.label("secret_valid_until"))
            .join(api_key_secrets, api_key_secrets.c.key_id == api_keys.c.id)
            .where(api_key_secrets.c.hash == secret_hash)
        )
        async with self._read() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        return SecretMatch(_key(row), row.secret_valid_until, row.plan_name, row.plan_policy)

    async def find_by_id(self, key_id: str) -> SecretMatch | None:
        query = self._match_query().where(api_keys.c.id == key_id)
        async with self._read() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        return SecretMatch(_key(row), None, row.plan_name, row.plan_policy)

    def _match_query(self, *extra: Any) -> Any:
        """A key with its plan's name and policy."""
        return select(
            api_keys, *extra, plans.c.name.label("plan_name"), plans.c.policy.label("plan_policy")
        ).outerjoin(plans, plans.c.id == api_keys.c.plan_id)

    async def list_keys(
        self, org_id: str, filters: KeyFilter, now: datetime, after: str | None, limit: int
    ) -> list[KeyRecord]:
        conditions: list[ColumnElement[bool]] = [api_keys.c.org_id == org_id]
        if after is not None:
            conditions.append(api_keys.c.id > after)
        if filters.owner is not None:
            conditions.append(api_keys.c.owner == filters.owner)
        if filters.environment is not None:
            conditions.append(api_keys.c.environment == filters.environment.value)
        if filters.project_id is not None:
            conditions.append(api_keys.c.project_id == filters.project_id)
        if filters.name_contains:
            conditions.append(api_keys.c.name.icontains(filters.name_contains, autoescape=True))
        if filters.tag is not None:
            conditions.append(
                api_keys.c.id.in_(
                    select(api_key_tags.c.key_id).where(api_key_tags.c.tag == filters.tag)
                )
            )
        if filters.status is not None:
            conditions.append(_status_condition(filters.status, now))
        for path, value in filters.metadata:
            conditions.append(self._metadata_text(path) == value)
        query = select(api_keys).where(*conditions).order_by(api_keys.c.id).limit(limit)
        async with self._read() as conn:
            return [_key(row) for row in await conn.execute(query)]

    def _metadata_text(self, path: tuple[str, ...]) -> ColumnElement[str]:
        return metadata_text(api_keys.c.meta, path, is_sqlite=self._is_sqlite)

    async def mutate_key(self, org_id: str, key_id: str, mutation: KeyMutation) -> KeyRecord:
        async with self._write() as conn:
            current = await self._locked_key(conn, org_id, key_id)
            updated = mutation(current)
            await self._save_key(conn, current, updated)
        return updated

    async def rotate_key(
        self, org_id: str, key_id: str, mutation: KeyMutation, grace_until: datetime
    ) -> tuple[KeyRecord, list[str]]:
        async with self._write() as conn:
            current = await self._locked_key(conn, org_id, key_id)
            updated = mutation(current)
            # Shorten, never extend, the grace of secrets rotated out earlier.
            ended = await conn.execute(
                update(api_key_secrets)
                .where(
                    api_key_secrets.c.key_id == key_id,
                    or_(
                        api_key_secrets.c.valid_until.is_(None),
                        api_key_secrets.c.valid_until > grace_until,
                    ),
                )
                .values(valid_until=grace_until)
                .returning(api_key_secrets.c.hash)
            )
            changed = [row.hash for row in ended]
            await conn.execute(
                insert(api_key_secrets).values(
                    hash=updated.hash,
                    key_id=key_id,
                    created_at=updated.updated_at,
                    valid_until=None,
                )
            )
            await self._save_key(conn, current, updated)
        return updated, changed

    async def touch_keys(self, last_used: Mapping[str, datetime]) -> None:
        await self._touch(api_keys, last_used)

    async def touch_management_keys(self, last_used: Mapping[str, datetime]) -> None:
        await self._touch(management_keys, last_used)

    async def _touch(self, table: Table, last_used: Mapping[str, datetime]) -> None:
        if not last_used:
            return
        statement = (
            update(table)
            .where(
                table.c.id == bindparam("b_id"),
                or_(table.c.last_used_at.is_(None), table.c.last_used_at < bindparam("b_when")),
            )
            .values(last_used_at=bindparam("b_when"))
        )
        rows = [{"b_id": key_id, "b_when": when} for key_id, when in last_used.items()]
        async with self._write() as conn:
            await conn.execute(statement, rows)

    async def _locked_key(self, conn: AsyncConnection, org_id: str, key_id: str) -> KeyRecord:
        row = (
            await conn.execute(
                select(api_keys)
                .where(api_keys.c.org_id == org_id, api_keys.c.id == key_id)
                .with_for_update()
            )
        ).first()
        if row is None:
            raise NotFoundError(f"no key {key_id!r}")
        return _key(row)

    async def _save_key(
        self, conn: AsyncConnection, current: KeyRecord, updated: KeyRecord
    ) -> None:
        values = _key_values(updated)
        for immutable in ("id", "org_id", "created_at"):
            values.pop(immutable)
        await conn.execute(update(api_keys).where(api_keys.c.id == current.id).values(**values))
        if updated.tags != current.tags:
            await _write_tags(conn, updated.id, updated.tags, replace=True)

    # -- plans ------------------------------------------------------------------------------

    async def create_plan(self, plan: PlanRecord) -> PlanRecord:
        async with self._write() as conn:
            await conn.execute(insert(plans).values(**_plan_values(plan)))
        return plan

    async def get_plan(self, org_id: str, id_or_name: str) -> PlanRecord | None:
        column = plans.c.id if ids.looks_like_id(id_or_name, "plan") else plans.c.name
        async with self._read() as conn:
            row = (
                await conn.execute(
                    select(plans).where(plans.c.org_id == org_id, column == id_or_name)
                )
            ).first()
        return None if row is None else _plan(row)

    async def list_plans(self, org_id: str) -> list[PlanRecord]:
        async with self._read() as conn:
            rows = await conn.execute(
                select(plans).where(plans.c.org_id == org_id).order_by(plans.c.name)
            )
            return [_plan(row) for row in rows]

    async def update_plan(self, plan: PlanRecord) -> PlanRecord:
        async with self._write() as conn:
            values = _plan_values(plan)
            for immutable in ("id", "org_id", "created_at"):
                values.pop(immutable)
            result = await conn.execute(
                update(plans)
                .where(plans.c.org_id == plan.org_id, plans.c.id == plan.id)
                .values(**values)
            )
            if result.rowcount == 0:
                raise NotFoundError(f"no plan {plan.id!r}", code="PLAN_NOT_FOUND")
        return plan

    async def delete_plan(self, org_id: str, plan_id: str) -> None:
        async with self._write() as conn:
            in_use = (
                await conn.execute(
                    select(api_keys.c.id).where(
                        api_keys.c.plan_id == plan_id,
                        api_keys.c.status != KeyStatus.REVOKED.value,
                    )
                )
            ).first()
            if in_use is not None:
                raise ConflictError("keys still use this plan", code="PLAN_IN_USE")
            # Revoked keys can never be used again; they let go of the plan.
            await conn.execute(
                update(api_keys).where(api_keys.c.plan_id == plan_id).values(plan_id=None)
            )
            result = await conn.execute(
                plans.delete().where(plans.c.org_id == org_id, plans.c.id == plan_id)
            )
            if result.rowcount == 0:
                raise NotFoundError(f"no plan {plan_id!r}", code="PLAN_NOT_FOUND")

    # -- usage ------------------------------------------------------------------------------

    async def record_usage(
        self, entries: Sequence[UsageEntry], before_commit: BeforeCommit | None = None
    ) -> list[Recorded]:
        """Append reports to the ledger and their rollups, in one transaction (group commit).

        A report whose idempotency key is already in the ledger for its API key is not counted
        again: it answers as the original (same body) or as a conflict (another body). The
        scope is the API key, so another key's report (another tenant's) never matches. Each
        step is one statement for the whole batch, whatever its size. ``before_commit`` is
        given the new reports while their rollup rows are still locked (see
        :meth:`seed_spent`).
        """
        if not entries:
            return []
        statements = self._usage_statements()
        async with self._write() as conn:
            await conn.execute(statements.append, [_usage_values(e) for e in entries])
            # Which row holds each (API key, idempotency key) now: ours (new) or an earlier
            # one. One statement; the IN lists may pair more than asked, the dict picks.
            rows = await conn.execute(
                select(
                    usage_events.c.key_id,
                    usage_events.c.idempotency_key,
                    usage_events.c.id,
                    usage_events.c.fingerprint,
                    usage_events.c.recorded_at,
                ).where(
                    usage_events.c.key_id.in_(sorted({e.key_id for e in entries})),
                    usage_events.c.idempotency_key.in_(
                        sorted({e.idempotency_key for e in entries})
                    ),
                )
            )
            by_key = {(row.key_id, row.idempotency_key): row for row in rows}
            outcomes: list[Recorded] = []
            added: list[UsageEntry] = []
            for entry in entries:
                row = by_key[(entry.key_id, entry.idempotency_key)]
                if row.id == entry.id:
                    added.append(entry)
                    outcomes.append(Recorded(entry.id, entry.recorded_at, new=True))
                else:
                    conflict = row.fingerprint != entry.fingerprint
                    outcomes.append(Recorded(row.id, row.recorded_at, new=False, conflict=conflict))
            if added:
                overflowing = await self._overflowing(conn, added)
                if overflowing:
                    # Not recorded at all: out of the ledger, so a retry is judged afresh.
                    await conn.execute(
                        delete(usage_events).where(usage_events.c.id.in_(sorted(overflowing)))
                    )
                    added = [entry for entry in added if entry.id not in overflowing]
                    outcomes = [
                        Recorded(o.event_id, o.recorded_at, new=False, overflow=True)
                        if o.event_id in overflowing
                        else o
                        for o in outcomes
                    ]
            if added:
                await self._add_to_rollups(conn, added)
                if before_commit is not None:
                    await before_commit(added)
        return outcomes

    async def _overflowing(self, conn: AsyncConnection, added: Sequence[UsageEntry]) -> set[str]:
        """Ids of the reports that would push a key's all-time totals past ``LEDGER_MAX``.

        Why: the rollups are 64-bit integers. Past 2**63 PostgreSQL fails the whole batch
        (``bigint out of range``, every later report of the key included) and SQLite silently
        turns the sum into a float. The all-time, all-models row of a key bounds every other
        rollup row of it, so checking that one row bounds them all. It is locked first (in
        key order, created empty if need be, as ``seed_spent`` does), so concurrent batches on
        other instances cannot both pass the check on the same total.
        """
        epoch = bucket_starts(added[0].recorded_at)["total"]
        key_ids = sorted({entry.key_id for entry in added})
        await conn.execute(
            self._insert(usage_rollups).on_conflict_do_nothing(),
            [
                {
                    "key_id": key_id,
                    "bucket": "total",
                    "bucket_start": epoch,
                    "model": "",
                    "requests": 0,
                    "cost_micros": 0,
                    "input_tokens": 0,
                    "output_tokens": 0,
                }
                for key_id in key_ids
            ],
        )
        rows = await conn.execute(
            select(
                usage_rollups.c.key_id,
                usage_rollups.c.cost_micros,
                usage_rollups.c.input_tokens,
                usage_rollups.c.output_tokens,
            )
            .where(
                usage_rollups.c.key_id.in_(key_ids),
                usage_rollups.c.bucket == "total",
                usage_rollups.c.bucket_start == epoch,
                usage_rollups.c.model == "",
            )
            .order_by(usage_rollups.c.key_id)
            .with_for_update()
        )
        running = {
            row.key_id: [row.cost_micros, row.input_tokens, row.output_tokens] for row in rows
        }
        overflowing: set[str] = set()
        for entry in added:
            totals = running[entry.key_id]
            amounts = (entry.cost_micros, entry.input_tokens, entry.output_tokens)
            if any(
                total + amount > money.LEDGER_MAX
                for total, amount in zip(totals, amounts, strict=True)
            ):
                overflowing.add(entry.id)
                continue
            for index, amount in enumerate(amounts):
                totals[index] += amount
        return overflowing

    async def seed_spent(
        self,
        key_id: str,
        bucket: str,
        bucket_start: datetime,
        install: Callable[[dict[str, int]], Awaitable[None]],
    ) -> None:
        """Read a key's spending in one bucket, by model, and ``install`` it, under a lock.

        The lock is the key's all-models rollup row (created empty if need be), which every
        report of that key and bucket updates: while a seed holds it no report can commit,
        and a report that committed first is in what the seed reads. A report passes its
        amount to the live counters before it commits (``before_commit``), so each report is
        counted exactly once, by the seed or by the increment, whatever the interleaving and
        however many instances run.
        """
        async with self._write() as conn:
            await conn.execute(
                self._insert(usage_rollups)
                .values(
                    key_id=key_id,
                    bucket=bucket,
                    bucket_start=bucket_start,
                    model="",
                    requests=0,
                    cost_micros=0,
                    input_tokens=0,
                    output_tokens=0,
                )
                .on_conflict_do_nothing()
            )
            in_bucket = (
                usage_rollups.c.key_id == key_id,
                usage_rollups.c.bucket == bucket,
                usage_rollups.c.bucket_start == bucket_start,
            )
            await conn.execute(
                select(usage_rollups.c.model)
                .where(*in_bucket, usage_rollups.c.model == "")
                .with_for_update()
            )
            rows = await conn.execute(
                select(usage_rollups.c.model, usage_rollups.c.cost_micros).where(*in_bucket)
            )
            await install({row.model: row.cost_micros for row in rows})

    async def guard_limit_state(
        self, key_id: str, install: Callable[[int | None, Mapping[str, int]], Awaitable[int]]
    ) -> None:
        """Renew a key's limit marker in Redis under a lock, and remember how long it lasts.

        ``install`` gets what the last renewal promised (None if there was none) and the
        key's kept long windows (``keep_limit_windows``), puts the marker in Redis and returns
        until when Redis keeps it. The row stays locked while it
        runs, so instances renewing the same key at once take turns: the second sees the
        first one's promise and its marker, never a promise without its marker (which it would
        take for a lost Redis). Written in the same transaction, so a promise is never older
        than the marker it describes unless this commit fails after ``install`` succeeded.
        """
        marker = (limit_windows.c.key_id == key_id, limit_windows.c.window == "")
        async with self._write() as conn:
            await conn.execute(
                self._insert(limit_windows)
                .values(key_id=key_id, window="", until_us=-1)
                .on_conflict_do_nothing()
            )
            old = (
                await conn.execute(
                    select(limit_windows.c.until_us).where(*marker).with_for_update()
                )
            ).scalar_one()
            kept = await conn.execute(
                select(limit_windows.c.window, limit_windows.c.until_us).where(
                    limit_windows.c.key_id == key_id, limit_windows.c.window != ""
                )
            )
            until = await install(None if old < 0 else old, {r.window: r.until_us for r in kept})
            if until > old:
                await conn.execute(update(limit_windows).where(*marker).values(until_us=until))

    async def keep_limit_windows(self, rows: Mapping[tuple[str, str], int]) -> None:
        """Keep, per (key id, window id), the latest instant each long window is full again.

        Several instances write the same rows: the greater value wins, in the statement.
        """
        if not rows:
            return
        insert = self._insert(limit_windows)
        greatest = func.max if self._is_sqlite else func.greatest
        statement = insert.on_conflict_do_update(
            index_elements=[limit_windows.c.key_id, limit_windows.c.window],
            set_={"until_us": greatest(limit_windows.c.until_us, insert.excluded.until_us)},
        )
        values = [
            {"key_id": key_id, "window": window, "until_us": until}
            # Sorted, so concurrent transactions (several instances) lock rows in one order.
            for (key_id, window), until in sorted(rows.items())
        ]
        async with self._write() as conn:
            await conn.execute(statement, values)

    async def _add_to_rollups(self, conn: AsyncConnection, added: Sequence[UsageEntry]) -> None:
        sums: dict[tuple[str, str, datetime, str], list[int]] = {}
        for entry in added:
            for bucket, start in bucket_starts(entry.recorded_at).items():
                for model in {"", entry.model or ""}:
                    total = sums.setdefault((entry.key_id, bucket, start, model), [0, 0, 0, 0])
                    total[0] += 1
                    total[1] += entry.cost_micros
                    total[2] += entry.input_tokens
                    total[3] += entry.output_tokens
        # Sorted, so concurrent transactions (several instances) lock rows in one order.
        rows = [
            {
                "key_id": key_id,
                "bucket": bucket,
                "bucket_start": start,
                "model": model,
                "requests": requests,
                "cost_micros": cost,
                "input_tokens": tokens_in,
                "output_tokens": tokens_out,
            }
            for (key_id, bucket, start, model), (requests, cost, tokens_in, tokens_out) in sorted(
                sums.items()
            )
        ]
        await conn.execute(self._usage_statements().add_to_rollup, rows)
        alerting = [entry for entry in added if entry.alert is not None]
        if alerting:
            await self._record_alerts(conn, alerting)

    async def _record_alerts(self, conn: AsyncConnection, added: Sequence[UsageEntry]) -> None:
        # The totals now committed in this transaction, for each budget a report may alert on.
        slots = {
            (e.key_id, e.alert.bucket, e.alert.bucket_start) for e in added if e.alert is not None
        }
        running: dict[tuple[str, str, datetime], int] = {}
        for key_id, bucket, start in slots:
            running[(key_id, bucket, start)] = (
                await conn.execute(
                    select(usage_rollups.c.cost_micros).where(
                        usage_rollups.c.key_id == key_id,
                        usage_rollups.c.bucket == bucket,
                        usage_rollups.c.bucket_start == start,
                        usage_rollups.c.model == "",
                    )
                )
            ).scalar_one()
        # Walk the batch backwards from the committed totals, so each report is checked
        # against the spending just before and just after it.
        crossings: list[list[dict[str, Any]]] = []
        for entry in reversed(added):
            alert = entry.alert
            if alert is None:
                continue
            slot = (entry.key_id, alert.bucket, alert.bucket_start)
            after = running[slot]
            before = after - entry.cost_micros
            running[slot] = before
            crossings.append([])
            for bp in crossed_thresholds(before, after, alert.limit_micros, alert.thresholds_bp):
                crossings[-1].append(
                    {
                        "org_id": entry.org_id,
                        "type": "budget.threshold_crossed",
                        "subject_id": entry.key_id,
                        "dedupe_key": (
                            f"budget:{entry.key_id}:{alert.bucket}:"
                            f"{alert.bucket_start.isoformat()}:{bp}"
                        ),
                        "payload": {
                            "key_id": entry.key_id,
                            "threshold": bp / 10_000,
                            "reset": alert.reset,
                            "period_start": alert.bucket_start.isoformat().replace("+00:00", "Z"),
                            # Integers in storage; the API shows them as credits.
                            "credit_limit_micros": alert.limit_micros,
                            "spent_micros": after,
                        },
                        "created_at": entry.recorded_at,
                    }
                )
        # Event ids sort by time: give them out in the order the crossings happened.
        ordered = [crossing for group in reversed(crossings) for crossing in group]
        if ordered:
            for crossing, event_id in zip(ordered, ids.new_ids("evt", len(ordered)), strict=True):
                crossing["id"] = event_id
            await conn.execute(self._usage_statements().record_event, ordered)

    def _usage_statements(self) -> _UsageStatements:
        """The ledger's statements, built once: building an upsert costs more than running it."""
        if self._statements is None:
            self._statements = _UsageStatements.build(self._insert)
        return self._statements

    def _insert(self, table: Table) -> Any:
        """An INSERT with this dialect's ON CONFLICT support."""
        return sqlite_insert(table) if self._is_sqlite else postgresql_insert(table)

    async def usage_totals(
        self, key_ids: Sequence[str], now: datetime
    ) -> dict[str, dict[str, int]]:
        """Micro-credits spent per key in the buckets ``now`` falls in (total/day/week/month)."""
        if not key_ids:
            return {}
        starts = bucket_starts(now)
        current = or_(
            *(
                and_(usage_rollups.c.bucket == bucket, usage_rollups.c.bucket_start == start)
                for bucket, start in starts.items()
            )
        )
        query = select(
            usage_rollups.c.key_id, usage_rollups.c.bucket, usage_rollups.c.cost_micros
        ).where(usage_rollups.c.key_id.in_(list(key_ids)), usage_rollups.c.model == "", current)
        totals: dict[str, dict[str, int]] = {key_id: dict.fromkeys(starts, 0) for key_id in key_ids}
        async with self._read() as conn:
            for row in await conn.execute(query):
                totals[row.key_id][row.bucket] = row.cost_micros
        return totals

    async def list_events(
        self,
        org_id: str,
        after: str | None,
        limit: int,
        subject_id: str | None = None,
        project_id: str | None = None,
    ) -> list[dict[str, Any]]:
        conditions = [events.c.org_id == org_id]
        if project_id is not None:
            conditions.append(
                events.c.subject_id.in_(
                    select(api_keys.c.id).where(api_keys.c.project_id == project_id)
                )
            )
        if after is not None:
            conditions.append(events.c.id > after)
        if subject_id is not None:
            conditions.append(events.c.subject_id == subject_id)
        query = select(events).where(*conditions).order_by(events.c.id).limit(limit)
        async with self._read() as conn:
            return [dict(row._mapping) for row in await conn.execute(query)]

    # -- management keys ---------------------------------------------------------------------

    async def create_management_key(self, record: ManagementKeyRecord) -> ManagementKeyRecord:
        async with self._write() as conn:
            await conn.execute(
                insert(management_keys).values(
                    id=record.id,
                    org_id=record.org_id,
                    project_id=record.project_id,
                    hash=record.hash,
                    start=record.start,
                    end=record.end,
                    name=record.name,
                    scopes=list(record.scopes),
                    created_by=record.created_by,
                    created_at=record.created_at,
                    revoked_at=record.revoked_at,
                )
            )
        return record

    async def find_management_key(self, secret_hash: str) -> ManagementKeyRecord | None:
        async with self._read() as conn:
            row = (
                await conn.execute(
                    select(management_keys).where(management_keys.c.hash == secret_hash)
                )
            ).first()
        return None if row is None else _management_key(row)

    async def get_management_key(self, org_id: str, key_id: str) -> ManagementKeyRecord | None:
        async with self._read() as conn:
            row = (
                await conn.execute(
                    select(management_keys).where(
                        management_keys.c.org_id == org_id, management_keys.c.id == key_id
                    )
                )
            ).first()
        return None if row is None else _management_key(row)

    async def list_management_keys(
        self, org_id: str, after: str | None, limit: int, project_id: str | None = None
    ) -> list[ManagementKeyRecord]:
        conditions = [management_keys.c.org_id == org_id]
        if after is not None:
            conditions.append(management_keys.c.id > after)
        if project_id is not None:
            conditions.append(management_keys.c.project_id == project_id)
        query = (
            select(management_keys).where(*conditions).order_by(management_keys.c.id).limit(limit)
        )
        async with self._read() as conn:
            return [_management_key(row) for row in await conn.execute(query)]

    async def revoke_management_key(
        self, org_id: str, key_id: str, now: datetime
    ) -> ManagementKeyRecord:
        async with self._write() as conn:
            row = (
                await conn.execute(
                    update(management_keys)
                    .where(management_keys.c.org_id == org_id, management_keys.c.id == key_id)
                    .values(revoked_at=func.coalesce(management_keys.c.revoked_at, now))
                    .returning(*management_keys.c)
                )
            ).first()
        if row is None:
            raise NotFoundError(f"no management key {key_id!r}")
        return _management_key(row)

    async def count_management_keys(self) -> int:
        async with self._read() as conn:
            count = (await conn.execute(select(func.count()).select_from(management_keys))).scalar()
        return int(count or 0)


@dataclass(frozen=True, slots=True)
class _UsageStatements:
    append: Any
    add_to_rollup: Any
    record_event: Any

    @classmethod
    def build(cls, insert_for: Callable[[Table], Any]) -> _UsageStatements:
        upsert = insert_for(usage_rollups)
        excluded = upsert.excluded
        return cls(
            append=insert_for(usage_events).on_conflict_do_nothing(),
            add_to_rollup=upsert.on_conflict_do_update(
                index_elements=["key_id", "bucket", "bucket_start", "model"],
                set_={
                    name: usage_rollups.c[name] + excluded[name]
                    for name in ("requests", "cost_micros", "input_tokens", "output_tokens")
                },
            ),
            record_event=insert_for(events).on_conflict_do_nothing(),
        )


# -- row mapping ------------------------------------------------------------------------------


def metadata_text(column: Any, path: tuple[str, ...], *, is_sqlite: bool) -> ColumnElement[str]:
    """The text form of a metadata value at ``path``, the same on every database.

    Strings compare as themselves, numbers as their JSON text, booleans as ``true`` /
    ``false`` (SQLite's ``json_extract`` alone would give 1 / 0).
    """
    if not all(validation.METADATA_PATH_SEGMENT.fullmatch(part) for part in path):
        raise ValidationError("invalid metadata path", code="INVALID_FILTER")
    if not is_sqlite:
        text: ColumnElement[str] = column[path].as_string()
        return text
    json_path = "$" + "".join(f'."{part}"' for part in path)
    kind = func.json_type(column, json_path)
    return case(
        (kind == "true", literal("true")),
        (kind == "false", literal("false")),
        else_=cast(func.json_extract(column, json_path), String),
    )


def _status_condition(status: KeyStatus, now: datetime) -> ColumnElement[bool]:
    """SQL for the *effective* status at ``now`` (see ``domain.keys.effective_status``)."""
    stored = api_keys.c.status
    expired = and_(api_keys.c.expires_at.is_not(None), api_keys.c.expires_at <= now)
    not_expired = or_(api_keys.c.expires_at.is_(None), api_keys.c.expires_at > now)
    auto_enabled = and_(api_keys.c.auto_enable_at.is_not(None), api_keys.c.auto_enable_at <= now)
    if status is KeyStatus.REVOKED:
        return stored == KeyStatus.REVOKED.value
    if status is KeyStatus.EXPIRED:
        return and_(stored != KeyStatus.REVOKED.value, expired)
    if status is KeyStatus.DISABLED:
        return and_(stored == KeyStatus.DISABLED.value, not_expired, ~auto_enabled)
    return and_(
        not_expired,
        or_(
            stored == KeyStatus.ACTIVE.value, and_(stored == KeyStatus.DISABLED.value, auto_enabled)
        ),
    )


async def _write_tags(
    conn: AsyncConnection, key_id: str, tags: tuple[str, ...], *, replace: bool
) -> None:
    if replace:
        await conn.execute(api_key_tags.delete().where(api_key_tags.c.key_id == key_id))
    if tags:
        await conn.execute(insert(api_key_tags), [{"key_id": key_id, "tag": t} for t in tags])


def _plan_values(plan: PlanRecord) -> dict[str, Any]:
    return {
        "id": plan.id,
        "org_id": plan.org_id,
        "name": plan.name,
        "description": plan.description,
        "policy": plan.policy,
        "created_at": plan.created_at,
        "updated_at": plan.updated_at,
    }


def _plan(row: Row[Any]) -> PlanRecord:
    return PlanRecord(
        id=row.id,
        org_id=row.org_id,
        name=row.name,
        description=row.description,
        policy=row.policy,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _usage_values(entry: UsageEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "org_id": entry.org_id,
        "key_id": entry.key_id,
        "idempotency_key": entry.idempotency_key,
        "fingerprint": entry.fingerprint,
        "request_id": entry.request_id,
        "model": entry.model,
        "cost_micros": entry.cost_micros,
        "input_tokens": entry.input_tokens,
        "output_tokens": entry.output_tokens,
        "latency_ms": entry.latency_ms,
        "status": entry.status,
        "recorded_at": entry.recorded_at,
    }


def _project_values(project: Project) -> dict[str, Any]:
    return {
        "id": project.id,
        "org_id": project.org_id,
        "name": project.name,
        "key_prefix": project.key_prefix,
        "created_at": project.created_at,
    }


def _project(row: Row[Any]) -> Project:
    return Project(row.id, row.org_id, row.name, row.key_prefix, row.created_at)


def _key_values(record: KeyRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "org_id": record.org_id,
        "project_id": record.project_id,
        "hash": record.hash,
        "start": record.start,
        "end": record.end,
        "name": record.name,
        "label": record.label,
        "description": record.description,
        "owner": record.owner,
        "environment": record.environment.value,
        "tags": list(record.tags),
        "meta": record.metadata,
        "scopes": list(record.scopes),
        "status": record.status.value,
        "disabled_reason": record.disabled_reason,
        "auto_enable_at": record.auto_enable_at,
        "revoked_reason": record.revoked_reason,
        "revoked_at": record.revoked_at,
        "expires_at": record.expires_at,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "last_used_at": record.last_used_at,
        "plan_id": record.plan_id,
        "policy": record.policy,
    }


def _key(row: Row[Any]) -> KeyRecord:
    m = row._mapping
    return KeyRecord(
        id=m["id"],
        org_id=m["org_id"],
        project_id=m["project_id"],
        hash=m["hash"],
        start=m["start"],
        end=m["end"],
        name=m["name"],
        environment=Environment(m["environment"]),
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        status=KeyStatus(m["status"]),
        label=m["label"],
        description=m["description"],
        owner=m["owner"],
        tags=tuple(m["tags"]),
        metadata=m["meta"],
        scopes=tuple(m["scopes"]),
        expires_at=m["expires_at"],
        disabled_reason=m["disabled_reason"],
        auto_enable_at=m["auto_enable_at"],
        revoked_reason=m["revoked_reason"],
        revoked_at=m["revoked_at"],
        last_used_at=m["last_used_at"],
        plan_id=m["plan_id"],
        policy=m["policy"],
    )


def _management_key(row: Row[Any]) -> ManagementKeyRecord:
    return ManagementKeyRecord(
        id=row.id,
        org_id=row.org_id,
        project_id=row.project_id,
        hash=row.hash,
        start=row.start,
        end=row.end,
        name=row.name,
        scopes=tuple(row.scopes),
        created_at=row.created_at,
        created_by=row.created_by,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )


async def _ensure_default_project(conn: AsyncConnection, org_id: str, now: datetime) -> Project:
    """The org's project named ``default`` (unique per org), inserted if missing."""
    row = (
        await conn.execute(
            select(projects).where(
                projects.c.org_id == org_id, projects.c.name == DEFAULT_PROJECT_NAME
            )
        )
    ).first()
    if row is not None:
        return _project(row)
    project = Project(ids.new_id("proj"), org_id, DEFAULT_PROJECT_NAME, DEFAULT_PREFIX, now)
    await conn.execute(insert(projects).values(**_project_values(project)))
    return project
