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
  their live lease counts are then read in one statement.

Live leases are rows whose ``expires_at`` is still ahead: an abandoned lease stops counting
when it expires, with no sweeper. Lock order is always credential rows, then lease rows; an
``ok`` release locks lease rows only and waits for nothing else, so none can deadlock.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Text,
    and_,
    bindparam,
    cast,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Row
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ColumnElement, Select

from keyplane.domain import ids
from keyplane.domain.vault import (
    Candidate,
    Choice,
    CredentialRecord,
    CredentialStatus,
    Strategy,
    choose,
)
from keyplane.errors import NotFoundError, StorageError
from keyplane.store.sql import SqlStore, metadata_text
from keyplane.store.tables import vault_credentials, vault_leases

#: Clear a credential's expired leases on every this many leases of it.
_SWEEP_EVERY = 16
#: Lock statements kept (one per organization and lease filter in use).
_STATEMENT_CACHE_SIZE = 256
#: Count uses of a leased credential; run as one executemany per batch.
_COUNT_USE = (
    update(vault_credentials)
    .where(vault_credentials.c.id == bindparam("key"))
    .values(
        day_start=bindparam("day_start"),
        day_count=bindparam("day_count"),
        month_start=bindparam("month_start"),
        month_count=bindparam("month_count"),
        total_count=bindparam("total_count"),
        last_used_at=bindparam("last_used_at"),
    )
)
#: A write matching no row: takes SQLite's write lock, writes nothing.
_CLAIM = (
    update(vault_credentials).where(vault_credentials.c.id == "").values(id=vault_credentials.c.id)
)
#: A pure change of a locked credential; may raise a KeyplaneError to refuse.
CredentialMutation = Callable[[CredentialRecord], CredentialRecord]
#: Whose ``ok`` releases: (organization id, project the caller is bound to or ``None``).
ReleaseScope = tuple[str, str | None]


@dataclass(frozen=True, slots=True)
class CredentialFilter:
    """Which credentials a list or a lease considers; all given filters must match."""

    provider: str | None = None
    environment: str | None = None
    #: Every one of these tags must be on the credential.
    tags: Sequence[str] = ()
    #: (path segments, expected text value) pairs, from ``metadata.a.b=value``.
    metadata: Sequence[tuple[tuple[str, ...], str]] = field(default_factory=tuple)
    status: CredentialStatus | None = None
    #: ``True``: only those a lease could take now; ``False``: only those it could not.
    has_capacity: bool | None = None
    #: The project the caller is bound to (``None``: an org-wide caller): only credentials
    #: of that project and org-wide ones shared with projects match. Set by the service from
    #: the principal, never from request input; a condition of every selecting and locking
    #: statement, so a lease chooses among reachable credentials only.
    seen_from_project: str | None = None


@dataclass(frozen=True, slots=True)
class LeaseAsk:
    """One lease request of a batch (see :meth:`SqlVaultStore.lease_batch`)."""

    org_id: str
    filters: CredentialFilter
    strategy: Strategy
    #: The lease lasts this long from the batch's ``now``.
    ttl: timedelta
    #: Opens the chosen credential's secret; runs inside the transaction.
    open_secret: Callable[[CredentialRecord], str]


@dataclass(frozen=True, slots=True)
class Lease:
    id: str
    credential: CredentialRecord
    secret: str
    created_at: datetime
    expires_at: datetime


