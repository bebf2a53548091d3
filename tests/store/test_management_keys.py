"""The ``ManagementKeyStore`` contract (``db.management_keys``), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest

from keyplane.domain import ids
from keyplane.domain.tenancy import ManagementKeyRecord
from keyplane.errors import NotFoundError
from keyplane.store.database import Database as Db
from tests.store.conftest import NOW, tenancy


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
