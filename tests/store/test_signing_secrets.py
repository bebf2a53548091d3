"""The ``SigningSecretStore`` contract (``db.signing_secrets``), on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from keyplane.domain import ids
from keyplane.domain.changes import SYSTEM, Journal
from keyplane.domain.signing_secrets import SigningSecretRecord
from keyplane.errors import ConflictError, NotFoundError
from keyplane.store.database import Database as Db
from tests.store.conftest import NOW, other_tenancy, tenancy


def _record(org_id: str, project_id: str | None, owner: str = "cust_1") -> SigningSecretRecord:
    return SigningSecretRecord(
        id=ids.new_id("sigsec"),
        org_id=org_id,
        project_id=project_id,
        owner=owner,
        description="for acme",
        sealed_secret="v1.sealed-" + owner,
        created_at=NOW,
    )


def _journal() -> Journal:
    return Journal(SYSTEM, NOW)


async def test_a_record_round_trips_and_other_orgs_do_not_see_it(db: Db) -> None:
    org, project = await tenancy(db)
    other, _ = await other_tenancy(db)
    record = await db.signing_secrets.create(_record(org, project), _journal())
    assert await db.signing_secrets.get(org, record.id) == record
    assert await db.signing_secrets.get(other, record.id) is None


async def test_lists_filter_by_owner_and_project_and_page_by_id(db: Db) -> None:
    org, project = await tenancy(db)
    made = [
        await db.signing_secrets.create(_record(org, project, owner), _journal())
        for owner in ("a", "b", "a")
    ]
    org_wide = await db.signing_secrets.create(_record(org, None, "a"), _journal())
    everything = await db.signing_secrets.list_page(
        org, project_id=None, owner=None, after=None, limit=10
    )
    assert [r.id for r in everything] == [*(r.id for r in made), org_wide.id]
    owners_a = await db.signing_secrets.list_page(
        org, project_id=project, owner="a", after=None, limit=10
    )
    assert [r.id for r in owners_a] == [made[0].id, made[2].id]
    page = await db.signing_secrets.list_page(
        org, project_id=None, owner=None, after=made[0].id, limit=2
    )
    assert [r.id for r in page] == [made[1].id, made[2].id]


async def test_a_rotation_is_compare_and_set(db: Db) -> None:
    org, project = await tenancy(db)
    current = await db.signing_secrets.create(_record(org, project), _journal())
    rotated = dataclasses.replace(
        current,
        sealed_secret="v1.new",
        previous_sealed_secret=current.sealed_secret,
        previous_expires_at=NOW + timedelta(days=1),
        rotated_at=NOW,
    )
    await db.signing_secrets.rotate(current, rotated, _journal())
    assert await db.signing_secrets.get(org, current.id) == rotated
    # A second rotation from the stale read loses instead of overwriting the first.
    with pytest.raises(ConflictError):
        await db.signing_secrets.rotate(
            current, dataclasses.replace(rotated, sealed_secret="v1.other"), _journal()
        )
    await db.signing_secrets.delete(org, current.id, _journal())
    with pytest.raises(NotFoundError):
        await db.signing_secrets.rotate(rotated, rotated, _journal())
    with pytest.raises(NotFoundError):
        await db.signing_secrets.delete(org, current.id, _journal())
