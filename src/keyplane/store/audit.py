"""The audit log in SQL: each organization's hash chain, its head and its checkpoints.

Writing: :meth:`SqlAuditStore.append` is a journal writer (``store/unit.py``): it runs inside
the transaction of the change it records, after the change, before the commit. It locks the
organization's row in ``audit_heads`` and appends after it, so writers on any number of
instances take turns per organization and never fork the chain:

- PostgreSQL: ``INSERT .. ON CONFLICT DO UPDATE .. RETURNING`` (the first entry of an org
  creates its head; otherwise the no-op update locks the row, like ``SELECT .. FOR UPDATE``,
  until the commit; a concurrent writer waits, then reads the head as committed).
- SQLite: that same statement is a write, so the transaction holds the database's write lock
  from then on (it may already hold it from the change); another process sharing the file
  cannot write between our read of the head and our commit.

That is the reference path. Usually the writer skips the read: it remembers each
organization's head as it last wrote it and moves the head from there only if it is still
there, inserting the entries in the same step (``store/audit_append.py``: one statement on
PostgreSQL); a head moved meanwhile sends it back to the reference path.

Reading for verification streams entries in pages of :data:`PAGE` (constant memory).
Retention (:meth:`SqlAuditStore.prune`) deletes a prefix of each chain and records the last
deleted entry's seq and hash in ``audit_checkpoints``, in one transaction, under a PostgreSQL
advisory lock so one instance prunes at a time.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, exists, func, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from keyplane.domain import audit, ids
from keyplane.domain.audit import AuditEntry, Checkpoint
from keyplane.domain.changes import Change, Journal
from keyplane.store.audit_append import Head, append_after
from keyplane.store.tables import api_keys, audit_checkpoints, audit_heads, audit_log
from keyplane.store.unit import UnitOfWork

#: Entries read per query when streaming a chain.
PAGE = 1000
#: The advisory lock key retention takes on PostgreSQL ("kpaudit" as a number).
PRUNE_LOCK = 0x6B7061756469
#: Column widths (the table's): longer values are cut before hashing, never refused.
_WIDTHS = {
    "project_id": 40,
    "actor_type": 20,
    "actor_id": 64,
    "actor_name": 200,
    "actor_ip": 64,
    "actor_user_agent": 512,
    "request_id": 128,
    "action": 64,
    "target_type": 32,
    "target_id": 64,
    "outcome": 16,
}


@dataclass(frozen=True, slots=True)
class DueEvent:
    """A key event that happens by itself at a time (expiry, the end of a disable period)."""

    action: str
    org_id: str
    project_id: str
    key_id: str
    name: str
    due_at: datetime


class SqlAuditStore:
    """The audit log over the shared unit of work.

    Reading needs nothing more; writing needs the chain's HMAC key
    (:func:`keyplane.domain.audit.chain_key`), which the composition root sets in :attr:`key`
    before it registers :meth:`append` as a journal writer.
    """

    def __init__(self, unit: UnitOfWork) -> None:
        self._unit = unit
        #: The chain's HMAC key; None until the runtime sets it (writing refuses until then).
        self.key: bytes | None = None
        #: Each organization's head as this process last wrote it: the next append tries to
        #: move it from there without reading it first (checked in the same statement).
        self._heads: dict[str, Head] = {}

    # -- writing -------------------------------------------------------------------------

    async def append(self, conn: AsyncConnection, journal: Journal) -> None:
        """Append ``journal``'s audited changes to their organizations' chains, in ``conn``'s
        transaction (the journal writer the unit of work calls before it commits)."""
        by_org: dict[str, list[Change]] = {}
        for change in journal.changes:
            if change.audited:
                by_org.setdefault(change.org_id, []).append(change)
        # Heads locked in one order everywhere: two journals spanning the same orgs cannot
        # deadlock.
        for org_id in sorted(by_org):
            await self._append_org(conn, journal, org_id, by_org[org_id])

    async def record(self, journals: Sequence[Journal]) -> None:
        """Append the audited changes of ``journals`` in one transaction of their own (events
        that change nothing else: aggregated security events)."""
        if not any(journal.changes for journal in journals):
            return
        async with self._unit.write() as conn:
            for journal in journals:
                await self.append(conn, journal)

    async def record_alone(self, journal: Journal) -> None:
        """Write ``journal`` in a transaction that changes nothing else (an action that only
        reads, such as an idempotent replay); every journal writer sees it."""
        async with self._unit.write(journal):
            pass

    async def record_once(self, journal: Journal, entry_id: str) -> bool:
        """Append ``journal`` (one change) as entry ``entry_id`` unless an entry of that id
        exists: an event that several instances may notice is recorded once. True if written."""
        async with self._unit.write() as conn:
            org_id = journal.changes[0].org_id
            locked = await self._lock_head(conn, org_id)  # turns per org: the check is current
            found = await conn.execute(select(audit_log.c.seq).where(audit_log.c.id == entry_id))
            if found.first() is not None:
                return False
            await self._insert(conn, journal, org_id, journal.changes, locked, [entry_id])
        return True

    async def _append_org(
        self, conn: AsyncConnection, journal: Journal, org_id: str, changes: list[Change]
    ) -> None:
        at_ms = int(journal.at.timestamp() * 1000)
        entry_ids = ids.new_ids("aud", len(changes), at_ms)
        remembered = self._heads.get(org_id)
        if remembered is not None:
            # The fast path: chain from the head this process last wrote, moving it only if
            # it is still there (one statement on PostgreSQL, see ``store/audit_append.py``).
            rows, head = self._chain(journal, org_id, changes, remembered, entry_ids)
            if await append_after(
                conn, org_id, remembered, head, rows, is_sqlite=self._unit.is_sqlite
            ):
                self._heads[org_id] = head
                return
        # First write of this org here, or the head moved (another instance, a rolled back
        # transaction, an edit): lock it, read it, chain from it.
        locked = await self._lock_head(conn, org_id)
        await self._insert(conn, journal, org_id, changes, locked, entry_ids)

    async def _lock_head(self, conn: AsyncConnection, org_id: str) -> Head:
        # One statement: the first entry of an org creates its head; otherwise the no-op
        # update locks the existing row (PostgreSQL: a row lock held to the commit; SQLite:
        # a write, so the database's write lock is ours before the head is read).
        statement = self._unit.insert(audit_heads).values(org_id=org_id, seq=0, hash=audit.GENESIS)
        statement = statement.on_conflict_do_update(
            index_elements=["org_id"], set_={"seq": audit_heads.c.seq}
        ).returning(audit_heads.c.seq, audit_heads.c.hash)
        row = (await conn.execute(statement)).one()
        return int(row.seq), str(row.hash)

    async def _insert(
        self,
        conn: AsyncConnection,
        journal: Journal,
        org_id: str,
        changes: Sequence[Change],
        locked: Head,
        entry_ids: Sequence[str],
    ) -> None:
        """Append after ``locked``, the head this transaction holds the lock of."""
        rows, head = self._chain(journal, org_id, changes, locked, entry_ids)
        await conn.execute(insert(audit_log), rows)
        await conn.execute(
            update(audit_heads)
            .where(audit_heads.c.org_id == org_id)
            .values(seq=head[0], hash=head[1])
        )
        # Remembered even before the commit: if the transaction rolls back, the next append's
        # conditional move finds the head elsewhere and falls back to the lock.
        self._heads[org_id] = head

    def _chain(
        self,
        journal: Journal,
        org_id: str,
        changes: Sequence[Change],
        head: Head,
        entry_ids: Sequence[str],
    ) -> tuple[list[dict[str, Any]], Head]:
        """The rows of ``changes`` chained after ``head``, and the head after them."""
        seq, prev_hash = head
        actor = journal.actor
        origin = actor.origin
        rows: list[dict[str, Any]] = []
        for change, entry_id in zip(changes, entry_ids, strict=True):
            seq += 1
            values = _bounded(
                {
                    "project_id": change.project_id,
                    "actor_type": actor.kind,
                    "actor_id": actor.id,
                    "actor_name": actor.name,
                    "actor_ip": origin.ip,
                    "actor_user_agent": origin.user_agent,
                    "request_id": origin.request_id,
                    "action": change.action,
                    "target_type": change.target_type,
                    "target_id": change.target_id,
                    "outcome": change.outcome,
                }
            )
            entry = AuditEntry(
                org_id=org_id,
                seq=seq,
                id=entry_id,
                occurred_at=journal.at,
                details=audit.normal(change.details),
                count=change.count,
                prev_hash=prev_hash,
                hash="",
                **values,
            )
            prev_hash = audit.entry_hash(self._chain_key(), entry)
            rows.append(_row_of(entry, prev_hash))
        return rows, (seq, prev_hash)

    def _chain_key(self) -> bytes:
        if self.key is None:
            raise RuntimeError("the audit store has no chain key (set by the runtime)")
        return self.key

    # -- reading for verification ----------------------------------------------------------

    async def head(self, org_id: str) -> tuple[int, str] | None:
        """The org's chain head (last seq and hash), None before its first entry."""
        async with self._unit.read() as conn:
            row = (
                await conn.execute(
                    select(audit_heads.c.seq, audit_heads.c.hash).where(
                        audit_heads.c.org_id == org_id
                    )
                )
            ).first()
        return None if row is None else (int(row.seq), str(row.hash))

    async def checkpoint(self, org_id: str) -> Checkpoint | None:
        """The org's latest retention checkpoint (where its chain now starts), if any."""
        async with self._unit.read() as conn:
            row = (
                await conn.execute(
                    select(audit_checkpoints.c.seq, audit_checkpoints.c.hash)
                    .where(audit_checkpoints.c.org_id == org_id)
                    .order_by(audit_checkpoints.c.seq.desc())
                    .limit(1)
                )
            ).first()
        return None if row is None else Checkpoint(int(row.seq), str(row.hash))

    async def entries(self, org_id: str, after_seq: int = 0) -> AsyncIterator[AuditEntry]:
        """The org's entries after ``after_seq``, in seq order, read a page at a time."""
        while True:
            async with self._unit.read() as conn:
                rows = (
                    await conn.execute(
                        select(audit_log)
                        .where(audit_log.c.org_id == org_id, audit_log.c.seq > after_seq)
                        .order_by(audit_log.c.seq)
                        .limit(PAGE)
                    )
                ).all()
            for row in rows:
                yield entry_of(row)
            if len(rows) < PAGE:
                return
            after_seq = int(rows[-1].seq)

    # -- retention ---------------------------------------------------------------------------

    async def prune(self, cutoff: datetime, now: datetime) -> int:
        """Delete each org's entries up to the last one before ``cutoff`` (a prefix: the chain
        stays whole), recording a checkpoint per org. Returns how many were deleted; 0 at once
        when another instance is pruning (PostgreSQL advisory lock, held to the commit)."""
        pruned = 0
        async with self._unit.write() as conn:
            if self._unit.is_sqlite:
                # A write first: the write lock is ours before anything is read.
                await conn.execute(
                    update(audit_heads).where(audit_heads.c.org_id == "").values(seq=0)
                )
            else:
                got = await conn.scalar(select(func.pg_try_advisory_xact_lock(PRUNE_LOCK)))
                if not got:
                    return 0
            org_ids = (await conn.scalars(select(audit_heads.c.org_id))).all()
            for org_id in org_ids:
                pruned += await self._prune_org(conn, org_id, cutoff, now)
        return pruned

    async def _prune_org(
        self, conn: AsyncConnection, org_id: str, cutoff: datetime, now: datetime
    ) -> int:
        in_org = audit_log.c.org_id == org_id
        first_kept = await conn.scalar(
            select(func.min(audit_log.c.seq)).where(in_org, audit_log.c.occurred_at >= cutoff)
        )
        last_query = select(func.max(audit_log.c.seq)).where(in_org)
        if first_kept is not None:
            last_query = last_query.where(audit_log.c.seq < first_kept)
        last = await conn.scalar(last_query)
        if last is None:
            return 0
        last_hash = await conn.scalar(
            select(audit_log.c.hash).where(in_org, audit_log.c.seq == last)
        )
        result = await conn.execute(delete(audit_log).where(in_org, audit_log.c.seq <= last))
        count = int(result.rowcount or 0)
        await conn.execute(
            insert(audit_checkpoints).values(
                org_id=org_id, seq=last, hash=last_hash, pruned_at=now, entries_pruned=count
            )
        )
        return count

    # -- events that happen by themselves ------------------------------------------------------

    async def due_key_events(
        self, since: datetime, now: datetime, limit: int
    ) -> builtins.list[DueEvent]:
        """Keys whose expiry, or the end of whose disable period, fell in ``[since, now]``
        (revoked keys left out) and that have no such entry since, oldest first, at most
        ``limit`` (so a pass never rereads a full batch of events already recorded)."""

        def unrecorded(action: str, due: Any) -> Any:
            return ~exists().where(
                audit_log.c.org_id == api_keys.c.org_id,
                audit_log.c.target_id == api_keys.c.id,
                audit_log.c.action == action,
                audit_log.c.occurred_at >= due,
            )

        expired = (
            select(
                api_keys.c.org_id,
                api_keys.c.project_id,
                api_keys.c.id,
                api_keys.c.name,
                api_keys.c.expires_at.label("due_at"),
            )
            .where(
                api_keys.c.status != "revoked",
                api_keys.c.expires_at <= now,
                api_keys.c.expires_at >= since,
                unrecorded("key.expired", api_keys.c.expires_at),
            )
            .order_by(api_keys.c.expires_at)
            .limit(limit)
        )
        enabled = (
            select(
                api_keys.c.org_id,
                api_keys.c.project_id,
                api_keys.c.id,
                api_keys.c.name,
                api_keys.c.auto_enable_at.label("due_at"),
            )
            .where(
                api_keys.c.status == "disabled",
                api_keys.c.auto_enable_at <= now,
                api_keys.c.auto_enable_at >= since,
                unrecorded("key.auto_enabled", api_keys.c.auto_enable_at),
            )
            .order_by(api_keys.c.auto_enable_at)
            .limit(limit)
        )
        async with self._unit.read() as conn:
            due = [
                DueEvent("key.expired", r.org_id, r.project_id, r.id, r.name, r.due_at)
                for r in await conn.execute(expired)
            ]
            due += [
                DueEvent("key.auto_enabled", r.org_id, r.project_id, r.id, r.name, r.due_at)
                for r in await conn.execute(enabled)
            ]
        due.sort(key=lambda event: event.due_at)
        return due[:limit]


