"""Management keys (the operator's keys to the management API): :class:`ManagementKeyStore`
and its SQL implementation."""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Row

from keyplane.domain.changes import Journal
from keyplane.domain.tenancy import ManagementKeyRecord
from keyplane.errors import NotFoundError
from keyplane.store.keys import touch_last_used
from keyplane.store.tables import management_keys
from keyplane.store.unit import UnitOfWork


class ManagementKeyStore(Protocol):
    """Management keys. Writes are one transaction each."""

    async def create(
        self, record: ManagementKeyRecord, journal: Journal | None = None
    ) -> ManagementKeyRecord:
        """Insert a management key; ConflictError when its id or hash is taken."""
        ...

    async def find_by_secret(self, secret_hash: str) -> ManagementKeyRecord | None:
        """The key a presented secret belongs to, in any organization, revoked ones too
        (the caller checks ``revoked_at``)."""
        ...

    async def get(self, org_id: str, key_id: str) -> ManagementKeyRecord | None:
        """The key, if it exists in ``org_id`` (another org's key is ``None``)."""
        ...

    async def list_page(
        self, org_id: str, after: str | None, limit: int, project_id: str | None = None
    ) -> builtins.list[ManagementKeyRecord]:
        """Up to ``limit`` keys of ``org_id`` in id order after ``after``; only those bound
        to ``project_id`` when it is given."""
        ...

    async def revoke(
        self, org_id: str, key_id: str, now: datetime, journal: Journal | None = None
    ) -> ManagementKeyRecord:
        """Mark the key revoked at ``now``, atomically; revoking twice keeps the first time.
        NotFoundError when it is not in ``org_id``."""
        ...

    async def count(self) -> int:
        """How many management keys exist, in every organization, revoked ones included."""
        ...

    async def touch(self, last_used: Mapping[str, datetime]) -> None:
        """Advance ``last_used_at`` of many keys in one transaction (never moves it back)."""
        ...


class SqlManagementKeyStore:
    """:class:`ManagementKeyStore` over the shared unit of work."""

    def __init__(self, unit: UnitOfWork) -> None:
        self._unit = unit

    async def create(
        self, record: ManagementKeyRecord, journal: Journal | None = None
    ) -> ManagementKeyRecord:
        async with self._unit.write(journal) as conn:
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

    async def find_by_secret(self, secret_hash: str) -> ManagementKeyRecord | None:
        async with self._unit.read() as conn:
            row = (
                await conn.execute(
                    select(management_keys).where(management_keys.c.hash == secret_hash)
                )
            ).first()
        return None if row is None else _management_key(row)

    async def get(self, org_id: str, key_id: str) -> ManagementKeyRecord | None:
        async with self._unit.read() as conn:
            row = (
                await conn.execute(
                    select(management_keys).where(
                        management_keys.c.org_id == org_id, management_keys.c.id == key_id
                    )
                )
            ).first()
        return None if row is None else _management_key(row)

    async def list_page(
        self, org_id: str, after: str | None, limit: int, project_id: str | None = None
    ) -> builtins.list[ManagementKeyRecord]:
        conditions = [management_keys.c.org_id == org_id]
        if after is not None:
            conditions.append(management_keys.c.id > after)
        if project_id is not None:
            conditions.append(management_keys.c.project_id == project_id)
        query = (
            select(management_keys).where(*conditions).order_by(management_keys.c.id).limit(limit)
        )
        async with self._unit.read() as conn:
            return [_management_key(row) for row in await conn.execute(query)]

    async def revoke(
        self, org_id: str, key_id: str, now: datetime, journal: Journal | None = None
    ) -> ManagementKeyRecord:
        async with self._unit.write(journal) as conn:
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

    async def count(self) -> int:
        async with self._unit.read() as conn:
            count = (await conn.execute(select(func.count()).select_from(management_keys))).scalar()
        return int(count or 0)

    async def touch(self, last_used: Mapping[str, datetime]) -> None:
        await touch_last_used(self._unit, management_keys, last_used)


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