class SqlVaultStore:
    """Credentials and leases, sharing :class:`SqlStore`'s engine and writer lock."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store
        self._is_sqlite = store.engine.dialect.name == "sqlite"
        self._lock_statements: dict[tuple[str, CredentialFilter], Select[Any]] = {}

    # -- credentials ------------------------------------------------------------------------

    async def create_credentials(self, records: Sequence[CredentialRecord]) -> None:
        """Insert credentials in one transaction: all of them or none."""
        if not records:
            return
        async with self._store._write() as conn:
            await conn.execute(insert(vault_credentials), [_values(r) for r in records])

    async def has_project(self, org_id: str, project_id: str) -> bool:
        return await self._store.get_project(org_id, project_id) is not None

    async def get_credential(
        self, org_id: str, credential_id: str, seen_from_project: str | None = None
    ) -> CredentialRecord | None:
        """The credential, if it exists and a caller bound to ``seen_from_project`` reaches it
        (``None`` either way: the caller cannot tell the two apart)."""
        conditions = self._conditions(org_id, CredentialFilter(seen_from_project=seen_from_project))
        async with self._store._read() as conn:
            row = (
                await conn.execute(
                    select(vault_credentials).where(
                        *conditions, vault_credentials.c.id == credential_id
                    )
                )
            ).first()
        return None if row is None else _record(row)

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
        async with self._store._read() as conn:
            while len(found) < limit:
                conditions = self._conditions(org_id, filters)
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
                records = [_record(row) for row in rows]
                live = await _live_leases(conn, [r.id for r in records], now)
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
        async with self._store._read() as conn:
            live = await _live_leases(conn, credential_ids, now)
        return {key: count for key, (count, _) in live.items()}

    async def mutate_credential(
        self, org_id: str, credential_id: str, mutation: CredentialMutation
    ) -> CredentialRecord:
        """Apply ``mutation`` to the locked record; NotFoundError when there is none."""
        async with self._store._write() as conn:
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
            updated = mutation(_record(row))
            await _save(conn, updated)
        return updated

    async def delete_credential(self, org_id: str, credential_id: str) -> None:
        """Remove a credential and its leases for good (a hard delete)."""
        async with self._store._write() as conn:
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
        async with self._store._write() as conn:
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
        try:
            async with self._store.engine.connect() as conn:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                for scope, lease_ids in releases.items():
                    released.update(await self._release_many(conn, scope, lease_ids))
        except SQLAlchemyError as exc:
            raise StorageError("database write failed") from exc
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
        org_id, filters = asks[0].org_id, asks[0].filters
        if any(a.org_id != org_id or a.filters != filters for a in asks):
            raise ValueError("a lease batch is for one organization and one filter")
        only_active = dataclasses.replace(filters, status=CredentialStatus.ACTIVE)
        records, live = await self._lock_and_count(conn, org_id, only_active, now)
        decided = _decide(asks, org_id, records, live, now, rng)
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
        uses = [
            {
                "key": r.id,
                "day_start": r.day_start,
                "day_count": r.day_count,
                "month_start": r.month_start,
                "month_count": r.month_count,
                "total_count": r.total_count,
                "last_used_at": r.last_used_at,
            }
            for r in used.values()
        ]
        if self._is_sqlite:
            await conn.execute(insert(vault_leases), new_leases)
            await conn.execute(_COUNT_USE, uses)
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
            await conn.execute(_COUNT_USE, rest)
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
            records = {r.id: r for r in map(_record, rows)}
            live = {
                row._mapping["id"]: (int(row._mapping["live_count"]), row._mapping["earliest"])
                for row in rows
                if row._mapping["live_count"]
            }
            return records, live
        records = {r.id: r for r in map(_record, (await conn.execute(query)).all())}
        if all(record.max_concurrent is None for record in records.values()):
            # Live leases only matter against a concurrency limit (capacity, and the retry
            # hint of ALL_AT_MAX_CONCURRENCY): with none, skip the count and its round trip.
            return records, {}
        # Counted after the lock, in a statement of its own: a count inside the locking
        # statement would come from its snapshot, taken before any wait for the locks.
        return records, await _live_leases(conn, list(records), now)

    def _lock_statement(self, org_id: str, filters: CredentialFilter) -> Select[Any]:
        """The statement that reads (and on PostgreSQL locks) a filter's candidates.

        Built once per (organization, filter) and reused: building and keying a statement
        costs more Python time than a lease's other work. On SQLite it also reads the live
        lease count and earliest expiry (correlated subqueries, bound ``now``), after the
        write lock has been claimed, so they are current.
        """
        key: tuple[str, CredentialFilter] | None = None
        try:
            cached = self._lock_statements.get((org_id, filters))
            key = (org_id, filters)
        except TypeError:  # a filter holding lists: not hashable, build it every time
            key, cached = None, None
        if cached is not None:
            return cached
        table = vault_credentials
        conditions = self._conditions(org_id, filters)
        query: Select[Any]
        if self._is_sqlite:
            live_leases = (
                vault_leases.c.credential_id == table.c.id,
                vault_leases.c.expires_at > bindparam("now", type_=vault_leases.c.expires_at.type),
            )
            count = select(func.count()).where(*live_leases).scalar_subquery()
            earliest = (
                select(func.min(vault_leases.c.expires_at)).where(*live_leases).scalar_subquery()
            )
            query = (
                select(table, count.label("live_count"), earliest.label("earliest"))
                .where(*conditions)
                .order_by(table.c.id)
            )
        else:
            query = select(table).where(*conditions).order_by(table.c.id).with_for_update()
        if key is not None:
            if len(self._lock_statements) >= _STATEMENT_CACHE_SIZE:
                self._lock_statements.clear()
            self._lock_statements[key] = query
        return query

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
                *self._leases_reached(org_id, seen_from_project),
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
            return {row._mapping["lease_id"]: _record(row) for row in rows}
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
        records = {record.id: record for record in map(_record, rows)}
        return {lease_id: records[credential_id] for lease_id, credential_id in gone}

    async def _claim_sqlite_writer(self, conn: AsyncConnection) -> None:
        """On SQLite, take the database's write lock before reading (BEGIN is deferred).

        Another process sharing the file then cannot write between our read and our write,
        and we never need to upgrade a read lock, which SQLite refuses at once (busy) when
        the file changed since our read began.
        """
        if self._is_sqlite:
            await conn.execute(_CLAIM)

    async def release(
        self,
        scope: ReleaseScope,
        lease_id: str,
        mutation: CredentialMutation,
    ) -> CredentialRecord:
        """End a lease with an outcome: apply ``mutation`` to its credential first.

        (``ok`` releases go through :meth:`lease_batch`.)

        Raises:
            NotFoundError: no such lease (already released, or expired and cleared), or its
                credential is out of the caller's reach (the same answer: nothing leaks).
        """
        org_id, seen_from_project = scope
        async with self._store._write() as conn:
            await self._claim_sqlite_writer(conn)
            credential_id = (
                await conn.execute(
                    select(vault_leases.c.credential_id).where(
                        vault_leases.c.org_id == org_id,
                        vault_leases.c.id == lease_id,
                        *self._leases_reached(org_id, seen_from_project),
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
            record = mutation(_record(row))
            await _save(conn, record)
            result = await conn.execute(
                delete(vault_leases).where(
                    vault_leases.c.org_id == org_id, vault_leases.c.id == lease_id
                )
            )
            if result.rowcount == 0:
                # Released by someone else between our read and our delete.
                raise NotFoundError("no such lease", code="LEASE_NOT_FOUND")
        return record

    # -- queries ----------------------------------------------------------------------------

    def _conditions(self, org_id: str, filters: CredentialFilter) -> list[ColumnElement[bool]]:
        table = vault_credentials
        conditions: list[ColumnElement[bool]] = [table.c.org_id == org_id]
        if filters.seen_from_project is not None:
            conditions.append(_reached_from(filters.seen_from_project))
        if filters.provider is not None:
            conditions.append(table.c.provider == filters.provider)
        if filters.environment is not None:
            conditions.append(table.c.environment == filters.environment)
        if filters.status is not None:
            conditions.append(table.c.status == _stored_status(filters.status))
        for tag in filters.tags:
            conditions.append(self._has_tag(tag))
        for path, value in filters.metadata:
            conditions.append(metadata_text(table.c.meta, path, is_sqlite=self._is_sqlite) == value)
        return conditions

    def _leases_reached(
        self, org_id: str, seen_from_project: str | None
    ) -> list[ColumnElement[bool]]:
        """Conditions on lease rows: their credential is within the caller's reach."""
        if seen_from_project is None:
            return []
        reached = select(vault_credentials.c.id).where(
            vault_credentials.c.org_id == org_id, _reached_from(seen_from_project)
        )
        return [vault_leases.c.credential_id.in_(reached)]

    def _has_tag(self, tag: str) -> ColumnElement[bool]:
        if not self._is_sqlite:
            contains: ColumnElement[bool] = cast(vault_credentials.c.tags, JSONB).contains(
                cast(func.jsonb_build_array(cast(bindparam(None, tag), Text)), JSONB)
            )
            return contains
        elements = func.json_each(vault_credentials.c.tags).table_valued("value")
        return exists(select(1).select_from(elements).where(elements.c.value == tag))


