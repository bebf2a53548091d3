"""The sealed secrets of the vault, for re-wrapping under a new master key
(``services/vault_rotation.py``): :class:`SealedSecretStore` and its SQL implementation.

Only four columns of ``vault_credentials`` are read or written here (id, org_id,
sealed_secret, master_key_id); no plaintext secret ever passes through.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import and_, func, select, update
from sqlalchemy.exc import SQLAlchemyError

from keyplane.errors import StorageError
from keyplane.store.tables import vault_credentials
from keyplane.store.unit import UnitOfWork


@dataclass(frozen=True, slots=True)
class SealedSecret:
    """One credential's sealed secret and the master key that seals it."""

    credential_id: str
    org_id: str
    sealed_secret: str
    master_key_id: str


@dataclass(frozen=True, slots=True)
class Rewrap:
    """Replace ``old_token`` (sealed with ``old_key_id``) with ``new_token``."""

    credential_id: str
    old_token: str
    old_key_id: str
    new_token: str


class SealedSecretStore(Protocol):
    """Every credential's sealed secret, in every organization (an operator's tool)."""

    async def count_by_key(self) -> dict[str, int]:
        """How many credentials each master key id seals (revoked ones included).

        StorageError when the database cannot be read or has no vault table yet.
        """
        ...

    async def page(
        self, after_id: str, limit: int, not_key: str | None = None
    ) -> list[SealedSecret]:
        """Up to ``limit`` sealed secrets in id order after ``after_id``; only those not
        sealed with ``not_key`` when it is given. A read of its own (no transaction kept)."""
        ...

    async def rewrap(self, changes: Sequence[Rewrap], new_key_id: str) -> int:
        """Apply ``changes`` in one transaction, each as a compare-and-set on both the old
        token and the old key id; return how many rows matched (a row changed meanwhile by
        a server does not match and keeps its newer secret)."""
        ...


class SqlSealedSecretStore:
    """:class:`SealedSecretStore` over a unit of work."""

    def __init__(self, unit: UnitOfWork) -> None:
        self._unit = unit

    async def count_by_key(self) -> dict[str, int]:
        table = vault_credentials.c
        statement = select(table.master_key_id, func.count()).group_by(table.master_key_id)
        async with self._explained(), self._unit.read() as conn:
            rows = (await conn.execute(statement)).all()
        return {str(key_id): int(count) for key_id, count in rows}

    async def page(
        self, after_id: str, limit: int, not_key: str | None = None
    ) -> list[SealedSecret]:
        table = vault_credentials.c
        conditions = [table.id > after_id]
        if not_key is not None:
            conditions.append(table.master_key_id != not_key)
        statement = (
            select(table.id, table.org_id, table.sealed_secret, table.master_key_id)
            .where(*conditions)
            .order_by(table.id)
            .limit(limit)
        )
        async with self._explained(), self._unit.read() as conn:
            rows = (await conn.execute(statement)).all()
        return [
            SealedSecret(
                str(row.id), str(row.org_id), str(row.sealed_secret), str(row.master_key_id)
            )
            for row in rows
        ]

    async def rewrap(self, changes: Sequence[Rewrap], new_key_id: str) -> int:
        table = vault_credentials.c
        matched = 0
        async with self._explained(), self._unit.write() as conn:
            for change in changes:
                result = await conn.execute(
                    update(vault_credentials)
                    .where(
                        and_(
                            table.id == change.credential_id,
                            table.sealed_secret == change.old_token,
                            table.master_key_id == change.old_key_id,
                        )
                    )
                    .values(sealed_secret=change.new_token, master_key_id=new_key_id)
                )
                matched += int(result.rowcount == 1)
        return matched

    @contextlib.asynccontextmanager
    async def _explained(self) -> AsyncIterator[None]:
        """A missing vault table is named, with what to do about it."""
        try:
            yield
        except StorageError as exc:
            cause = exc.__cause__
            text = str(cause).lower() if isinstance(cause, SQLAlchemyError) else ""
            if "vault_credentials" in text and (
                "no such table" in text or "does not exist" in text
            ):
                raise StorageError(
                    "the database has no vault table yet; run `keyplane migrate` first"
                ) from cause
            raise
