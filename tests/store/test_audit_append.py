"""The audit writer's fast path (``store/audit_append.py``: append after the head this process
remembers, moved only if it is still there) against its reference (lock the head, read it,
append), on SQLite and PostgreSQL.

The reference is the chain verifier: whatever mix of instances, batch sizes, rolled back
transactions and edits behind the writer's back, the chain the writers leave verifies, its
``seq`` runs 1, 2, ... with no gap or fork, and it holds exactly the committed entries.
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event, text, update

from keyplane.domain import audit
from keyplane.domain.changes import Actor, Journal
from keyplane.errors import ConflictError
from keyplane.settings import to_async_url
from keyplane.store.audit_append import MAX_ROWS
from keyplane.store.database import Database as Db
from keyplane.store.migrate import migrate
from keyplane.store.tables import audit_heads, audit_log
from tests.conftest import Database

KEY = audit.chain_key(b"chain-key-for-the-append-tests")
AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Refused(Exception):
    """Raised after the audit entries, before the commit: the transaction rolls back."""


async def _open(database: Database) -> Db:
    db = Db.from_url(to_async_url(database.url), database.schema)
    await migrate(db.engine)
    db.audit.key = KEY
    return db


def _journal(org_id: str, targets: list[str]) -> Journal:
    journal = Journal(Actor("system"), AT)
    for target in targets:
        journal.record("key.updated", org_id=org_id, target_type="key", target_id=target)
    return journal


async def _append(db: Db, org_id: str, targets: list[str], *, commit: bool = True) -> None:
    try:
        async with db.unit.write() as conn:
            await db.audit.append(conn, _journal(org_id, targets))
            if not commit:
                raise Refused
    except Refused:
        pass


async def _check(db: Db, org_id: str, committed: list[str]) -> None:
    entries = [entry async for entry in db.audit.entries(org_id)]
    head = await db.audit.head(org_id)
    result = audit.verify_chain(KEY, entries, head=head)
    assert result.ok, result.first_broken
    assert [e.seq for e in entries] == list(range(1, len(committed) + 1))
    assert sorted(e.target_id or "" for e in entries) == sorted(committed)


async def test_a_head_moved_by_another_instance_is_followed_not_forked(
    database: Database,
) -> None:
    one, two = await _open(database), await _open(database)
    org = "org_" + secrets.token_hex(6)
    try:
        await _append(one, org, ["a"])  # one remembers seq 1
        await _append(two, org, ["b"])  # two moves the head to 2 behind one's back
        await _append(one, org, ["c"])  # one's remembered head is stale: it must follow
        await _append(two, org, ["d"])
        await _check(one, org, ["a", "b", "c", "d"])
    finally:
        await one.close()
        await two.close()


async def test_a_rolled_back_append_leaves_no_hole_in_the_chain(database: Database) -> None:
    db = await _open(database)
    org = "org_" + secrets.token_hex(6)
    try:
        await _append(db, org, ["a"])
        await _append(db, org, ["never"], commit=False)  # remembered seq 2, committed seq 1
        await _append(db, org, ["b"])
        await _check(db, org, ["a", "b"])
    finally:
        await db.close()


async def test_a_head_edited_behind_the_writers_back_is_chained_from_not_overwritten(
    database: Database,
) -> None:
    db = await _open(database)
    org = "org_" + secrets.token_hex(6)
    try:
        await _append(db, org, ["a", "b"])
        async with db.engine.begin() as conn:  # a forged head: seq 5, some hash
            await conn.execute(
                update(audit_heads).where(audit_heads.c.org_id == org).values(seq=5, hash="f" * 64)
            )
        await _append(db, org, ["c"])
        # The writer chained after the head it found (as the locking path always did), so
        # the entry links to the forged hash and the verifier reports the gap at it.
        entries = [entry async for entry in db.audit.entries(org)]
        assert [(e.seq, e.prev_hash) for e in entries][-1] == (6, "f" * 64)
        result = audit.verify_chain(KEY, entries, head=await db.audit.head(org))
        assert result.first_broken == audit.BrokenLink(6, entries[-1].id, audit.REMOVED)
    finally:
        await db.close()


async def test_a_bulk_change_past_the_fast_paths_size_is_appended_whole(
    database: Database,
) -> None:
    db = await _open(database)
    org = "org_" + secrets.token_hex(6)
    bulk = [f"k{i}" for i in range(MAX_ROWS * 2 + 1)]
    try:
        await _append(db, org, ["a"])
        await _append(db, org, bulk)
        await _append(db, org, ["b", "c"])
        await _check(db, org, ["a", *bulk, "b", "c"])
    finally:
        await db.close()


#: One write: which instance, how many entries, whether it commits.
_WRITE = st.tuples(st.integers(0, 1), st.integers(1, MAX_ROWS + 2), st.booleans())


@settings(
    max_examples=12,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rounds=st.lists(st.lists(_WRITE, min_size=1, max_size=3), min_size=1, max_size=5))
def test_any_mix_of_instances_and_rollbacks_leaves_one_whole_chain(
    database: Database, rounds: list[list[tuple[int, int, bool]]]
) -> None:
    async def run() -> None:
        dbs = [await _open(database), await _open(database)]
        org = "org_" + secrets.token_hex(6)
        committed: list[str] = []
        try:
            for number, writes in enumerate(rounds):
                batches = []
                for index, (instance, size, commit) in enumerate(writes):
                    targets = [f"r{number}w{index}e{i}" for i in range(size)]
                    batches.append(_append(dbs[instance], org, targets, commit=commit))
                    if commit:
                        committed += targets
                await asyncio.gather(*batches)  # the writes of a round race each other
            await _check(dbs[0], org, committed)
        finally:
            for db in dbs:
                await db.close()

    asyncio.run(run())


@pytest.mark.parametrize("size", [1, 3])
async def test_the_fast_path_writes_what_the_locking_path_would(
    database: Database, size: int
) -> None:
    # The same journals to two orgs, one of them forgotten before every append (so always
    # written by the locking path): apart from ids and hashes, the rows agree.
    db = await _open(database)
    fast, slow = "org_" + secrets.token_hex(6), "org_" + secrets.token_hex(6)
    try:
        for round_ in range(3):
            targets = [f"t{round_}.{i}" for i in range(size)]
            await _append(db, fast, targets)
            db.audit._heads.pop(slow, None)
            await _append(db, slow, targets)
        by_org = {}
        for org in (fast, slow):
            by_org[org] = [
                (e.seq, e.action, e.target_id, e.occurred_at, e.details, e.count)
                async for e in db.audit.entries(org)
            ]
        assert by_org[fast] == by_org[slow]
        # As stored, too (SQLite: the fast path converts values itself, through the columns'
        # types; timestamps must stay in the fixed-width text that SQL comparisons rely on).
        stored = {}
        async with db.engine.connect() as conn:
            for org in (fast, slow):
                raw = await conn.execute(
                    text(
                        "SELECT seq, occurred_at, details, count, project_id, actor_type"
                        " FROM audit_log WHERE org_id = :org ORDER BY seq"
                    ),
                    {"org": org},
                )
                stored[org] = [tuple(row) for row in raw]
        assert stored[fast] == stored[slow]
    finally:
        await db.close()


async def test_an_append_after_a_remembered_head_takes_one_trip_to_the_database(
    database: Database,
) -> None:
    db = await _open(database)
    org = "org_" + secrets.token_hex(6)
    statements: list[str] = []

    def seen(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    try:
        await _append(db, org, ["a"])  # the first: locks and reads the head
        event.listen(db.engine.sync_engine, "before_cursor_execute", seen)
        await _append(db, org, ["b"])
        event.remove(db.engine.sync_engine, "before_cursor_execute", seen)
        writes = [s for s in statements if not s.lstrip().upper().startswith(("BEGIN", "COMMIT"))]
        # PostgreSQL: one statement (the head's move and the insert); SQLite: both sent to the
        # driver in one function (``store/sqlite_driver.py``), nothing through SQLAlchemy.
        assert len(writes) == (0 if db.unit.is_sqlite else 1)
        await _check(db, org, ["a", "b"])
    finally:
        await db.close()


async def test_a_driver_error_in_the_fast_path_is_a_keyplane_error(database: Database) -> None:
    db = await _open(database)
    org = "org_" + secrets.token_hex(6)
    try:
        await _append(db, org, ["a"])
        # A row squatting on seq 2 (the head still says 1): the insert after the head's
        # move violates the primary key, and the change rolls back whole.
        entries = [entry async for entry in db.audit.entries(org)]
        squatter = {c.name: getattr(entries[0], c.name) for c in audit_log.columns}
        squatter.update(seq=2, id="aud_squatter")
        async with db.engine.begin() as conn:
            await conn.execute(audit_log.insert().values(squatter))
        with pytest.raises(ConflictError):
            await _append(db, org, ["b"])
        assert await db.audit.head(org) == (1, entries[0].hash)
    finally:
        await db.close()
