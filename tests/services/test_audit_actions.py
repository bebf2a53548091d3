"""Every management action leaves its audit entry, with the right actor, target and details,
on SQLite and PostgreSQL; security events are aggregated; retention keeps the chain verifiable;
and nothing secret ever reaches the audit table."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from keyplane.domain.changes import Origin
from keyplane.domain.clock import ManualClock
from keyplane.domain.tenancy import Principal
from keyplane.domain.vault import Outcome
from keyplane.errors import AuthenticationError
from keyplane.services.keys import Idempotency, NewKey
from keyplane.services.runtime import Runtime
from keyplane.services.vault import LeaseRequest, NewCredential
from keyplane.services.verify import VerifyRequest
from keyplane.store.tables import audit_log
from tests.conftest import Database

ORIGIN = Origin.of("203.0.113.7", "curl/8", "req-1")


@pytest.fixture
async def runtime(database: Database, clock: ManualClock) -> AsyncIterator[Runtime]:
    runtime = await Runtime.start(database.settings(), clock)
    try:
        yield runtime
    finally:
        await runtime.stop()


def admin(runtime: Runtime) -> Principal:
    org = runtime.default_project.org_id
    return Principal("mk_admin", org, None, ("*",), name="ops", origin=ORIGIN)


async def rows(runtime: Runtime, action: str | None = None) -> list[dict[str, Any]]:
    query = select(audit_log).order_by(audit_log.c.seq)
    if action is not None:
        query = query.where(audit_log.c.action == action)
    async with runtime.store.engine.connect() as conn:
        return [dict(row._mapping) for row in await conn.execute(query)]


async def one(runtime: Runtime, action: str, target_id: str | None = None) -> dict[str, Any]:
    found = [r for r in await rows(runtime, action) if target_id in (None, r["target_id"])]
    assert len(found) == 1, (action, found)
    return found[0]


def by_admin(row: dict[str, Any]) -> bool:
    return (row["actor_type"], row["actor_id"], row["actor_name"], row["actor_ip"]) == (
        "management_key",
        "mk_admin",
        "ops",
        "203.0.113.7",
    )


async def test_the_default_organization_and_project_are_recorded_as_the_system(
    runtime: Runtime,
) -> None:
    org = await one(runtime, "organization.created")
    assert (org["actor_type"], org["target_id"]) == ("system", runtime.default_project.org_id)
    project = await one(runtime, "project.created")
    assert project["target_id"] == runtime.default_project.id


async def test_key_actions_are_recorded(runtime: Runtime, clock: ManualClock) -> None:
    keys, caller = runtime.services.keys, admin(runtime)
    issued = await keys.create(caller, NewKey(name="acme"))
    key_id = issued.record.id
    await keys.update(caller, key_id, {"name": "acme 2"})
    await keys.disable(caller, key_id, "abuse", None)
    await keys.enable(caller, key_id)
    await keys.rotate(caller, key_id, timedelta(hours=1))
    await keys.revoke(caller, key_id, "left")
    for action in ("key.created", "key.disabled", "key.enabled", "key.rotated"):
        assert by_admin(await one(runtime, action, key_id))
    updated = await one(runtime, "key.updated", key_id)
    assert by_admin(updated)
    assert updated["details"]["changes"] == {"name": {"from": "acme", "to": "acme 2"}}
    revoked = await one(runtime, "key.revoked", key_id)
    assert (revoked["target_type"], revoked["details"]["reason"]) == ("key", "left")


async def test_an_idempotent_replay_is_recorded(runtime: Runtime) -> None:
    keys, caller = runtime.services.keys, admin(runtime)
    retry = Idempotency("retry-1", hashlib.sha256(b"body").hexdigest())
    first = await keys.create(caller, NewKey(name="once"), retry)
    again = await keys.create(caller, NewKey(name="once"), retry)
    assert again.record.id == first.record.id
    replayed = await one(runtime, "key.replayed", first.record.id)
    assert by_admin(replayed)
    await one(runtime, "key.created", first.record.id)  # still only one creation


async def test_expiry_and_auto_enable_are_recorded_once_by_the_system(
    database: Database, runtime: Runtime, clock: ManualClock
) -> None:
    keys, caller = runtime.services.keys, admin(runtime)
    expiring = await keys.create(
        caller, NewKey(name="short", expires_at=clock.now() + timedelta(minutes=5))
    )
    paused = await keys.create(caller, NewKey(name="paused"))
    await keys.disable(caller, paused.record.id, "pause", timedelta(minutes=2))
    assert await runtime.services.audit.record_due() == 0  # nothing due yet
    clock.advance(600)
    assert await runtime.services.audit.record_due() == 2
    # Again, and from a second instance: nothing more.
    assert await runtime.services.audit.record_due() == 0
    other = await Runtime.start(database.settings(), clock)
    try:
        assert await other.services.audit.record_due() == 0
    finally:
        await other.stop()
    expired = await one(runtime, "key.expired", expiring.record.id)
    enabled = await one(runtime, "key.auto_enabled", paused.record.id)
    assert expired["actor_type"] == enabled["actor_type"] == "system"
    assert (await runtime.services.audit.verify(caller)).ok


async def test_management_key_actions_are_recorded(runtime: Runtime) -> None:
    management, caller = runtime.services.management, admin(runtime)
    issued = await management.create(caller, "ci", ("keys:read",), None)
    await management.revoke(caller, issued.record.id)
    await management.revoke(caller, issued.record.id)  # twice: one entry
    created = await one(runtime, "management_key.created", issued.record.id)
    assert by_admin(created) and created["details"]["scopes"] == ["keys:read"]
    assert by_admin(await one(runtime, "management_key.revoked", issued.record.id))


async def test_project_creation_is_recorded(runtime: Runtime) -> None:
    project = await runtime.services.projects.create(admin(runtime), "mobile", "mob")
    row = await one(runtime, "project.created", project.id)
    assert by_admin(row) and row["details"] == {"name": "mobile", "key_prefix": "mob"}


async def test_plan_actions_are_recorded_with_the_keys_they_affect(runtime: Runtime) -> None:
    plans, caller = runtime.services.plans, admin(runtime)
    plan = await plans.create(caller, "pro", None, {})
    for name in ("a", "b"):
        await runtime.services.keys.create(caller, NewKey(name=name, plan="pro"))
    await plans.update(caller, plan.id, {"description": "the pro plan"})
    assert by_admin(await one(runtime, "plan.created", plan.id))
    updated = await one(runtime, "plan.updated", plan.id)
    assert updated["details"]["keys_affected"] == 2
    assert updated["details"]["changes"] == {"description": {"from": None, "to": "the pro plan"}}
    other = await plans.create(caller, "spare", None, {})
    await plans.delete(caller, other.id)
    assert by_admin(await one(runtime, "plan.deleted", other.id))


async def test_vault_actions_are_recorded_one_entry_per_credential(runtime: Runtime) -> None:
    vault, caller = runtime.services.vault, admin(runtime)
    made = await vault.add_many(
        caller,
        [
            NewCredential(provider="openai", alias="a", secret="sk-live-aaaaaaaaaaaaaaaa"),
            NewCredential(provider="openai", alias="b", secret="sk-live-bbbbbbbbbbbbbbbb"),
        ],
    )
    first, second = (record.id for record in made)
    for credential_id in (first, second):
        assert by_admin(await one(runtime, "vault.credential.created", credential_id))
    await vault.update(caller, first, {"weight": 5, "secret": "sk-live-cccccccccccccccc"})
    updated = await one(runtime, "vault.credential.updated", first)
    assert updated["details"]["changes"]["weight"] == {"from": 1, "to": 5}
    await vault.update(caller, first, {"status": "disabled"})
    await vault.update(caller, first, {"status": "active"})
    assert by_admin(await one(runtime, "vault.credential.disabled", first))
    assert by_admin(await one(runtime, "vault.credential.enabled", first))
    await vault.delete(caller, second)
    assert by_admin(await one(runtime, "vault.credential.revoked", second))
    # An unauthorized outcome disables the credential it came from: recorded too.
    lease = await vault.lease(caller, LeaseRequest(provider="openai"))
    await vault.release(caller, lease.id, Outcome.UNAUTHORIZED)
    disabled = await rows(runtime, "vault.credential.disabled")
    assert len(disabled) == 2 and disabled[-1]["details"]["outcome"] == "unauthorized"


async def test_a_failed_authentication_flood_makes_a_handful_of_entries(
    runtime: Runtime,
) -> None:
    management = runtime.services.management
    for i in range(10_000):
        origin = Origin.of(f"198.51.100.{i % 3}", "scanner", None)
        with pytest.raises(AuthenticationError):
            await management.authenticate(f"kp_guess_{i}", origin)
    assert await runtime.security.flush() == 3
    failed = await rows(runtime, "auth.failed")
    assert len(failed) == 3
    assert sum(row["count"] for row in failed) == 10_000
    assert {row["actor_ip"] for row in failed} == {f"198.51.100.{i}" for i in range(3)}
    # The tokens tried are nowhere in the log.
    assert "kp_guess_" not in repr(await rows(runtime))


async def test_verify_refusals_that_matter_are_counted_not_written_on_the_path(
    runtime: Runtime,
) -> None:
    caller = admin(runtime)
    issued = await runtime.services.keys.create(caller, NewKey(name="gone"))
    await runtime.services.keys.revoke(caller, issued.record.id, None)
    before = len(await rows(runtime))
    for _ in range(50):
        verdict = await runtime.services.verifier.verify(caller, VerifyRequest(issued.secret))
        assert verdict.code.value == "REVOKED"
    assert len(await rows(runtime)) == before  # nothing written by verify itself
    await runtime.security.flush()
    refused = await one(runtime, "verify.refused", issued.record.id)
    assert refused["count"] == 50 and refused["details"]["codes"] == {"REVOKED": 50}


async def test_retention_prunes_a_prefix_and_the_chain_still_verifies(
    database: Database, clock: ManualClock
) -> None:
    runtime = await Runtime.start(database.settings(audit_retention_days=30), clock)
    try:
        caller = admin(runtime)
        for name in ("old1", "old2"):
            await runtime.services.keys.create(caller, NewKey(name=name))
        clock.advance(40 * 86_400)
        await runtime.services.keys.create(caller, NewKey(name="recent"))
        before = await rows(runtime)
        pruned = await runtime.services.audit.prune()
        assert pruned == len(before) - 1
        result = await runtime.services.audit.verify(caller)
        assert result.ok and result.checked == 1
        assert result.checkpoint is not None and result.checkpoint.seq == len(before) - 1
        await runtime.services.keys.create(caller, NewKey(name="after"))
        assert (await runtime.services.audit.verify(caller)).ok
    finally:
        await runtime.stop()


async def test_no_secret_reaches_the_audit_table(runtime: Runtime) -> None:
    keys, caller = runtime.services.keys, admin(runtime)
    retry = Idempotency("retry-2", hashlib.sha256(b"x").hexdigest())
    issued = await keys.create(caller, NewKey(name="s"), retry)
    replayed = await keys.create(caller, NewKey(name="s"), retry)
    rotated = await keys.rotate(caller, issued.record.id, timedelta(hours=1))
    imported = [await keys.create(caller, NewKey(name=f"row{i}", imported=True)) for i in range(3)]
    assert len(await rows(runtime, "key.imported")) == 3
    management = await runtime.services.management.create(caller, "m", ("keys:read",), None)
    credential_secrets = ["sk-live-secret-one-111111", "sk-live-secret-two-222222"]
    credentials = await runtime.services.vault.add_many(
        caller, [NewCredential("openai", f"c{i}", s) for i, s in enumerate(credential_secrets)]
    )
    await runtime.services.vault.update(caller, credentials[0].id, {"secret": "sk-live-new-3333"})
    dump = repr(await rows(runtime))
    forbidden = [
        issued.secret,
        replayed.secret,
        rotated.secret,
        issued.record.hash,
        rotated.record.hash,
        management.secret,
        management.record.hash,
        "sk-live-new-3333",
        *credential_secrets,
        *(c.sealed_secret for c in credentials),
        *(c.secret_hint for c in credentials),
        *(r.secret for r in imported),
        *(r.record.hash for r in imported),
    ]
    assert [secret for secret in forbidden if secret in dump] == []
