"""What a (caller, ``Idempotency-Key``) made: :class:`IdempotencyStore` and its SQL
implementation. Records are written together with the object they made (see
``SqlKeyStore.create``), through :func:`insert_idempotency`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from keyplane.store.tables import idempotency_records
from keyplane.store.unit import UnitOfWork


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """The object a (caller, ``Idempotency-Key``) made, and a digest of the request."""

    org_id: str
    principal_id: str
    #: SHA-256 of the presented Idempotency-Key (the key itself is never stored).
    key_digest: str
    operation: str
    fingerprint: str
    object_id: str
    created_at: datetime
    #: The created object's secret, sealed (keyplane.domain.sealing); erased after the window.
    sealed_secret: str | None = None


class IdempotencyStore(Protocol):
    """Idempotency records, scoped to one caller (organization and principal)."""

    async def get(
        self, org_id: str, principal_id: str, key_digest: str
    ) -> IdempotencyRecord | None:
        """What an earlier request of this caller with this Idempotency-Key made, if any;
        another caller's record (even in the same organization) is never returned."""
        ...

    async def erase_secrets(
        self, created_before: datetime, org_id: str | None = None, principal_id: str | None = None
    ) -> int:
        """Erase the sealed secrets of records made before ``created_before``; count them.

        Narrowed to one caller's records when ``org_id`` and ``principal_id`` are given. The
        records stay: a late retry must still be recognised, and refused. One transaction;
        a record erased already is not counted again.
        """
        ...


async def insert_idempotency(conn: AsyncConnection, record: IdempotencyRecord) -> None:
    """Insert ``record`` in the caller's transaction; its unique key makes a concurrent
    retry fail there (ConflictError when the transaction ends)."""
    await conn.execute(
        insert(idempotency_records).values(
            org_id=record.org_id,
            principal_id=record.principal_id,
            idempotency_key=record.key_digest,
            operation=record.operation,
            fingerprint=record.fingerprint,
            object_id=record.object_id,
            created_at=record.created_at,
            sealed_secret=record.sealed_secret,
        )
    )


class SqlIdempotencyStore:
    """:class:`IdempotencyStore` over the shared unit of work."""

    def __init__(self, unit: UnitOfWork) -> None:
        self._unit = unit

    async def get(
        self, org_id: str, principal_id: str, key_digest: str
    ) -> IdempotencyRecord | None:
        table = idempotency_records.c
        async with self._unit.read() as conn:
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

    async def erase_secrets(
        self, created_before: datetime, org_id: str | None = None, principal_id: str | None = None
    ) -> int:
        table = idempotency_records.c
        conditions = [table.created_at < created_before, table.sealed_secret.is_not(None)]
        if org_id is not None and principal_id is not None:
            conditions += [table.org_id == org_id, table.principal_id == principal_id]
        async with self._unit.write() as conn:
            result = await conn.execute(
                update(idempotency_records).where(*conditions).values(sealed_secret=None)
            )
        return int(result.rowcount or 0)
