"""``SqlVaultStore``: upstream credentials and their leases on SQLite and PostgreSQL.

Leases and ``ok`` releases are written in batches (:meth:`SqlVaultStore.lease_batch`; the
service queues concurrent requests into them): one transaction locks the matching
credentials, reads them with their live lease counts, lets :func:`keyplane.domain.vault.choose`
pick for each lease in turn (each seeing the slots and uses the earlier ones took), inserts
the leases and counts the uses with one statement each, deletes the released leases, commits.

- PostgreSQL: ``SELECT ... FOR UPDATE`` (in id order, so two batches never deadlock) makes
  concurrent batches of the same credentials take turns across every instance; under READ
  COMMITTED each statement after the lock sees the leases committed before it. Counting
  happens after the lock, in its own statement: a count taken in the locking statement would
  come from before the wait. The guarantees (never more than ``max_concurrent`` live leases,
  never more uses than the limits) are exact with no Redis involved. Live leases are counted
  only when a candidate has a concurrency limit (nothing else depends on them). A batch of
  releases only is one autocommitted statement.
- SQLite: the store's writer lock serialises writers in this process, and the transaction
  starts with a write (matching no row) so that SQLite's own write lock is held from the
  first read, which keeps other processes sharing the one file exact too; the candidates and
  their live lease counts are then read in one statement. The batch's statements run as one
  function on the driver's thread (``store/vault_sqlite.py``); the statement-by-statement
  path here is the reference it is tested against.

Live leases are rows whose ``expires_at`` is still ahead: an abandoned lease stops counting
when it expires, with no sweeper. Lock order is always credential rows, then lease rows; an
``ok`` release locks lease rows only and waits for nothing else, so none can deadlock.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Select

from keyplane.domain.changes import Journal
from keyplane.domain.vault import Choice, CredentialRecord, CredentialStatus
from keyplane.errors import NotFoundError
from keyplane.store.tables import vault_credentials, vault_leases
from keyplane.store.tenancy import TenancyStore
from keyplane.store.unit import UnitOfWork
from keyplane.store.vault_base import (
    CredentialFilter,
    CredentialMutation,
    Lease,
    LeaseAsk,
    ReleaseScope,
    VaultStore,
)
from keyplane.store.vault_sql import (
    CLAIM_SQLITE_WRITER,
    COUNT_USE,
    cached,
    count_use_values,
    credential_conditions,
    credential_record,
    credential_values,
    decide,
    leases_reached,
    live_lease_counts,
    save_credential,
)
from keyplane.store.vault_sqlite import SqliteLeaseBatches

__all__ = [
    "CredentialFilter",
    "CredentialMutation",
    "Lease",
    "LeaseAsk",
    "ReleaseScope",
    "SqlVaultStore",
    "VaultStore",
]


class SqlVaultStore:
    """Credentials and leases over the shared unit of work (its engine and writer lock)."""

    def __init__(self, unit: UnitOfWork, tenancy: TenancyStore, *, one_trip: bool = True) -> None:
        """``one_trip=False`` keeps SQLite's lease batches on the reference path (statement
        by statement through SQLAlchemy; tests compare the two)."""
        self._unit = unit
        self._tenancy = tenancy
        self._is_sqlite = unit.is_sqlite
        self._lock_statements: dict[tuple[str, CredentialFilter], Select[Any]] = {}
        self._one_trip = (
            SqliteLeaseBatches(unit.engine.dialect) if unit.is_sqlite and one_trip else None
        )

    # -- credentials ------------------------------------------------------------------------

    async def create_credentials(
        self, records: Sequence[CredentialRecord], journal: Journal | None = None
    ) -> None:
        """Insert credentials in one transaction: all of them or none (with what ``journal``
        recorded)."""
        if not records:
            return
        async with self._unit.write(journal) as conn:
            await conn.execute(insert(vault_credentials), [credential_values(r) for r in records])

    async def has_project(self, org_id: str, project_id: str) -> bool:
        return await self._tenancy.get_project(org_id, project_id) is not None

    async def get_credential(
        self, org_id: str, credential_id: str, seen_from_project: str | None = None
    ) -> CredentialRecord | None:
        """The credential, if it exists and a caller bound to ``seen_from_project`` reaches it
        (``None`` either way: the caller cannot tell the two apart)."""
        conditions = credential_conditions(
            org_id, CredentialFilter(seen_from_project=seen_from_project), is_sqlite=self._is_sqlite
        )
        async with self._unit.read() as conn:
            row = (
                await conn.execute(
                    select(vault_credentials).where(
                        *conditions, vault_credentials.c.id == credential_id
                    )
                )
            ).first()
        return None if row is None else credential_record(row)

    async def list_credentials(
        self,
        org_id: str,
        filters: CredentialFilter,
        now: datetime,
        after: str | None,
        limit: int,
    ) -> list[tuple[CredentialRecord, int]]:
        """Credentials in id order after ``after``, each with its live lease count."""
        found: list[tuple[CredentialRecord, int]] = []
        cursor = after
        # has_capacity depends on live leases and the time, so it is applied here, reading
        # on in batches until the page is full.
        batch = limit if filters.has_capacity is None else max(limit, 200)
        async with self._unit.read() as conn:
            while len(found) < limit:
                conditions = credential_conditions(org_id, filters, is_sqlite=self._is_sqlite)
                if cursor is not None:
                    conditions.append(vault_credentials.c.id > cursor)
                rows = (
                    await conn.execute(
                        select(vault_credentials)
                        .where(*conditions)
                        .order_by(vault_credentials.c.id)
                        .limit(batch)
                    )
                ).all()
                records = [credential_record(row) for row in rows]
                live = await live_lease_counts(conn, [r.id for r in records], now)
                for record in records:
                    count = live.get(record.id, (0, None))[0]
                    if (
                        filters.has_capacity is None
                        or record.has_capacity(count, now) is filters.has_capacity
                    ):
                        found.append((record, count))
                if len(rows) < batch:
                    break
                cursor = records[-1].id
        return found[:limit]

    async def live_leases(self, credential_ids: Sequence[str], now: datetime) -> dict[str, int]:
        async with self._unit.read() as conn:
            live = await live_lease_counts(conn, credential_ids, now)
        return {key: count for key, (count, _) in live.items()}

    async def mutate_credential(
        self,
        org_id: str,
        credential_id: str,
        mutation: CredentialMutation,
        journal: Journal | None = None,
    ) -> CredentialRecord:
        """Apply ``mutation`` to the locked record (it may record into ``journal``, written
        with it); NotFoundError when there is none."""
        async with self._unit.write(journal) as conn:
            await self._claim_sqlite_writer(conn)
            row = (
                await conn.execute(
                    select(vault_credentials)
                    .where(
                        vault_credentials.c.org_id == org_id,
                        vault_credentials.c.id == credential_id,
                    )
                    .with_for_update()
                )
            ).first()
            if row is None:
                raise NotFoundError("no such credential", code="CREDENTIAL_NOT_FOUND")
            updated = mutation(credential_record(row))
            await save_credential(conn, updated)
        return updated

    async def delete_credential(
        self, org_id: str, credential_id: str, journal: Journal | None = None
    ) -> None:
        """Remove a credential and its leases for good (a hard delete)."""
        async with self._unit.write(journal) as conn:
            await conn.execute(
                delete(vault_leases).where(vault_leases.c.credential_id == credential_id)
            )
            result = await conn.execute(
                delete(vault_credentials).where(
                    vault_credentials.c.org_id == org_id,
                    vault_credentials.c.id == credential_id,
                )
            )
            if result.rowcount == 0:
                raise NotFoundError("no such credential", code="CREDENTIAL_NOT_FOUND")

    # -- leases -----------------------------------------------------------------------------

    async def lease_batch(
        self,
        asks: Sequence[LeaseAsk],
        releases: Mapping[ReleaseScope, Sequence[str]],
        now: datetime,
        rng: random.Random | None = None,
    ) -> tuple[list[Lease | Choice | Exception], dict[str, CredentialRecord]]:
        """Grant leases and end ``ok`` leases in ONE transaction (group commit).

        Every ask must have the same ``org_id`` and ``filters``: the transaction locks those
        credentials once (in id order, like a single lease), counts their live leases once,
        then decides each ask in turn in memory, each seeing the slots and uses the earlier
        ones took, so the limits hold exactly as if the asks had come one by one. The leases
        are inserted and the counters written with one statement each. Then the releases
        (lease ids per organization and caller's project) delete their lease rows: after the
        credential locks, so the lock order stays credential -> lease. One commit (one fsync
        on SQLite) acknowledges everything.

        An ask whose secret does not open gets that exception as its answer, and takes no
        slot or use; the others are unaffected. A database failure fails the whole batch
        (nothing is committed); the caller may retry the requests one by one.

        Returns:
            Per ask, in order: its Lease, the refusing Choice, or the exception its
            ``open_secret`` raised; and the credential of each released lease id (an id
            missing from it was not live: already released, or expired and cleared).
        """
        if not asks and not self._is_sqlite:
            return [], await self._release_autocommit(releases)
        if self._one_trip is not None:
            lock = None
            if asks:
                org_id, only_active = asks[0].org_id, _only_active(asks)
                # Its own cache holds the compiled statement: the Select is built on a miss.
                lock = (
                    self._lock_key(org_id, only_active),
                    lambda: self._build_lock_statement(org_id, only_active),
                )
            async with self._unit.write() as conn:
                return await self._one_trip.run(conn, lock, asks, releases, now, rng)
        async with self._unit.write() as conn:
            # SQLite's write lock: _lock_and_count claims it; a release's DELETE is a write.
            answers = await self._lease_many(conn, asks, now, rng)
            released: dict[str, CredentialRecord] = {}
            for scope, lease_ids in releases.items():
                released.update(await self._release_many(conn, scope, lease_ids))
        return answers, released

    async def _release_autocommit(
        self, releases: Mapping[ReleaseScope, Sequence[str]]
    ) -> dict[str, CredentialRecord]:
        """PostgreSQL, releases only: each organization's releases are one statement (a CTE)
        committed on its own (autocommit), which saves the BEGIN and COMMIT round trips. It
        is as durable: the server commits (and flushes its log) before it answers."""
        released: dict[str, CredentialRecord] = {}
        async with self._unit.autocommit() as conn:
            for scope, lease_ids in releases.items():
                released.update(await self._release_many(conn, scope, lease_ids))
        return released

    async def _lease_many(
        self,
        conn: AsyncConnection,
        asks: Sequence[LeaseAsk],
        now: datetime,
        rng: random.Random | None,
    ) -> list[Lease | Choice | Exception]:
        if not asks:
            return []
        org_id, only_active = asks[0].org_id, _only_active(asks)
        records, live = await self._lock_and_count(conn, org_id, only_active, now)
        decided = decide(asks, org_id, records, live, now, rng)
        answers, new_leases, used, sweep = (
            decided.answers,
            decided.new_leases,
            decided.used,
            decided.sweep,
        )
        if sweep:
            # Housekeeping only (expired leases no longer count), while the credential
            # rows are ours: the lock order stays credential -> lease.
            await conn.execute(
                delete(vault_leases).where(
                    vault_leases.c.credential_id.in_(sorted(sweep)),
                    vault_leases.c.expires_at <= now,
                )
            )
        if not new_leases:
            return answers
        uses = [count_use_values(r) for r in used.values()]
        if self._is_sqlite:
            await conn.execute(insert(vault_leases), new_leases)
            await conn.execute(COUNT_USE, uses)
            return answers
        # PostgreSQL: one round trip for the common case of one credential used. The
        # leases' INSERT rides as a CTE of that credential's counter UPDATE (a data-modifying
        # CTE runs whether or not the main statement reads it).
        first, *rest = uses
        key = first.pop("key")
        await conn.execute(
            update(vault_credentials)
            .where(vault_credentials.c.id == key)
            .values(**first)
            .add_cte(insert(vault_leases).values(new_leases).cte("new_leases"))
        )
        if rest:
            await conn.execute(COUNT_USE, rest)
        return answers

    async def _lock_and_count(
        self, conn: AsyncConnection, org_id: str, filters: CredentialFilter, now: datetime
    ) -> tuple[dict[str, CredentialRecord], dict[str, tuple[int, datetime | None]]]:
        """Lock the matching credentials; read them (in id order) and their live leases.

        SQLite: the write lock, then one statement reading the candidates with their live
        lease count and earliest expiry as correlated subqueries, current under that lock.
        PostgreSQL: ``SELECT ... FOR UPDATE`` in id order, then the count when a limit needs
        it.
        """
        query = self._lock_statement(org_id, filters)
        if self._is_sqlite:
            await self._claim_sqlite_writer(conn)
            rows = (await conn.execute(query, {"now": now})).all()
            records = {r.id: r for r in map(credential_record, rows)}
            live = {
                row._mapping["id"]: (int(row._mapping["live_count"]), row._mapping["earliest"])
                for row in rows
                if row._mapping["live_count"]
            }
            return records, live
        records = {r.id: r for r in map(credential_record, (await conn.execute(query)).all())}
        if all(record.max_concurrent is None for record in records.values()):
            # Live leases only matter against a concurrency limit (capacity, and the retry
            # hint of ALL_AT_MAX_CONCURRENCY): with none, skip the count and its round trip.
            return records, {}
        # Counted after the lock, in a statement of its own: a count inside the locking
        # statement would come from its snapshot, taken before any wait for the locks.
        return records, await live_lease_counts(conn, list(records), now)

    @staticmethod
    def _lock_key(org_id: str, filters: CredentialFilter) -> tuple[str, CredentialFilter] | None:
        """The statement caches' key; None for a filter holding lists (not hashable: its
        statement is built every time)."""
        try:
            hash(filters)
        except TypeError:
            return None
        return (org_id, filters)

    def _lock_statement(self, org_id: str, filters: CredentialFilter) -> Select[Any]:
        """The statement that reads (and on PostgreSQL locks) a filter's candidates, built
        once per (organization, filter) and reused: building and keying a statement costs
        more Python time than a lease's other work."""
        return cached(
            self._lock_statements,
            self._lock_key(org_id, filters),
            lambda: self._build_lock_statement(org_id, filters),
        )

    def _build_lock_statement(self, org_id: str, filters: CredentialFilter) -> Select[Any]:
        """On SQLite the statement also reads the live lease count and earliest expiry
        (correlated subqueries, bound ``now``), after the write lock has been claimed, so
        they are current."""
        table = vault_credentials
        conditions = credential_conditions(org_id, filters, is_sqlite=self._is_sqlite)
        if self._is_sqlite:
            live_leases = (
                vault_leases.c.credential_id == table.c.id,
                vault_leases.c.expires_at > bindparam("now", type_=vault_leases.c.expires_at.type),
            )
            count = select(func.count()).where(*live_leases).scalar_subquery()
            earliest = (
                select(func.min(vault_leases.c.expires_at)).where(*live_leases).scalar_subquery()
            )
            return (
                select(table, count.label("live_count"), earliest.label("earliest"))
                .where(*conditions)
                .order_by(table.c.id)
            )
        return select(table).where(*conditions).order_by(table.c.id).with_for_update()

    async def _release_many(
        self, conn: AsyncConnection, scope: ReleaseScope, lease_ids: Sequence[str]
    ) -> dict[str, CredentialRecord]:
        """End ``ok`` leases: delete the lease rows (no credential lock is taken or waited
        for) and read their credentials; one statement on PostgreSQL (a CTE), two on SQLite.

        Only leases of credentials the caller reaches are ended: another's lease id ends
        nothing and reads as unknown."""
        if not lease_ids:
            return {}
        org_id, seen_from_project = scope
        deleting = (
            delete(vault_leases)
            .where(
                vault_leases.c.org_id == org_id,
                vault_leases.c.id.in_(sorted(set(lease_ids))),
                *leases_reached(org_id, seen_from_project),
            )
            .returning(vault_leases.c.id.label("lease_id"), vault_leases.c.credential_id)
        )
        if not self._is_sqlite:
            ended = deleting.cte("ended")
            rows = (
                await conn.execute(
                    select(ended.c.lease_id, vault_credentials).join_from(
                        ended, vault_credentials, vault_credentials.c.id == ended.c.credential_id
                    )
                )
            ).all()
            return {row._mapping["lease_id"]: credential_record(row) for row in rows}
        gone = (await conn.execute(deleting)).all()
        if not gone:
            return {}
        rows = (
            await conn.execute(
                select(vault_credentials).where(
                    vault_credentials.c.id.in_(sorted({credential_id for _, credential_id in gone}))
                )
            )
        ).all()
        records = {record.id: record for record in map(credential_record, rows)}
        return {lease_id: records[credential_id] for lease_id, credential_id in gone}

    async def _claim_sqlite_writer(self, conn: AsyncConnection) -> None:
        """On SQLite, take the database's write lock before reading (BEGIN is deferred).

        Another process sharing the file then cannot write between our read and our write,
        and we never need to upgrade a read lock, which SQLite refuses at once (busy) when
        the file changed since our read began.
        """
        if self._is_sqlite:
            await conn.execute(CLAIM_SQLITE_WRITER)

    async def release(
        self,
        scope: ReleaseScope,
        lease_id: str,
        mutation: CredentialMutation,
        journal: Journal | None = None,
    ) -> CredentialRecord:
        """End a lease with an outcome: apply ``mutation`` to its credential first (it may
        record into ``journal``, written with it).

        (``ok`` releases go through :meth:`lease_batch`.)

        Raises:
            NotFoundError: no such lease (already released, or expired and cleared), or its
                credential is out of the caller's reach (the same answer: nothing leaks).
        """
        org_id, seen_from_project = scope
        async with self._unit.write(journal) as conn:
            await self._claim_sqlite_writer(conn)
            credential_id = (
                await conn.execute(
                    select(vault_leases.c.credential_id).where(
                        vault_leases.c.org_id == org_id,
                        vault_leases.c.id == lease_id,
                        *leases_reached(org_id, seen_from_project),
                    )
                )
            ).scalar_one_or_none()
            if credential_id is None:
                raise NotFoundError("no such lease", code="LEASE_NOT_FOUND")
            # Credential first, then the lease: the same lock order as lease().
            row = (
                await conn.execute(
                    select(vault_credentials)
                    .where(vault_credentials.c.id == credential_id)
                    .with_for_update()
                )
            ).one()
            record = mutation(credential_record(row))
            await save_credential(conn, record)
            result = await conn.execute(
                delete(vault_leases).where(
                    vault_leases.c.org_id == org_id, vault_leases.c.id == lease_id
                )
            )
            if result.rowcount == 0:
                # Released by someone else between our read and our delete.
                raise NotFoundError("no such lease", code="LEASE_NOT_FOUND")
        return record


def _only_active(asks: Sequence[LeaseAsk]) -> CredentialFilter:
    """The batch's one filter, for active credentials only."""
    org_id, filters = asks[0].org_id, asks[0].filters
    if any(a.org_id != org_id or a.filters != filters for a in asks):
        raise ValueError("a lease batch is for one organization and one filter")
    return dataclasses.replace(filters, status=CredentialStatus.ACTIVE)
