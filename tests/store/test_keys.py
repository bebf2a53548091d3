"""The ``KeyStore`` contract (``db.keys``), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

import pytest

from keyplane.domain import ids
from keyplane.domain.keys import Environment, KeyRecord, KeyStatus
from keyplane.domain.plans import PlanRecord
from keyplane.errors import ConflictError, NotFoundError
from keyplane.store.base import KeyFilter
from keyplane.store.database import Database as Db
from tests.store.conftest import NOW, key_record, other_tenancy, tenancy


async def test_key_round_trips_every_field(db: Db) -> None:
    org, project = await tenancy(db)
    record = key_record(
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
    await db.keys.create(record)
    assert await db.keys.get(org, record.id) == record
    assert await db.keys.get(org, record.hash) == record
    assert await db.keys.get("org_other", record.id) is None
    match = await db.keys.find_by_secret(record.hash)
    assert match is not None
    assert match.record == record
    assert match.valid_until is None
    assert await db.keys.find_by_secret("0" * 64) is None


async def test_duplicate_hash_is_a_conflict(db: Db) -> None:
    org, project = await tenancy(db)
    record = await db.keys.create(key_record(org, project))
    with pytest.raises(ConflictError):
        await db.keys.create(dataclasses.replace(record, id=ids.new_id("key")))


async def test_mutation_is_applied_and_missing_key_is_not_found(db: Db) -> None:
    org, project = await tenancy(db)
    record = await db.keys.create(key_record(org, project, tags=("x",)))
    updated = await db.keys.mutate(
        org, record.id, lambda r: dataclasses.replace(r, name="renamed", tags=("y", "z"))
    )
    assert (await db.keys.get(org, record.id)) == updated
    assert [r.id for r in await db.keys.list_page(org, KeyFilter(tag="y"), NOW, None, 10)] == [
        record.id
    ]
    assert await db.keys.list_page(org, KeyFilter(tag="x"), NOW, None, 10) == []
    with pytest.raises(NotFoundError):
        await db.keys.mutate(org, ids.new_id("key"), lambda r: r)


async def test_a_refused_mutation_changes_nothing(db: Db) -> None:
    org, project = await tenancy(db)
    record = await db.keys.create(key_record(org, project))

    def refuse(current: KeyRecord) -> KeyRecord:
        raise ConflictError("no")

    with pytest.raises(ConflictError):
        await db.keys.mutate(org, record.id, refuse)
    assert await db.keys.get(org, record.id) == record


async def test_concurrent_mutations_are_serialised(db: Db) -> None:
    org, project = await tenancy(db)
    record = await db.keys.create(key_record(org, project, tags=()))

    def append(index: int):  # type: ignore[no-untyped-def]
        def apply(current: KeyRecord) -> KeyRecord:
            return dataclasses.replace(current, tags=(*current.tags, f"t{index}"))

        return apply

    await asyncio.gather(*(db.keys.mutate(org, record.id, append(i)) for i in range(20)))
    final = await db.keys.get(org, record.id)
    assert final is not None
    assert sorted(final.tags) == sorted(f"t{i}" for i in range(20))


async def test_rotation_keeps_old_secret_until_grace_end(db: Db) -> None:
    org, project = await tenancy(db)
    record = await db.keys.create(key_record(org, project))
    new_hash = "e" * 64
    grace_until = NOW + timedelta(minutes=5)
    rotated, changed = await db.keys.rotate(
        org, record.id, lambda r: dataclasses.replace(r, hash=new_hash), grace_until
    )
    assert rotated.id == record.id
    assert rotated.hash == new_hash
    assert changed == [record.hash]
    old = await db.keys.find_by_secret(record.hash)
    new = await db.keys.find_by_secret(new_hash)
    assert old is not None and old.valid_until == grace_until
    assert new is not None and new.valid_until is None
    # A second rotation with a shorter grace shortens the first old secret's grace too.
    _, changed = await db.keys.rotate(
        org, record.id, lambda r: dataclasses.replace(r, hash="d" * 64), NOW
    )
    assert sorted(changed) == sorted([record.hash, new_hash])
    first = await db.keys.find_by_secret(record.hash)
    assert first is not None and first.valid_until == NOW


async def test_each_key_secret_keeps_its_own_sealed_signing_secret(db: Db) -> None:
    org, project = await tenancy(db)
    record = await db.keys.create(key_record(org, project), sealed_signing_secret="v1.first")
    new_hash = "c" * 64
    await db.keys.rotate(
        org,
        record.id,
        lambda r: dataclasses.replace(r, hash=new_hash),
        NOW + timedelta(minutes=5),
        sealed_signing_secret="v1.second",
    )
    old = await db.keys.find_by_secret(record.hash)
    new = await db.keys.find_by_secret(new_hash)
    assert old is not None and (old.sealed_signing_secret, old.secret_hash) == (
        "v1.first",
        record.hash,
    )
    assert new is not None and (new.sealed_signing_secret, new.secret_hash) == (
        "v1.second",
        new_hash,
    )
    plain = await db.keys.create(key_record(org, project))
    found = await db.keys.find_by_secret(plain.hash)
    assert found is not None and found.sealed_signing_secret is None


async def test_list_filters_and_cursor_pagination(db: Db) -> None:
    org, project = await tenancy(db)
    created = []
    for index in range(7):
        created.append(
            await db.keys.create(
                key_record(
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
    page1 = await db.keys.list_page(org, everything, NOW, None, 3)
    page2 = await db.keys.list_page(org, everything, NOW, page1[-1].id, 3)
    page3 = await db.keys.list_page(org, everything, NOW, page2[-1].id, 3)
    assert [r.id for r in page1 + page2 + page3] == [r.id for r in created]

    async def ids_for(**filters: object) -> list[str]:
        rows = await db.keys.list_page(org, KeyFilter(**filters), NOW, None, 100)  # type: ignore[arg-type]
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


async def test_status_filter_uses_effective_status(db: Db) -> None:
    org, project = await tenancy(db)
    active = await db.keys.create(key_record(org, project))
    expired = await db.keys.create(key_record(org, project, expires_at=NOW))
    disabled = await db.keys.create(key_record(org, project, status=KeyStatus.DISABLED))
    reenabled = await db.keys.create(
        key_record(org, project, status=KeyStatus.DISABLED, auto_enable_at=NOW)
    )
    revoked = await db.keys.create(key_record(org, project, status=KeyStatus.REVOKED))

    async def ids_with(status: KeyStatus) -> set[str]:
        rows = await db.keys.list_page(org, KeyFilter(status=status), NOW, None, 100)
        return {r.id for r in rows}

    assert await ids_with(KeyStatus.ACTIVE) == {active.id, reenabled.id}
    assert await ids_with(KeyStatus.EXPIRED) == {expired.id}
    assert await ids_with(KeyStatus.DISABLED) == {disabled.id}
    assert await ids_with(KeyStatus.REVOKED) == {revoked.id}


async def test_touch_keys_only_moves_last_used_forward(db: Db) -> None:
    org, project = await tenancy(db)
    record = await db.keys.create(key_record(org, project))
    later = NOW + timedelta(minutes=2)
    await db.keys.touch({record.id: later})
    await db.keys.touch({record.id: NOW + timedelta(minutes=1)})
    await db.keys.touch({})
    reloaded = await db.keys.get(org, record.id)
    assert reloaded is not None and reloaded.last_used_at == later


async def test_instances_touching_the_same_keys_in_other_orders_do_not_deadlock(db: Db) -> None:
    # Each instance flushes last_used for the keys its own traffic used, in the order it
    # first saw them. Rows locked in those orders would wait on each other in a cycle, and
    # PostgreSQL would abort one flush as a deadlock (after holding its locks a second).
    org, project = await tenancy(db)
    records = [await db.keys.create(key_record(org, project)) for _ in range(120)]
    key_ids = [record.id for record in records]
    for round_number in range(3):
        when = NOW + timedelta(minutes=round_number + 1)
        forward = dict.fromkeys(key_ids, when)
        backward = dict.fromkeys(reversed(key_ids), when + timedelta(seconds=1))
        await asyncio.gather(db.keys.touch(forward), db.keys.touch(backward))
        for key_id in (key_ids[0], key_ids[-1]):
            reloaded = await db.keys.get(org, key_id)
            assert reloaded is not None
            assert reloaded.last_used_at == when + timedelta(seconds=1)


async def test_find_by_id_carries_the_plan_in_any_organization(db: Db) -> None:
    org, _ = await other_tenancy(db)
    project = (await db.tenancy.list_projects(org))[0].id
    plan = PlanRecord(ids.new_id("plan"), org, "pro", NOW, NOW, policy={"scopes": ["a"]})
    await db.plans.create(plan)
    record = await db.keys.create(key_record(org, project, plan_id=plan.id))
    match = await db.keys.find_by_id(record.id)
    assert match is not None
    assert (match.record, match.valid_until) == (record, None)
    assert (match.plan_name, match.plan_policy) == ("pro", {"scopes": ["a"]})
    by_secret = await db.keys.find_by_secret(record.hash)
    assert by_secret is not None and by_secret.plan_name == "pro"
    plain = await db.keys.create(key_record(org, project))
    bare = await db.keys.find_by_id(plain.id)
    assert bare is not None and (bare.plan_name, bare.plan_policy) == (None, None)
    assert await db.keys.find_by_id(ids.new_id("key")) is None


async def test_another_organizations_keys_are_invisible(db: Db) -> None:
    org, project = await tenancy(db)
    other, other_project = await other_tenancy(db)
    theirs = await db.keys.create(key_record(other, other_project, owner="o"))
    mine = await db.keys.create(key_record(org, project, owner="o"))
    assert await db.keys.get(org, theirs.id) is None
    assert await db.keys.get(org, theirs.hash) is None
    assert await db.keys.list_page(org, KeyFilter(owner="o"), NOW, None, 10) == [mine]
    with pytest.raises(NotFoundError):
        await db.keys.mutate(org, theirs.id, lambda r: r)
    with pytest.raises(NotFoundError):
        await db.keys.rotate(org, theirs.id, lambda r: r, NOW)
    assert await db.keys.get(other, theirs.id) == theirs
