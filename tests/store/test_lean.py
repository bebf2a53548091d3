"""The lean key reads (``store/lean.py``) answer exactly what the ORM reads answer.

``SqlKeyStore.find_by_secret`` / ``find_by_id`` are the reference; ``LeanKeyReads`` is the
fast path the key cache loads through. On random keys (plans, policies, every status,
expiry, rotated-out secrets with sealed signing secrets, unicode text and nested metadata)
both must give equal matches, and the key cache entries built from them must be equal too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyplane.domain import ids
from keyplane.domain.keys import Environment, KeyRecord, KeyStatus
from keyplane.domain.plans import PlanRecord
from keyplane.errors import StorageError
from keyplane.services.directory import build_entry
from keyplane.settings import to_async_url
from keyplane.store.database import Database as Db
from keyplane.store.keys import SecretMatch
from keyplane.store.migrate import migrate
from tests.conftest import PG_URL, Database, postgres_schema
from tests.store.conftest import NOW, key_record, tenancy

#: Valid policy documents (the entries parse them), for keys and plans alike.
_POLICIES: list[dict[str, Any]] = [
    {},
    {"rate_limits": [{"name": "per_minute", "limit": 10, "period": 60}]},
    {"budget": {"credit_limit_micros": 5}},
    {"scopes": ["read", "write"]},
    {"rate_limits": [{"name": "burst", "limit": 3, "period": 1, "burst": 5}], "scopes": ["read"]},
    {"token_limits": {"total_per_minute": 1000}, "concurrency": {"max_parallel": 2}},
]

_TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=6,
)
#: Microseconds included: both reads must keep them.
_TIMES = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
_KEY = st.fixed_dictionaries(
    {
        "status": st.sampled_from(list(KeyStatus)),
        "environment": st.sampled_from(list(Environment)),
        "name": _TEXT.filter(bool),
        "label": st.none() | _TEXT,
        "description": st.none() | _TEXT,
        "owner": st.none() | _TEXT,
        "tags": st.lists(st.from_regex(r"[a-z]{1,8}", fullmatch=True), max_size=3, unique=True),
        "metadata": st.dictionaries(_TEXT, _JSON, max_size=4),
        "scopes": st.lists(st.sampled_from(["read", "write", "admin"]), max_size=3, unique=True),
        "expires_at": st.none() | _TIMES,
        "disabled_reason": st.none() | _TEXT,
        "auto_enable_at": st.none() | _TIMES,
        "revoked_reason": st.none() | _TEXT,
        "revoked_at": st.none() | _TIMES,
        "last_used_at": st.none() | _TIMES,
        "created_at": _TIMES,
        "policy": st.sampled_from(_POLICIES),
        "created_by": st.none() | st.from_regex(r"[a-z0-9_]{1,20}", fullmatch=True),
    }
)
_CASE = st.tuples(
    _KEY,
    st.none() | st.sampled_from(range(len(_POLICIES))),  # the plan's policy, if on a plan
    st.booleans(),  # rotated: the first secret is then rotated out, with a grace period
    st.none() | _TEXT,  # a sealed signing secret beside the secret
)


async def _open(database: Database) -> Db:
    db = Db.from_url(to_async_url(database.url), database.schema)
    await migrate(db.engine)
    return db


async def _store_key(
    db: Db, org_id: str, project_id: str, case: tuple[Any, ...]
) -> tuple[KeyRecord, list[str]]:
    """Store one drawn key; returns it with every secret hash it has (current last)."""
    fields, plan_policy, rotated, sealed = case
    plan_id = None
    if plan_policy is not None:
        plan = PlanRecord(
            ids.new_id("plan"), org_id, ids.new_id("p"), NOW, NOW, policy=_POLICIES[plan_policy]
        )
        plan_id = (await db.plans.create(plan)).id
    changes = dict(fields, tags=tuple(fields["tags"]), scopes=tuple(fields["scopes"]))
    changes["updated_at"] = changes["created_at"]
    record = key_record(org_id, project_id, plan_id=plan_id, **changes)
    await db.keys.create(record, sealed_signing_secret=sealed)
    hashes = [record.hash]
    if rotated:
        new_hash = secrets.token_hex(32)
        grace = record.created_at + timedelta(hours=1)
        record, _ = await db.keys.rotate(
            org_id,
            record.id,
            lambda current: dataclasses.replace(current, hash=new_hash),
            grace,
            sealed_signing_secret=sealed,
        )
        hashes.append(new_hash)
    return record, hashes


async def _assert_same(db: Db, record: KeyRecord, hashes: list[str]) -> None:
    for secret_hash in hashes:
        reference = await db.keys.find_by_secret(secret_hash)
        lean = await db.key_reads.find_by_secret(secret_hash)
        assert reference is not None
        assert lean == reference
        assert build_entry(lean) == build_entry(reference)
    by_id, reference_by_id = (
        await db.key_reads.find_by_id(record.id),
        await db.keys.find_by_id(record.id),
    )
    assert by_id is not None
    assert reference_by_id is not None
    assert by_id == reference_by_id
    assert build_entry(by_id) == build_entry(reference_by_id)


@settings(
    max_examples=15,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(cases=st.lists(_CASE, min_size=1, max_size=4))
def test_lean_reads_equal_the_orm_reads_on_random_keys(
    database: Database, cases: list[tuple[Any, ...]]
) -> None:
    async def run() -> None:
        db = await _open(database)
        try:
            org_id, project_id = await tenancy(db)
            for case in cases:
                record, hashes = await _store_key(db, org_id, project_id, case)
                await _assert_same(db, record, hashes)
        finally:
            await db.close()

    asyncio.run(run())


async def test_unknown_secret_and_id_read_as_none(db: Db) -> None:
    assert await db.key_reads.find_by_secret("0" * 64) is None
    assert await db.key_reads.find_by_id(ids.new_id("key")) is None


async def test_a_changed_key_reads_as_changed(db: Db) -> None:
    # Kept connections read outside any transaction: each read sees the latest commit.
    org_id, project_id = await tenancy(db)
    record = await db.keys.create(key_record(org_id, project_id))
    first = await db.key_reads.find_by_secret(record.hash)
    assert first is not None
    assert first.record.status is KeyStatus.ACTIVE
    await db.keys.mutate(
        org_id, record.id, lambda r: dataclasses.replace(r, status=KeyStatus.DISABLED)
    )
    again = await db.key_reads.find_by_secret(record.hash)
    assert again is not None
    assert again.record.status is KeyStatus.DISABLED


async def test_concurrent_reads_past_the_connection_limit_all_answer(db: Db) -> None:
    org_id, project_id = await tenancy(db)
    records = [await db.keys.create(key_record(org_id, project_id)) for _ in range(3)]
    found = await asyncio.gather(
        *(db.key_reads.find_by_secret(r.hash) for r in records * 10),
        *(db.key_reads.find_by_id(r.id) for r in records * 10),
    )
    assert [m.record.id for m in found if isinstance(m, SecretMatch)] == [
        r.id for r in records * 20
    ]


async def test_a_closed_database_refuses_lean_reads_with_a_storage_error(db: Db) -> None:
    await db.key_reads.close()
    with pytest.raises(StorageError):
        await db.key_reads.find_by_secret("0" * 64)


@pytest.mark.postgres
def test_lean_reads_in_an_empty_postgres_schema() -> None:
    """Its own schema, nothing shared: unmigrated it fails cleanly, migrated it reads."""

    async def run(schema: str) -> None:
        db = Db.from_url(to_async_url(PG_URL), schema)
        try:
            with pytest.raises(StorageError):
                await db.key_reads.find_by_secret("0" * 64)  # no tables yet
            await migrate(db.engine, schema)
            assert await db.key_reads.find_by_secret("0" * 64) is None
            org_id, project_id = await tenancy(db)
            record = await db.keys.create(key_record(org_id, project_id))
            match = await db.key_reads.find_by_secret(record.hash)
            assert match == await db.keys.find_by_secret(record.hash)
            assert match is not None
            assert match.record == record
        finally:
            await db.close()

    with postgres_schema() as schema:
        asyncio.run(run(schema))


async def test_a_read_cancelled_while_its_connection_opens_gives_the_connection_back(
    db: Db,
) -> None:
    """Cancelled mid-checkout, the connection must go back to the pool, not to the collector."""
    records = [await db.keys.create(key_record(*await tenancy(db)))]
    before = db.engine.pool.checkedout()  # type: ignore[attr-defined]
    for _ in range(20):
        reads = [asyncio.ensure_future(db.key_reads.find_by_id(records[0].id)) for _ in range(4)]
        await asyncio.sleep(0)  # each read is now opening its connection
        for read in reads:
            read.cancel()
        await asyncio.gather(*reads, return_exceptions=True)
    await db.key_reads.close()
    for _ in range(200):  # the given-back connections close on their own tasks
        if db.engine.pool.checkedout() <= before:  # type: ignore[attr-defined]
            break
        await asyncio.sleep(0.01)
    assert db.engine.pool.checkedout() <= before  # type: ignore[attr-defined]