def _bounded(values: dict[str, str | None]) -> dict[str, Any]:
    return {
        name: None if value is None else str(audit.normal(value))[: _WIDTHS[name]]
        for name, value in values.items()
    }


def _row_of(entry: AuditEntry, hash_: str) -> dict[str, Any]:
    return {
        "org_id": entry.org_id,
        "seq": entry.seq,
        "id": entry.id,
        "occurred_at": entry.occurred_at,
        "project_id": entry.project_id,
        "actor_type": entry.actor_type,
        "actor_id": entry.actor_id,
        "actor_name": entry.actor_name,
        "actor_ip": entry.actor_ip,
        "actor_user_agent": entry.actor_user_agent,
        "request_id": entry.request_id,
        "action": entry.action,
        "target_type": entry.target_type,
        "target_id": entry.target_id,
        "outcome": entry.outcome,
        "details": entry.details,
        "count": entry.count,
        "prev_hash": entry.prev_hash,
        "hash": hash_,
    }


def entry_of(row: Row[Any]) -> AuditEntry:
    """An entry from a row of ``audit_log`` (for readers of the log, too)."""
    return AuditEntry(
        org_id=row.org_id,
        seq=int(row.seq),
        id=row.id,
        occurred_at=row.occurred_at,
        project_id=row.project_id,
        actor_type=row.actor_type,
        actor_id=row.actor_id,
        actor_name=row.actor_name,
        actor_ip=row.actor_ip,
        actor_user_agent=row.actor_user_agent,
        request_id=row.request_id,
        action=row.action,
        target_type=row.target_type,
        target_id=row.target_id,
        outcome=row.outcome,
        details=row.details,
        count=int(row._mapping["count"]),
        prev_hash=row.prev_hash,
        hash=row.hash,
    )
