"""The ``VaultStore`` contract (``db.vault``): credentials and leases, on SQLite and
PostgreSQL. (Lease strategies and batching are covered through the service in
``tests/test_vault_*.py``; here each store method on its own.)"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from datetime import timedelta

import pytest

from keyplane.domain import ids
from keyplane.domain.vault import Choice, CredentialRecord, CredentialStatus, Strategy
from keyplane.errors import ConflictError, NotFoundError
from keyplane.store.database import Database as Db
from keyplane.store.vault import CredentialFilter, Lease, LeaseAsk
from tests.store.conftest import NOW, other_tenancy, tenancy


def _credential(org_id: str, alias: str, **changes: object) -> CredentialRecord:
    record = CredentialRecord(
        id=ids.new_id("cred"),
        org_id=org_id,
        provider="openai",
        alias=alias,
        sealed_secret=f"sealed-{alias}",
        master_key_id="mk1",
        secret_hint="...abcd",
        environment="production",
        tags=("a", "b"),
        metadata={"team": {"name": "core"}, "n": 2},
        weight=1,
        daily_limit=None,
        monthly_limit=None,
        max_concurrent=None,
        status=CredentialStatus.ACTIVE,
        created_at=NOW,
        updated_at=NOW,
    )
    return dataclasses.replace(record, **changes)  # type: ignore[arg-type]


def _ask(org_id: str, filters: CredentialFilter | None = None, ttl: int = 60) -> LeaseAsk:
    return LeaseAsk(
        org_id,
        filters or CredentialFilter(provider="openai"),
        Strategy.ROUND_ROBIN,
        timedelta(seconds=ttl),
        lambda record: f"secret-of-{record.alias}",
    )


async def test_credentials_round_trip_and_filter(db: Db) -> None:
    org, project = await tenancy(db)
    one = _credential(org, "one")
    two = _credential(org, "two", provider="anthropic", tags=("b",), environment=None)
    three = _credential(org, "three", project_id=project, metadata={"team": {"name": "ml"}})
    await db.vault.create_credentials([one, two, three])
    await db.vault.create_credentials([])
    assert await db.vault.get_credential(org, one.id) == one
    assert await db.vault.get_credential(org, "cred_missing") is None

    async def listed(**filters: object) -> list[str]:
        found = await db.vault.list_credentials(
            org,
            CredentialFilter(**filters),  # type: ignore[arg-type]
            NOW,
            None,
            100,
        )
        return sorted(record.alias for record, _ in found)

    assert await listed() == ["one", "three", "two"]
    assert await listed(provider="anthropic") == ["two"]
    assert await listed(tags=["a"]) == ["one", "three"]
    assert await listed(tags=["a", "b"]) == ["one", "three"]
    assert await listed(environment="production") == ["one", "three"]
    assert await listed(metadata=[(("team", "name"), "ml")]) == ["three"]
    assert await listed(metadata=[(("n",), "2")]) == ["one", "two"]
    # A project-bound caller sees its project's credentials only (none are shared).
    assert await listed(seen_from_project=project) == ["three"]
    assert await db.vault.get_credential(org, one.id, seen_from_project=project) is None
    page = await db.vault.list_credentials(org, CredentialFilter(), NOW, None, 2)
    after = await db.vault.list_credentials(org, CredentialFilter(), NOW, page[-1][0].id, 2)
    assert [r.id for r, _ in page + after] == sorted(r.id for r in (one, two, three))


async def test_creating_credentials_is_all_or_nothing(db: Db) -> None:
    org, _ = await tenancy(db)
    one = _credential(org, "one")
    with pytest.raises(ConflictError):
        await db.vault.create_credentials([one, dataclasses.replace(one, alias="dup")])
    assert await db.vault.get_credential(org, one.id) is None


async def test_another_organizations_credentials_are_invisible(db: Db) -> None:
    org, project = await tenancy(db)
    other, _ = await other_tenancy(db)
    theirs = _credential(other, "theirs")
    await db.vault.create_credentials([theirs])
    assert await db.vault.get_credential(org, theirs.id) is None
    assert await db.vault.list_credentials(org, CredentialFilter(), NOW, None, 10) == []
    with pytest.raises(NotFoundError):
        await db.vault.mutate_credential(org, theirs.id, lambda r: r)
    with pytest.raises(NotFoundError):
        await db.vault.delete_credential(org, theirs.id)
    answers, _ = await db.vault.lease_batch([_ask(org)], {}, NOW)
    assert isinstance(answers[0], Choice) and answers[0].record is None
    assert await db.vault.has_project(org, project)
    assert not await db.vault.has_project(org, "proj_missing")
    assert await db.vault.get_credential(other, theirs.id) == theirs


async def test_concurrent_mutations_of_a_credential_take_turns(db: Db) -> None:
    org, _ = await tenancy(db)
    record = _credential(org, "one", weight=0)
    await db.vault.create_credentials([record])

    def bump(current: CredentialRecord) -> CredentialRecord:
        return dataclasses.replace(current, weight=current.weight + 1)

    await asyncio.gather(*(db.vault.mutate_credential(org, record.id, bump) for _ in range(10)))
    final = await db.vault.get_credential(org, record.id)
    assert final is not None and final.weight == 10
    with pytest.raises(NotFoundError):
        await db.vault.mutate_credential(org, "cred_missing", bump)


async def test_leases_count_as_live_until_they_expire_or_are_released(db: Db) -> None:
    org, _ = await tenancy(db)
    record = _credential(org, "one", max_concurrent=2)
    await db.vault.create_credentials([record])
    answers, _ = await db.vault.lease_batch(
        [_ask(org), _ask(org, ttl=10), _ask(org)], {}, NOW, random.Random(1)
    )
    first, second, third = answers
    assert isinstance(first, Lease) and isinstance(second, Lease)
    assert first.secret == "secret-of-one" and first.expires_at == NOW + timedelta(seconds=60)
    assert isinstance(third, Choice) and third.record is None  # max_concurrent reached
    assert await db.vault.live_leases([record.id], NOW) == {record.id: 2}
    assert await db.vault.live_leases([record.id], NOW + timedelta(seconds=10)) == {record.id: 1}
    assert await db.vault.live_leases([], NOW) == {}
    listed = await db.vault.list_credentials(org, CredentialFilter(), NOW, None, 10)
    assert [(r.total_count, live) for r, live in listed] == [(2, 2)]
    # An ok release ends a lease; an unknown or repeated one reads as unknown.
    _, released = await db.vault.lease_batch([], {(org, None): [first.id, "lease_x"]}, NOW)
    assert set(released) == {first.id} and released[first.id].id == record.id
    _, again = await db.vault.lease_batch([], {(org, None): [first.id]}, NOW)
    assert again == {}
    assert await db.vault.live_leases([record.id], NOW) == {record.id: 1}


async def test_a_release_with_an_outcome_changes_the_credential_first(db: Db) -> None:
    org, _ = await tenancy(db)
    other, _ = await other_tenancy(db)
    record = _credential(org, "one")
    await db.vault.create_credentials([record])
    [lease], _ = await db.vault.lease_batch([_ask(org)], {}, NOW)
    assert isinstance(lease, Lease)

    def disable(current: CredentialRecord) -> CredentialRecord:
        return dataclasses.replace(current, status=CredentialStatus.DISABLED, status_reason="401")

    with pytest.raises(NotFoundError):  # another organization cannot end it
        await db.vault.release((other, None), lease.id, disable)
    changed = await db.vault.release((org, None), lease.id, disable)
    assert changed.status is CredentialStatus.DISABLED and changed.total_count == 1
    assert await db.vault.get_credential(org, record.id) == changed
    assert await db.vault.live_leases([record.id], NOW) == {}
    with pytest.raises(NotFoundError):
        await db.vault.release((org, None), lease.id, disable)


async def test_deleting_a_credential_removes_its_leases(db: Db) -> None:
    org, _ = await tenancy(db)
    record = _credential(org, "one")
    await db.vault.create_credentials([record])
    await db.vault.lease_batch([_ask(org)], {}, NOW)
    await db.vault.delete_credential(org, record.id)
    assert await db.vault.get_credential(org, record.id) is None
    assert await db.vault.live_leases([record.id], NOW) == {}
    with pytest.raises(NotFoundError):
        await db.vault.delete_credential(org, record.id)