def _reached_from(project_id: str) -> ColumnElement[bool]:
    """SQL of ``CredentialRecord.reachable_from`` for a project-bound caller: the project's
    own credentials, and org-wide ones the operator shared with projects."""
    table = vault_credentials
    return or_(
        table.c.project_id == project_id,
        and_(table.c.project_id.is_(None), table.c.shared_with_projects.is_(true())),
    )


def _stored_status(status: CredentialStatus) -> str:
    # cooling_down is not stored: it is active with a cool-down running.
    if status is CredentialStatus.COOLING_DOWN:
        return CredentialStatus.ACTIVE.value
    return status.value


@dataclass(slots=True)
class _Decided:
    answers: list[Lease | Choice | Exception] = field(default_factory=list)
    new_leases: list[dict[str, Any]] = field(default_factory=list)
    used: dict[str, CredentialRecord] = field(default_factory=dict)
    sweep: set[str] = field(default_factory=set)


def _decide(
    asks: Sequence[LeaseAsk],
    org_id: str,
    locked: Mapping[str, CredentialRecord],
    counted: Mapping[str, tuple[int, datetime | None]],
    now: datetime,
    rng: random.Random | None,
) -> _Decided:
    """Decide the asks of a batch in turn, in memory, each seeing what the earlier took."""
    records, live, decided = dict(locked), dict(counted), _Decided()
    answers, new_leases, used, sweep = (
        decided.answers,
        decided.new_leases,
        decided.used,
        decided.sweep,
    )
    for ask in asks:
        candidates = [Candidate(r, *live.get(r.id, (0, None))) for r in records.values()]
        choice = choose(candidates, ask.strategy, now, rng)
        if choice.record is None:
            answers.append(choice)
            continue
        chosen = choice.record
        try:
            secret = ask.open_secret(chosen)
        except Exception as exc:  # its own answer; no slot or use taken
            answers.append(exc)
            continue
        if chosen.total_count % _SWEEP_EVERY == 0:
            sweep.add(chosen.id)
        after = chosen.used_once(now)
        records[chosen.id] = used[chosen.id] = after
        count, earliest = live.get(chosen.id, (0, None))
        expires_at = now + ask.ttl
        live[chosen.id] = (
            count + 1,
            expires_at if earliest is None else min(earliest, expires_at),
        )
        lease_id = ids.new_id("lease")
        new_leases.append(
            {
                "id": lease_id,
                "org_id": org_id,
                "credential_id": chosen.id,
                "created_at": now,
                "expires_at": expires_at,
            }
        )
        answers.append(Lease(lease_id, after, secret, now, expires_at))
    return decided


