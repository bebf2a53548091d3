"""The storage contract, run against every backend by the ``database`` fixture."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import traceback
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from keyplane.domain import ids
from keyplane.domain.keys import Environment, KeyRecord, KeyStatus
from keyplane.domain.tenancy import ManagementKeyRecord, Project
from keyplane.errors import ConflictError, NotFoundError, StorageError
from keyplane.settings import to_async_url
from keyplane.store.base import KeyFilter
from keyplane.store.migrate import migrate
from keyplane.store.sql import SqlStore
from tests.conftest import Database

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def store(database: Database) -> AsyncIterator[SqlStore]:
    store = SqlStore.from_url(to_async_url(database.url), database.schema)
    await migrate(store.engine)
    yield store
    await store.close()


async def _tenancy(store: SqlStore) -> tuple[str, str]:
    org, project = await store.ensure_default_tenancy(NOW)
    return org.id, project.id


def _record(org_id: str, project_id: str, **changes: object) -> KeyRecord:
    record = KeyRecord(
        id=ids.new_id("key"),
        org_id=org_id,
        project_id=project_id,
        hash=secrets.token_hex(32),
        start="kp_live_abcd",
        end="wxyz",
        name="name",
        environment=Environment.LIVE,
        created_at=NOW,
        updated_at=NOW,
    )
    return dataclasses.replace(record, **changes)  # type: ignore[arg-type]


async def test_default_tenancy_is_created_once(store: SqlStore) -> None:
    first = await store.ensure_default_tenancy(NOW)
    second = await store.ensure_default_tenancy(NOW + timedelta(hours=1))
    assert first == second
    assert first[1].key_prefix == "kp"


async def test_migrating_twice_is_harmless(store: SqlStore) -> None:
    await migrate(store.engine)
    await store.ping()


async def test_key_round_trips_every_field(store: SqlStore) -> None:
    org, project = await _tenancy(store)
    record = _record(
        org,
        project,
        label="lbl",
        description="multi\nline",
        owner="cust_1",
        tags=("a", "b"),
        metadata={"billing": {"tier": "pro"}, "n": 3, "ü": "ø"},
        scopes=("read:*",),
        expires_at=NOW + timedelta(days=3),
        environment=Environment.TEST,
    )
    await store.create_key(record)
    assert await store.get_key(org, record.id) == record
    assert await store.get_key(org, record.hash) == record
    assert await store.get_key("org_other", record.id) is None
    match = await store.find_by_secret(record.hash)
    assert match is not None
    assert match.record == record
    assert match.valid_until is None
    assert await store.find_by_secret("0" * 64) is None


async def test_duplicate_hash_is_a_conflict(store: SqlStore) -> None:
    org, project = await _tenancy(store)
    record = await store.create_key(_record(org, project))
    with pytest.raises(ConflictError):
        await store.create_key(dataclasses.replace(record, id=ids.new_id("key")))


async def test_mutation_is_applied_and_missing_key_is_not_found(store: SqlStore) -> None:
    org, project = await _tenancy(store)
    record = await store.create_key(_record(org, project, tags=("x",)))
    updated = await store.mutate_key(
        org, record.id, lambda r: dataclasses.replace(r, name="renamed", tags=("y", "z"))
    )
    assert (await store.get_key(org, record.id)) == updated
    assert [r.id for r in await store.list_keys(org, KeyFilter(tag="y"), NOW, None, 10)] == [
        record.id
    ]
    assert await store.list_keys(org, KeyFilter(tag="x"), NOW, None, 10) == []
    with pytest.raises(NotFoundError):
        await store.mutate_key(org, ids.new_id("key"), lambda r: r)


async def test_a_refused_mutation_changes_nothing(store: SqlStore) -> None:
    org, project = await _tenancy(store)
    record = await store.create_key(_record(org, project))

    def refuse(current: KeyRecord) -> KeyRecord:
        raise ConflictError("no")

    with pytest.raises(ConflictError):
        await store.mutate_key(org, record.id, refuse)
    assert await store.get_key(org, record.id) == record


async def test_concurrent_mutations_are_serialised(store: SqlStore) -> None:
    org, project = await _tenancy(store)
    record = await store.create_key(_record(org, project, tags=()))

    def append(index: int):  # type: ignore[no-untyped-def]
        def apply(current: KeyRecord) -> KeyRecord:
            return dataclasses.replace(current, tags=(*current.tags, f"t{index}"))

        return apply

    await asyncio.gather(*(store.mutate_key(org, record.id, append(i)) for i in range(20)))
    final = await store.get_key(org, record.id)
    assert final is not None
    assert sorted(final.tags) == sorted(f"t{i}" for i in range(20))


async def test_rotation_keeps_old_secret_until_grace_end(store: SqlStore) -> None:
    org, project = await _tenancy(store)
    record = await store.create_key(_record(org, project))
    new_hash = "e" * 64
    grace_until = NOW + timedelta(minutes=5)
    rotated, changed = await store.rotate_key(
        org, record.id, lambda r: dataclasses.replace(r, hash=new_hash), grace_until
    )
    assert rotated.id == record.id
    assert rotated.hash == new_hash
    assert changed == [record.hash]
    old = await store.find_by_secret(record.hash)
    new = await store.find_by_secret(new_hash)
    assert old is not None and old.valid_until == grace_until
    assert new is not None and new.valid_until is None
    # A second rotation with a shorter grace shortens the first old secret's grace too.
    _, changed = await store.rotate_key(
        org, record.id, lambda r: dataclasses.replace(r, hash="d" * 64), NOW
    )
    assert sorted(changed) == sorted([record.hash, new_hash])
    first = await store.find_by_secret(record.hash)
    assert first is not None and first.valid_until == NOW


async def test_list_filters_and_cursor_pagination(store: SqlStore) -> None:
    org, project = await _tenancy(store)
    created = []
    for index in range(7):
        created.append(
            await store.create_key(
                _record(
                    org,
                    project,
                    name=f"Key {index} 100%_x",
                    owner=f"o{index % 2}",
                    metadata={
                        "billing": {"tier": "pro" if index < 3 else "free"},
                        "n": index,
                        "beta": index == 2,
                        "ratio": index / 2,
                    },
                    environment=Environment.TEST if index == 6 else Environment.LIVE,
                )
            )
        )
    everything = KeyFilter()
    page1 = await store.list_keys(org, everything, NOW, None, 3)
    page2 = await store.list_keys(org, everything, NOW, page1[-1].id, 3)
    page3 = await store.list_keys(org, everything, NOW, page2[-1].id, 3)
    assert [r.id for r in page1 + page2 + page3] == [r.id for r in created]

    async def ids_for(**filters: object) -> list[str]:
        rows = await store.list_keys(org, KeyFilter(**filters), NOW, None, 100)  # type: ignore[arg-type]
        return [r.id for r in rows]

    assert await ids_for(owner="o1") == [created[i].id for i in (1, 3, 5)]
    assert await ids_for(environment=Environment.TEST) == [created[6].id]
    assert await ids_for(metadata=((("billing", "tier"), "pro"),)) == [r.id for r in created[:3]]
    assert await ids_for(metadata=((("n",), "4"),)) == [created[4].id]
    assert await ids_for(metadata=((("beta",), "true"),)) == [created[2].id]
    assert await ids_for(metadata=((("beta",), "1"),)) == []
    assert len(await ids_for(metadata=((("beta",), "false"),))) == 6
    assert await ids_for(metadata=((("ratio",), "1.5"),)) == [created[3].id]
    assert await ids_for(metadata=((("billing",), "pro"),)) == []
    assert await ids_for(metadata=((("missing", "path"), "x"),)) == []
    assert await ids_for(name_contains="key 5") == [created[5].id]
    assert await ids_for(name_contains="100%_") == [r.id for r in created]
    assert await ids_for(name_contains="0%_y") == []
    assert await ids_for(project_id="proj_other") == []


async def test_status_filter_uses_effective_status(store: SqlStore) -> None:
    org, project = await _tenancy(store)
    active = await store.create_key(_record(org, project))
    expired = await store.create_key(_record(org, project, expires_at=NOW))
    disabled = await store.create_key(_record(org, project, status=KeyStatus.DISABLED))
    reenabled = await store.create_key(
        _record(org, project, status=KeyStatus.DISABLED, auto_enable_at=NOW)
    )
    revoked = await store.create_key(_record(org, project, status=KeyStatus.REVOKED))

    async def ids_with(status: KeyStatus) -> set[str]:
        rows = await store.list_keys(org, KeyFilter(status=status), NOW, None, 100)
        return {r.id for r in rows}

    assert await ids_with(KeyStatus.ACTIVE) == {active.id, reenabled.id}
    assert await ids_with(KeyStatus.EXPIRED) == {expired.id}
    assert await ids_with(KeyStatus.DISABLED) == {disabled.id}
    assert await ids_with(KeyStatus.REVOKED) == {revoked.id}


async def test_touch_keys_only_moves_last_used_forward(store: SqlStore) -> None:
    org, project = await _tenancy(store)
    record = await store.create_key(_record(org, project))
    later = NOW + timedelta(minutes=2)
    await store.touch_keys({record.id: later})
    await store.touch_keys({record.id: NOW + timedelta(minutes=1)})
    await store.touch_keys({})
    reloaded = await store.get_key(org, record.id)
    assert reloaded is not None and reloaded.last_used_at == later


async def test_management_keys_lifecycle(store: SqlStore) -> None:
    org, project = await _tenancy(store)
    assert await store.count_management_keys() == 0
    record = ManagementKeyRecord(
        id=ids.new_id("mk"),
        org_id=org,
        project_id=project,
        hash="c" * 64,
        start="kp_mgmt_abcd",
        end="wxyz",
        name="ops",
        scopes=("keys:read", "verify"),
        created_at=NOW,
    )
    await store.create_management_key(record)
    assert await store.find_management_key("c" * 64) == record
    assert await store.get_management_key(org, record.id) == record
    assert await store.list_management_keys(org, None, 10) == [record]
    assert await store.list_management_keys(org, record.id, 10) == []
    revoked = await store.revoke_management_key(org, record.id, NOW + timedelta(seconds=1))
    again = await store.revoke_management_key(org, record.id, NOW + timedelta(hours=1))
    assert revoked.revoked_at == again.revoked_at == NOW + timedelta(seconds=1)
    assert await store.count_management_keys() == 1
    with pytest.raises(NotFoundError):
        await store.revoke_management_key(org, ids.new_id("mk"), NOW)


async def test_projects(store: SqlStore) -> None:
    org, default = await _tenancy(store)
    project = Project(ids.new_id("proj"), org, "fastrouter", "sk-fr", NOW)
    await store.create_project(project)
    assert await store.get_project(org, project.id) == project
    assert {p.id for p in await store.list_projects(org)} == {default, project.id}
    with pytest.raises(ConflictError):
        await store.create_project(dataclasses.replace(project, id=ids.new_id("proj")))


async def test_a_database_error_carries_no_sql_parameter(
    store: SqlStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A failed statement's parameters (key digests, metadata, amounts) once reached the logs
    in the driver error's text (``[parameters: ...]``)."""
    marker = f"secret-{secrets.token_hex(8)}"
    with pytest.raises(StorageError) as caught:
        async with store._write() as conn:
            await conn.execute(text("INSERT INTO no_such_table (x) VALUES (:x)"), {"x": marker})
    logging.getLogger("keyplane.test").error("request failed", exc_info=caught.value)
    told = "".join(traceback.format_exception(caught.value)) + caplog.text
    assert "no_such_table" in told  # the error itself is there
    assert marker not in told
