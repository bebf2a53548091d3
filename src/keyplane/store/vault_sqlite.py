"""SQLite's lease batch in one trip to aiosqlite's thread.

:meth:`SqlVaultStore.lease_batch <keyplane.store.vault.SqlVaultStore.lease_batch>` sent each
statement through SQLAlchemy: a lease and its release were seven statements, and their
per-statement Python work (the execution context, result processing, a trip to the driver's
thread each) was most of what a lease cost. A single client spent about 3 ms of the event
loop's CPU per lease and release, slower than api-service-handler's ``use_key``.

Here the whole body of the batch's transaction runs as one function on the driver's
``sqlite3`` connection, inside the transaction ``unit.write()`` opened: claim the write lock,
read the candidates with their live lease counts, decide each ask in turn
(:func:`~keyplane.store.vault_sql.decide`, the same pure function as the reference path), sweep,
insert the leases, count the uses, end the releases. The statements are SQLAlchemy's own,
compiled once (:class:`~keyplane.store.sqlite_driver.DriverStatement`), so the SQL and the
values' conversions are the reference path's; ``tests/store/test_vault_sqlite.py`` holds the
two paths equal on random batches.

Deciding on the driver's thread rather than the event loop's changes nothing it depends on:
it is pure (the asks' ``open_secret`` only decrypts), and it runs while the batch holds
SQLite's write lock either way.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, insert, select
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Select
from sqlalchemy.sql.elements import BindParameter

from keyplane.domain.vault import Choice, CredentialRecord
from keyplane.store.sqlite_driver import DriverStatement, run_on_driver
from keyplane.store.tables import vault_credentials, vault_leases
from keyplane.store.vault_base import Lease, LeaseAsk, ReleaseScope
from keyplane.store.vault_sql import (
    CLAIM_SQLITE_WRITER,
    COUNT_USE,
    cached,
    count_use_values,
    credential_from,
    decide,
    leases_reached,
)

#: The keys of a candidate row: the credential's columns, then its live lease count and
#: earliest expiry (the lock statement's two subqueries).
_CANDIDATE_KEYS = (*(column.key for column in vault_credentials.columns), "live_count", "earliest")
_CREDENTIAL_KEYS = tuple(column.key for column in vault_credentials.columns)

Answers = list[Lease | Choice | Exception]


class SqliteLeaseBatches:
    """Compiled statements for one dialect, and the batch that runs them in one trip."""

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        self._claim = DriverStatement(CLAIM_SQLITE_WRITER, dialect)
        self._insert_lease = DriverStatement(insert(vault_leases), dialect)
        self._count_use = DriverStatement(COUNT_USE, dialect)
        self._locks: dict[Any, DriverStatement] = {}
        self._by_count: dict[tuple[str, int, bool], DriverStatement] = {}

    async def run(
        self,
        conn: AsyncConnection,
        lock: tuple[Any, Callable[[], Select[Any]]] | None,
        asks: Sequence[LeaseAsk],
        releases: Mapping[ReleaseScope, Sequence[str]],
        now: datetime,
        rng: random.Random | None,
    ) -> tuple[Answers, dict[str, CredentialRecord]]:
        """The batch's body in ``conn``'s open transaction. ``lock`` is the cache key of the
        asks' candidate statement (None when unhashable) and how to build it, or None when
        there are no asks."""
        read = None if lock is None else self._lock(*lock)
        ends = [
            (self._ending(len(ids), project is not None), org_id, project, sorted(set(ids)))
            for (org_id, project), ids in releases.items()
            if ids
        ]

        def body(db: sqlite3.Connection) -> tuple[Answers, dict[str, CredentialRecord]]:
            answers = [] if read is None else self._lease(db, read, asks, now, rng)
            released: dict[str, CredentialRecord] = {}
            for ending, org_id, project, lease_ids in ends:
                released.update(self._end(db, ending, org_id, project, lease_ids))
            return answers, released

        return await run_on_driver(conn, body)

    # -- on the driver's thread -------------------------------------------------------------

    def _lease(
        self,
        db: sqlite3.Connection,
        read: DriverStatement,
        asks: Sequence[LeaseAsk],
        now: datetime,
        rng: random.Random | None,
    ) -> Answers:
        # The write lock first (BEGIN is deferred), so the counts read next stay current.
        db.execute(self._claim.sql, self._claim.args())
        records: dict[str, CredentialRecord] = {}
        live: dict[str, tuple[int, datetime | None]] = {}
        for row in read.rows(db.execute(read.sql, read.args({"now": now})).fetchall()):
            columns = dict(zip(_CANDIDATE_KEYS, row, strict=True))
            record = credential_from(columns)
            records[record.id] = record
            if columns["live_count"]:
                live[record.id] = (int(columns["live_count"]), columns["earliest"])
        decided = decide(asks, asks[0].org_id, records, live, now, rng)
        if decided.sweep:
            sweep = self._sweeping(len(decided.sweep))
            names = {f"credential_{i}": cid for i, cid in enumerate(sorted(decided.sweep))}
            db.execute(sweep.sql, sweep.args({**names, "now": now}))
        if decided.new_leases:
            db.executemany(
                self._insert_lease.sql,
                [self._insert_lease.args(lease) for lease in decided.new_leases],
            )
            db.executemany(
                self._count_use.sql,
                [self._count_use.args(count_use_values(r)) for r in decided.used.values()],
            )
        return decided.answers

    def _end(
        self,
        db: sqlite3.Connection,
        deleting: DriverStatement,
        org_id: str,
        project: str | None,
        lease_ids: Sequence[str],
    ) -> dict[str, CredentialRecord]:
        values: dict[str, Any] = {f"lease_{i}": lease for i, lease in enumerate(lease_ids)}
        values.update(org_id=org_id, project_id=project)
        gone = deleting.rows(db.execute(deleting.sql, deleting.args(values)).fetchall())
        if not gone:
            return {}
        credential_ids = sorted({credential_id for _, credential_id in gone})
        records = self._credentials(db, credential_ids)
        return {lease_id: records[credential_id] for lease_id, credential_id in gone}

    def _credentials(
        self, db: sqlite3.Connection, credential_ids: Sequence[str]
    ) -> dict[str, CredentialRecord]:
        reading = self._reading(len(credential_ids))
        names = {f"credential_{i}": cid for i, cid in enumerate(credential_ids)}
        rows = reading.rows(db.execute(reading.sql, reading.args(names)).fetchall())
        records = (credential_from(dict(zip(_CREDENTIAL_KEYS, row, strict=True))) for row in rows)
        return {record.id: record for record in records}

    # -- statements, compiled once ------------------------------------------------------------

    def _lock(self, key: Any, build: Callable[[], Select[Any]]) -> DriverStatement:
        return cached(self._locks, key, lambda: DriverStatement(build(), self._dialect))

    def _ending(self, count: int, in_project: bool) -> DriverStatement:
        return self._compiled(("end", count, in_project), lambda: _deleting(count, in_project))

    def _sweeping(self, count: int) -> DriverStatement:
        return self._compiled(("sweep", count, False), lambda: _sweep(count))

    def _reading(self, count: int) -> DriverStatement:
        return self._compiled(("read", count, False), lambda: _credentials_by_id(count))

    def _compiled(self, key: tuple[str, int, bool], build: Callable[[], Any]) -> DriverStatement:
        """Statements that differ by their number of ids (one ``?`` each), per number."""
        return cached(self._by_count, key, lambda: DriverStatement(build(), self._dialect))


def _marks(prefix: str, count: int) -> list[Any]:
    return [bindparam(f"{prefix}_{i}") for i in range(count)]


def _deleting(count: int, in_project: bool) -> Any:
    org_id: BindParameter[str] = bindparam("org_id")
    project: BindParameter[str] | None = bindparam("project_id") if in_project else None
    return (
        delete(vault_leases)
        .where(
            vault_leases.c.org_id == org_id,
            vault_leases.c.id.in_(_marks("lease", count)),
            *leases_reached(org_id, project),
        )
        .returning(vault_leases.c.id, vault_leases.c.credential_id)
    )


def _sweep(count: int) -> Any:
    # Housekeeping only: expired leases no longer count (see vault.py's reference path).
    return delete(vault_leases).where(
        vault_leases.c.credential_id.in_(_marks("credential", count)),
        vault_leases.c.expires_at <= bindparam("now", type_=vault_leases.c.expires_at.type),
    )


def _credentials_by_id(count: int) -> Any:
    return select(vault_credentials).where(vault_credentials.c.id.in_(_marks("credential", count)))
