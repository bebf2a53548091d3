"""The ``IdempotencyStore`` contract (``db.idempotency``) and the idempotent create of a key,
on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from keyplane.errors import ConflictError
from keyplane.store.database import Database as Db
from keyplane.store.idempotency import IdempotencyRecord
from tests.store.conftest import NOW, key_record, other_tenancy, tenancy


def _idem(
    org_id: str, principal: str, digest: str, object_id: str, **kw: object
) -> IdempotencyRecord:
    return IdempotencyRecord(
        org_id=org_id,
        principal_id=principal,
        key_digest=digest,
        operation="keys.create",
        fingerprint="f" * 64,
        object_id=object_id,
        created_at=kw.get("created_at", NOW),  # type: ignore[arg-type]
        sealed_secret=kw.get("sealed_secret", "sealed"),  # type: ignore[arg-type]
    )


async def test_a_record_is_written_with_its_key_and_read_back_by_its_caller_only(db: Db) -> None:
    org, project = await tenancy(db)
    other, _ = await other_tenancy(db)
    record = key_record(org, project)
    marker = _idem(org, "mk_1", "d" * 64, record.id)
    await db.keys.create(record, marker)
    assert await db.idempotency.get(org, "mk_1", "d" * 64) == marker
    assert await db.idempotency.get(org, "mk_2", "d" * 64) is None  # another caller
    assert await db.idempotency.get(other, "mk_1", "d" * 64) is None  # another org
    assert await db.idempotency.get(org, "mk_1", "e" * 64) is None


async def test_a_concurrent_retry_fails_before_inserting_anything(db: Db) -> None:
    org, project = await tenancy(db)
    first, second = key_record(org, project), key_record(org, project)
    results = await asyncio.gather(
        db.keys.create(first, _idem(org, "mk_1", "r" * 64, first.id)),
        db.keys.create(second, _idem(org, "mk_1", "r" * 64, second.id)),
        return_exceptions=True,
    )
    conflicts = [r for r in results if isinstance(r, ConflictError)]
    assert len(conflicts) == 1
    winner = await db.idempotency.get(org, "mk_1", "r" * 64)
    assert winner is not None
    loser = second.id if winner.object_id == first.id else first.id
    assert await db.keys.get(org, loser) is None
    assert await db.keys.get(org, winner.object_id) is not None


async def test_erasing_secrets_keeps_the_records_and_counts_once(db: Db) -> None:
    org, project = await tenancy(db)
    old, fresh, mine = key_record(org, project), key_record(org, project), key_record(org, project)
    await db.keys.create(old, _idem(org, "mk_1", "1" * 64, old.id))
    await db.keys.create(
        fresh, _idem(org, "mk_1", "2" * 64, fresh.id, created_at=NOW + timedelta(hours=2))
    )
    await db.keys.create(mine, _idem(org, "mk_2", "3" * 64, mine.id))
    cutoff = NOW + timedelta(hours=1)
    # Narrowed to one caller: only mk_2's record before the cut-off.
    assert await db.idempotency.erase_secrets(cutoff, org, "mk_2") == 1
    narrowed = await db.idempotency.get(org, "mk_2", "3" * 64)
    assert narrowed is not None and narrowed.sealed_secret is None
    kept = await db.idempotency.get(org, "mk_1", "1" * 64)
    assert kept is not None and kept.sealed_secret == "sealed"
    # Everyone's: the remaining old one; the fresh one keeps its secret.
    assert await db.idempotency.erase_secrets(cutoff) == 1
    assert await db.idempotency.erase_secrets(cutoff) == 0
    erased = await db.idempotency.get(org, "mk_1", "1" * 64)
    assert erased is not None and erased.sealed_secret is None and erased.object_id == old.id
    still = await db.idempotency.get(org, "mk_1", "2" * 64)
    assert still is not None and still.sealed_secret == "sealed"


async def test_a_replayed_idempotency_record_is_a_conflict(db: Db) -> None:
    org, project = await tenancy(db)
    record = key_record(org, project)
    await db.keys.create(record, _idem(org, "mk_1", "x" * 64, record.id))
    again = key_record(org, project)
    with pytest.raises(ConflictError):
        await db.keys.create(again, _idem(org, "mk_1", "x" * 64, again.id))
    assert await db.keys.get(org, again.id) is None
