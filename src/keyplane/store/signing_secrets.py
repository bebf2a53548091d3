"""Owners' webhook signing secrets: :class:`SigningSecretStore` and its SQL implementation."""

from __future__ import annotations

import builtins
from typing import Any, Protocol

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Row

from keyplane.domain.changes import Journal
from keyplane.domain.signing_secrets import SigningSecretRecord
from keyplane.errors import ConflictError, NotFoundError
from keyplane.store.tables import signing_secrets
from keyplane.store.unit import UnitOfWork


class SigningSecretStore(Protocol):
    """Sealed signing secrets, each in one organization (and optionally one project)."""

    async def create(self, record: SigningSecretRecord, journal: Journal) -> SigningSecretRecord:
        """Insert a record; the journal's changes commit with it."""
        ...

    async def get(self, org_id: str, secret_id: str) -> SigningSecretRecord | None:
        """A record of ``org_id`` by id (another org's is ``None``)."""
        ...

    async def list_page(
        self,
        org_id: str,
        *,
        project_id: str | None,
        owner: str | None,
        after: str | None,
        limit: int,
    ) -> builtins.list[SigningSecretRecord]:
        """Records of ``org_id`` in id order (creation order) after the id ``after``; only
        those of ``project_id`` when it is given, and of ``owner`` when it is given."""
        ...

    async def rotate(
        self, current: SigningSecretRecord, rotated: SigningSecretRecord, journal: Journal
    ) -> SigningSecretRecord:
        """Replace ``current``'s secrets with ``rotated``'s, only if nobody rotated it since
        ``current`` was read (ConflictError ``SIGNING_SECRET_CHANGED`` otherwise; NotFoundError
        ``SIGNING_SECRET_NOT_FOUND`` when it is gone)."""
        ...

    async def delete(self, org_id: str, secret_id: str, journal: Journal) -> None:
        """Delete a record; NotFoundError ``SIGNING_SECRET_NOT_FOUND`` when it is not there."""
        ...


class SqlSigningSecretStore:
    """:class:`SigningSecretStore` over the shared unit of work."""

    def __init__(self, unit: UnitOfWork) -> None:
        self._unit = unit

    async def create(self, record: SigningSecretRecord, journal: Journal) -> SigningSecretRecord:
        async with self._unit.write(journal) as conn:
            await conn.execute(insert(signing_secrets).values(**_values(record)))
        return record

    async def get(self, org_id: str, secret_id: str) -> SigningSecretRecord | None:
        async with self._unit.read() as conn:
            row = (
                await conn.execute(
                    select(signing_secrets).where(
                        signing_secrets.c.org_id == org_id, signing_secrets.c.id == secret_id
                    )
                )
            ).first()
        return None if row is None else _record(row)

    async def list_page(
        self,
        org_id: str,
        *,
        project_id: str | None,
        owner: str | None,
        after: str | None,
        limit: int,
    ) -> builtins.list[SigningSecretRecord]:
        query = select(signing_secrets).where(signing_secrets.c.org_id == org_id)
        if project_id is not None:
            query = query.where(signing_secrets.c.project_id == project_id)
        if owner is not None:
            query = query.where(signing_secrets.c.owner == owner)
        if after is not None:
            query = query.where(signing_secrets.c.id > after)
        query = query.order_by(signing_secrets.c.id).limit(limit)
        async with self._unit.read() as conn:
            return [_record(row) for row in await conn.execute(query)]

    async def rotate(
        self, current: SigningSecretRecord, rotated: SigningSecretRecord, journal: Journal
    ) -> SigningSecretRecord:
        async with self._unit.write(journal) as conn:
            # Compare-and-set on the sealed secret: two concurrent rotations cannot both
            # succeed and silently drop the secret one of them handed out.
            result = await conn.execute(
                update(signing_secrets)
                .where(
                    signing_secrets.c.org_id == current.org_id,
                    signing_secrets.c.id == current.id,
                    signing_secrets.c.sealed_secret == current.sealed_secret,
                )
                .values(
                    sealed_secret=rotated.sealed_secret,
                    previous_sealed_secret=rotated.previous_sealed_secret,
                    previous_expires_at=rotated.previous_expires_at,
                    rotated_at=rotated.rotated_at,
                )
            )
            if result.rowcount == 0:
                exists = (
                    await conn.execute(
                        select(signing_secrets.c.id).where(
                            signing_secrets.c.org_id == current.org_id,
                            signing_secrets.c.id == current.id,
                        )
                    )
                ).first()
                if exists is None:
                    raise NotFoundError(
                        f"no signing secret {current.id!r}", code="SIGNING_SECRET_NOT_FOUND"
                    )
                raise ConflictError(
                    "the signing secret was rotated meanwhile; read it again",
                    code="SIGNING_SECRET_CHANGED",
                )
        return rotated

    async def delete(self, org_id: str, secret_id: str, journal: Journal) -> None:
        async with self._unit.write(journal) as conn:
            result = await conn.execute(
                signing_secrets.delete().where(
                    signing_secrets.c.org_id == org_id, signing_secrets.c.id == secret_id
                )
            )
            if result.rowcount == 0:
                raise NotFoundError(
                    f"no signing secret {secret_id!r}", code="SIGNING_SECRET_NOT_FOUND"
                )


def _values(record: SigningSecretRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "org_id": record.org_id,
        "project_id": record.project_id,
        "owner": record.owner,
        "description": record.description,
        "sealed_secret": record.sealed_secret,
        "previous_sealed_secret": record.previous_sealed_secret,
        "previous_expires_at": record.previous_expires_at,
        "created_at": record.created_at,
        "rotated_at": record.rotated_at,
    }


def _record(row: Row[Any]) -> SigningSecretRecord:
    return SigningSecretRecord(
        id=row.id,
        org_id=row.org_id,
        project_id=row.project_id,
        owner=row.owner,
        description=row.description,
        sealed_secret=row.sealed_secret,
        created_at=row.created_at,
        previous_sealed_secret=row.previous_sealed_secret,
        previous_expires_at=row.previous_expires_at,
        rotated_at=row.rotated_at,
    )