async def _live_leases(
    conn: AsyncConnection, credential_ids: Sequence[str], now: datetime
) -> dict[str, tuple[int, datetime | None]]:
    """Live lease count and earliest expiry per credential."""
    if not credential_ids:
        return {}
    rows = await conn.execute(
        select(
            vault_leases.c.credential_id,
            func.count(),
            func.min(vault_leases.c.expires_at),
        )
        .where(
            and_(
                vault_leases.c.credential_id.in_(list(credential_ids)),
                vault_leases.c.expires_at > now,
            )
        )
        .group_by(vault_leases.c.credential_id)
    )
    result: dict[str, tuple[int, datetime | None]] = {}
    for credential_id, count, earliest in rows:
        result[credential_id] = (int(count), earliest)
    return result


async def _save(conn: AsyncConnection, record: CredentialRecord) -> None:
    values = _values(record)
    for immutable in ("id", "org_id", "created_at"):
        values.pop(immutable)
    await conn.execute(
        update(vault_credentials).where(vault_credentials.c.id == record.id).values(**values)
    )


def _values(record: CredentialRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "org_id": record.org_id,
        "provider": record.provider,
        "alias": record.alias,
        "project_id": record.project_id,
        "shared_with_projects": record.shared_with_projects,
        "sealed_secret": record.sealed_secret,
        "master_key_id": record.master_key_id,
        "secret_hint": record.secret_hint,
        "environment": record.environment,
        "tags": list(record.tags),
        "meta": record.metadata,
        "weight": record.weight,
        "daily_limit": record.daily_limit,
        "monthly_limit": record.monthly_limit,
        "max_concurrent": record.max_concurrent,
        "status": _stored_status(record.status),
        "status_reason": record.status_reason,
        "cooldown_until": record.cooldown_until,
        "day_start": record.day_start,
        "day_count": record.day_count,
        "month_start": record.month_start,
        "month_count": record.month_count,
        "total_count": record.total_count,
        "last_used_at": record.last_used_at,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "revoked_at": record.revoked_at,
    }


def _record(row: Row[Any]) -> CredentialRecord:
    m = row._mapping
    return CredentialRecord(
        id=m["id"],
        org_id=m["org_id"],
        provider=m["provider"],
        alias=m["alias"],
        project_id=m["project_id"],
        shared_with_projects=bool(m["shared_with_projects"]),
        sealed_secret=m["sealed_secret"],
        master_key_id=m["master_key_id"],
        secret_hint=m["secret_hint"],
        environment=m["environment"],
        tags=tuple(m["tags"]),
        metadata=m["meta"],
        weight=m["weight"],
        daily_limit=m["daily_limit"],
        monthly_limit=m["monthly_limit"],
        max_concurrent=m["max_concurrent"],
        status=CredentialStatus(m["status"]),
        status_reason=m["status_reason"],
        cooldown_until=m["cooldown_until"],
        day_start=m["day_start"],
        day_count=m["day_count"],
        month_start=m["month_start"],
        month_count=m["month_count"],
        total_count=m["total_count"],
        last_used_at=m["last_used_at"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        revoked_at=m["revoked_at"],
    )
