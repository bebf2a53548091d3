"""The ``ManagementKeyStore`` contract (``db.management_keys``), on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import secrets
from datetime import timedelta

import pytest

from keyplane.domain import ids
from keyplane.domain.tenancy import ManagementKeyRecord
from keyplane.errors import ConflictError, NotFoundError
from keyplane.store.database import Database as Db
from tests.store.conftest import NOW, other_tenancy, tenancy


async def test_management_keys_lifecycle(db: Db) -> None:
    org, project = await tenancy(db)
    assert await db.management_keys.count() == 0
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
    await db.management_keys.create(record)
    assert await db.management_keys.find_by_secret("c" * 64) == record
    assert await db.management_keys.get(org, record.id) == record
    assert await db.management_keys.list_page(org, None, 10) == [record]
    assert await db.management_keys.list_page(org, record.id, 10) == []
    revoked = await db.management_keys.revoke(org, record.id, NOW + timedelta(seconds=1))
    again = await db.management_keys.revoke(org, record.id, NOW + timedelta(hours=1))
    assert revoked.revoked_at == again.revoked_at == NOW + timedelta(seconds=1)
    assert await db.management_keys.count() == 1
    with pytest.raises(NotFoundError):
        await db.management_keys.revoke(org, ids.new_id("mk"), NOW)


def _mk(org_id: str, project_id: str | None, **changes: object) -> ManagementKeyRecord:
    record = ManagementKeyRecord(
        id=ids.new_id("mk"),
        org_id=org_id,
        project_id=project_id,
        hash=secrets.token_hex(32),
        start="kp_mgmt_abcd",
        end="wxyz",
        name="ops",
        scopes=("keys:read",),
        created_at=NOW,
    )
    return dataclasses.replace(record, **changes)  # type: ignore[arg-type]


async def test_management_keys_page_and_filter_by_project(db: Db) -> None:
    org, project = await tenancy(db)
    bound = [await db.management_keys.create(_mk(org, project)) for _ in range(3)]
    wide = await db.management_keys.create(_mk(org, None))
    everything = await db.management_keys.list_page(org, None, 10)
    assert [k.id for k in everything] == sorted(k.id for k in [*bound, wide])
    first = await db.management_keys.list_page(org, None, 2)
    rest = await db.management_keys.list_page(org, first[-1].id, 10)
    assert first + rest == everything
    assert await db.management_keys.list_page(org, None, 10, project_id=project) == bound
    with pytest.raises(ConflictError):
        await db.management_keys.create(_mk(org, None, hash=wide.hash))


async def test_another_organizations_management_keys_are_invisible(db: Db) -> None:
    org, _ = await tenancy(db)
    other, other_project = await other_tenancy(db)
    theirs = await db.management_keys.create(_mk(other, other_project))
    assert await db.management_keys.get(org, theirs.id) is None
    assert await db.management_keys.list_page(org, None, 10) == []
    with pytest.raises(NotFoundError):
        await db.management_keys.revoke(org, theirs.id, NOW)
    still = await db.management_keys.get(other, theirs.id)
    assert still is not None and still.revoked_at is None
    # Found by secret in any organization: the caller checks tenancy.
    assert await db.management_keys.find_by_secret(theirs.hash) == theirs


async def test_touch_only_moves_last_used_forward(db: Db) -> None:
    org, _ = await tenancy(db)
    a = await db.management_keys.create(_mk(org, None))
    b = await db.management_keys.create(_mk(org, None))
    later = NOW + timedelta(minutes=5)
    await db.management_keys.touch({a.id: later, b.id: NOW})
    await db.management_keys.touch({a.id: NOW + timedelta(minutes=1)})
    await db.management_keys.touch({})
    reloaded_a = await db.management_keys.get(org, a.id)
    reloaded_b = await db.management_keys.get(org, b.id)
    assert reloaded_a is not None and reloaded_a.last_used_at == later
    assert reloaded_b is not None and reloaded_b.last_used_at == NOW
