"""``SqlStore``: the storage contract on SQLite (aiosqlite) and PostgreSQL (asyncpg)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import (
    String,
    Table,
    and_,
    bindparam,
    case,
    cast,
    event,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql import ColumnElement

from keyplane.domain import ids, validation
from keyplane.domain.keyformat import DEFAULT_PREFIX
from keyplane.domain.keys import Environment, KeyRecord, KeyStatus
from keyplane.domain.tenancy import ManagementKeyRecord, Organization, Project
from keyplane.errors import ConflictError, NotFoundError, StorageError, ValidationError
from keyplane.settings import sqlite_path
from keyplane.store.base import KeyFilter, KeyMutation, SecretMatch
from keyplane.store.tables import (
    api_key_secrets,
    api_key_tags,
    api_keys,
    management_keys,
    organizations,
    projects,
)

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
        async_url, pool_size=10, max_overflow=20, pool_pre_ping=True, connect_args=connect_args
    )


def _sqlite_engine(async_url: str) -> AsyncEngine:
    path = sqlite_path(async_url)
    if path is None:
        engine = create_async_engine(
            async_url, poolclass=StaticPool, connect_args={"check_same_thread": False}
        )
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(async_url, connect_args={"timeout": 30})

    @event.listens_for(engine.sync_engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the driver so that BEGIN is emitted where
        # SQLAlchemy begins, and reads inside a write transaction see a consistent snapshot.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
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
            proj_row = (
                await conn.execute(
                    select(projects).where(
                        projects.c.org_id == org.id, projects.c.name == DEFAULT_PROJECT_NAME
                    )
                )
            ).first()
            if proj_row is None:
                project = Project(
                    ids.new_id("proj"), org.id, DEFAULT_PROJECT_NAME, DEFAULT_PREFIX, now
                )
                await conn.execute(insert(projects).values(**_project_values(project)))
            else:
                project = _project(proj_row)
        return org, project

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

    async def create_key(self, record: KeyRecord) -> KeyRecord:
        async with self._write() as conn:
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
            select(api_keys, api_key_secrets.c.valid_until.label("secret_valid_until"))
            .join(api_key_secrets, api_key_secrets.c.key_id == api_keys.c.id)
            .where(api_key_secrets.c.hash == secret_hash)
        )
        async with self._read() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        return SecretMatch(_key(row), row.secret_valid_until)

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
        """The text form of a metadata value, the same on every database.

        Strings compare as themselves, numbers as their JSON text, booleans as ``true`` /
        ``false`` (SQLite's ``json_extract`` alone would give 1 / 0).
        """
        if not all(validation.METADATA_PATH_SEGMENT.fullmatch(part) for part in path):
            raise ValidationError("invalid metadata path", code="INVALID_FILTER")
        if not self._is_sqlite:
            text: ColumnElement[str] = api_keys.c.meta[path].as_string()
            return text
        json_path = "$" + "".join(f'."{part}"' for part in path)
        kind = func.json_type(api_keys.c.meta, json_path)
        return case(
            (kind == "true", literal("true")),
            (kind == "false", literal("false")),
            else_=cast(func.json_extract(api_keys.c.meta, json_path), String),
        )

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


# -- row mapping ------------------------------------------------------------------------------


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
