"""The audit log's writer (``db.audit``), on SQLite and PostgreSQL: entries commit with their
change, the chain holds under concurrent writers on two runtimes, and tampering with the rows
behind Keyplane's back is found."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.sql import Executable

from keyplane.domain import audit
from keyplane.domain.audit import AuditEntry
from keyplane.domain.changes import Origin
from keyplane.domain.clock import ManualClock
from keyplane.domain.tenancy import Principal
from keyplane.services.keys import NewKey
from keyplane.services.runtime import Runtime
from keyplane.settings import resolve_server_secret
from keyplane.store.base import KeyFilter
from keyplane.store.tables import audit_heads, audit_log
from tests.conftest import Database


@pytest.fixture
async def runtime(database: Database, clock: ManualClock) -> AsyncIterator[Runtime]:
    runtime = await Runtime.start(database.settings(), clock)
    try:
        yield runtime
    finally:
        await runtime.stop()


def admin(runtime: Runtime) -> Principal:
    origin = Origin.of("203.0.113.7", "curl/8", "req-1")
    return Principal(
        "mk_admin", runtime.default_project.org_id, None, ("*",), name="ops", origin=origin
    )


async def entries(runtime: Runtime) -> list[AuditEntry]:
    org = runtime.default_project.org_id
    return [entry async for entry in runtime.store.audit.entries(org)]


async def check(runtime: Runtime) -> audit.Verification:
    org = runtime.default_project.org_id
    store = runtime.store.audit
    head = await store.head(org)
    key = audit.chain_key(resolve_server_secret(runtime.settings))
    return audit.verify_chain(key, await entries(runtime), head=head)


async def test_a_key_action_is_written_with_actor_target_and_chain(runtime: Runtime) -> None:
    caller = admin(runtime)
    startup = await entries(runtime)  # the default organization and project
    assert [e.action for e in startup] == ["organization.created", "project.created"]
    assert startup[0].prev_hash == audit.GENESIS and startup[0].actor_type == "system"
    issued = await runtime.services.keys.create(caller, NewKey(name="acme"))
    await runtime.services.keys.revoke(caller, issued.record.id, "gone")
    written = (await entries(runtime))[2:]
    assert [e.action for e in written] == ["key.created", "key.revoked"]
    first, second = written
    assert (first.seq, second.seq) == (3, 4)
    assert first.prev_hash == startup[-1].hash and second.prev_hash == first.hash
    assert (first.actor_type, first.actor_id, first.actor_name) == (
        "management_key",
        "mk_admin",
        "ops",
    )
    assert (first.actor_ip, first.actor_user_agent, first.request_id) == (
        "203.0.113.7",
        "curl/8",
        "req-1",
    )
    assert (first.target_type, first.target_id) == ("key", issued.record.id)
    assert first.project_id == issued.record.project_id
    assert second.details["reason"] == "gone"
    assert first.id.startswith("aud_")
    result = await check(runtime)
    assert result.ok and result.checked == 4


async def test_a_failing_audit_write_rolls_the_change_back(runtime: Runtime) -> None:
    caller = admin(runtime)
    before = await entries(runtime)
    head = await runtime.store.audit.head(runtime.default_project.org_id)

    async def fail(conn: object, journal: object) -> None:
        raise RuntimeError("after the audit entry, before the commit")

    runtime.store.unit.journal_writers.append(fail)  # runs after the audit writer
    with pytest.raises(RuntimeError):
        await runtime.services.keys.create(caller, NewKey(name="never"))
    runtime.store.unit.journal_writers.remove(fail)
    assert await entries(runtime) == before
    assert await runtime.store.audit.head(runtime.default_project.org_id) == head
    assert await runtime.services.keys.list(caller, KeyFilter(), None, 10) == []


async def tamper(runtime: Runtime, statement: Executable) -> None:
    async with runtime.store.engine.begin() as conn:
        await conn.execute(statement)


async def five_entries(runtime: Runtime) -> list[AuditEntry]:
    caller = admin(runtime)
    # The two startup entries (organization, project) and these five: seq 1 to 7.
    issued = await runtime.services.keys.create(caller, NewKey(name="k"))
    for name in ("a", "b", "c"):
        await runtime.services.keys.update(caller, issued.record.id, {"name": name})
    await runtime.services.keys.revoke(caller, issued.record.id, None)
    written = await entries(runtime)
    assert len(written) == 7 and (await check(runtime)).ok
    return written


async def test_an_edited_row_is_found(runtime: Runtime) -> None:
    written = await five_entries(runtime)
    await tamper(
        runtime,
        update(audit_log).where(audit_log.c.id == written[4].id).values(actor_name="intern"),
    )
    broken = (await check(runtime)).first_broken
    assert broken == audit.BrokenLink(5, written[4].id, audit.ALTERED)


async def test_a_deleted_row_is_found(runtime: Runtime) -> None:
    written = await five_entries(runtime)
    await tamper(runtime, delete(audit_log).where(audit_log.c.id == written[3].id))
    broken = (await check(runtime)).first_broken
    assert broken is not None and (broken.seq, broken.reason) == (5, audit.REMOVED)


async def test_a_deleted_last_row_is_found(runtime: Runtime) -> None:
    written = await five_entries(runtime)
    await tamper(runtime, delete(audit_log).where(audit_log.c.id == written[6].id))
    assert (await check(runtime)).first_broken == audit.BrokenLink(7, None, audit.REMOVED)


async def test_an_inserted_row_is_found(runtime: Runtime) -> None:
    written = await five_entries(runtime)
    org = runtime.default_project.org_id
    # Make room at seq 5 (in two steps: the primary key must hold after each), then forge.
    await tamper(
        runtime, update(audit_log).where(audit_log.c.seq >= 5).values(seq=audit_log.c.seq + 100)
    )
    await tamper(
        runtime, update(audit_log).where(audit_log.c.seq >= 100).values(seq=audit_log.c.seq - 99)
    )
    forged = dict(_row(written[4]), seq=5, id="aud_forged", action="key.enabled")
    await tamper(runtime, audit_log.insert().values(**forged))
    await tamper(runtime, update(audit_heads).where(audit_heads.c.org_id == org).values(seq=8))
    broken = (await check(runtime)).first_broken
    assert broken == audit.BrokenLink(5, "aud_forged", audit.INSERTED)


async def test_reordered_rows_are_found(runtime: Runtime) -> None:
    written = await five_entries(runtime)
    await tamper(runtime, update(audit_log).where(audit_log.c.seq == 4).values(seq=-4))
    await tamper(runtime, update(audit_log).where(audit_log.c.seq == 5).values(seq=4))
    await tamper(runtime, update(audit_log).where(audit_log.c.seq == -4).values(seq=5))
    broken = (await check(runtime)).first_broken
    assert broken == audit.BrokenLink(4, written[4].id, audit.REORDERED)


def _row(entry: AuditEntry) -> dict[str, object]:
    return {c.name: getattr(entry, c.name) for c in audit_log.columns}


async def test_two_runtimes_writing_at_once_never_fork_the_chain(
    database: Database, clock: ManualClock
) -> None:
    one = await Runtime.start(database.settings(), clock)
    two = await Runtime.start(database.settings(), clock)
    try:
        caller = admin(one)

        async def create_many(runtime: Runtime, prefix: str) -> None:
            for i in range(15):
                await runtime.services.keys.create(caller, NewKey(name=f"{prefix}{i}"))

        await asyncio.gather(create_many(one, "a"), create_many(two, "b"), create_many(one, "c"))
        written = await entries(one)
        assert [e.seq for e in written] == list(range(1, 48))  # 2 at startup, 45 creates
        result = await check(two)
        assert result.ok and result.checked == 47
        async with one.store.engine.connect() as conn:
            count = await conn.scalar(select(func.count()).select_from(audit_log))
        assert count == 47
    finally:
        await one.stop()
        await two.stop()
