"""Manual rotation's seed 004 fields, rotation policies, automatic rotation and the claim flow:
the new secret is held sealed, claimed once (by the operator or the old key), erased after."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from keyplane.client.rotation import RotatingKey, RotatingKeyAuth
from keyplane.domain.changes import Journal
from keyplane.services.runtime import Runtime
from keyplane.store.tables import held_rotation_secrets, metadata, webhook_deliveries
from tests.conftest import ROOT_KEY, Api

#: Request handling alone, the same on both backends: SQLite only keeps the suite fast (the
#: claim race and the held secret's erasure run on both).
SQLITE_ONLY = pytest.mark.parametrize("database", ["sqlite"], indirect=True)

SEED_004 = {
    "enabled": True,
    "schedule": "0 0 1 * *",
    "strategy": "gradual",
    "notification_channels": [
        "email:security@company.com",
        "webhook:https://api.company.com/key-rotation",
    ],
    "grace_period_hours": 24,
    "auto_update_apps": True,
}


def runtime_of(api: Api) -> Runtime:
    runtime: Runtime = api.app.state.runtime  # type: ignore[attr-defined]
    return runtime


class Recorder:
    """Every journaled change, as the journal writers see them."""

    def __init__(self) -> None:
        self.changes: list[tuple[str, str, dict[str, Any]]] = []

    async def __call__(self, conn: object, journal: Journal) -> None:
        for change in journal.changes:
            self.changes.append((change.action, journal.actor.kind, dict(change.details)))

    def actions(self) -> list[str]:
        return [action for action, _, _ in self.changes]


@SQLITE_ONLY
async def test_manual_rotate_takes_seed_004_fields(api: Api) -> None:
    old, data = await api.create_key()
    response = await api.client.post(
        f"/v1/keys/{data['id']}/rotate", json={"invalidate_old": False, "grace_period_hours": 48}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    expected = api.clock.now() + timedelta(hours=48)
    assert body["old_key_expires_at"].startswith(expected.isoformat()[:19])
    assert (await api.verify(old))["valid"] is True
    # invalidate_old: the previous secret stops at once.
    newer = await api.client.post(f"/v1/keys/{data['id']}/rotate", json={"invalidate_old": True})
    assert newer.status_code == 200, newer.text
    assert (await api.verify(body["key"]))["valid"] is False
    # invalidate_old false alone keeps the old secret for 24 hours.
    third = await api.client.post(f"/v1/keys/{data['id']}/rotate", json={"invalidate_old": False})
    expected = api.clock.now() + timedelta(hours=24)
    assert third.json()["old_key_expires_at"].startswith(expected.isoformat()[:19])
    for body in BAD_GRACE:
        response = await api.client.post(f"/v1/keys/{data['id']}/rotate", json=body)
        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")


BAD_GRACE: list[object] = [
    {"grace_period_seconds": 60, "grace_period_hours": 1},
    {"invalidate_old": True, "grace_period_hours": 2},
    {"invalidate_old": True, "grace_period_seconds": 5},
    {"grace_period_hours": 24 * 31},
    {"grace_period_hours": "1"},
    {"invalidate_old": "yes"},
]


@SQLITE_ONLY
async def test_set_and_read_a_rotation_policy(api: Api) -> None:
    _, data = await api.create_key()
    response = await api.client.post(f"/v1/keys/{data['id']}/rotation", json=SEED_004)
    assert response.status_code == 200, response.text
    policy = response.json()["data"]
    assert policy["schedule"] == "0 0 1 * *" and policy["auto_update_apps"] is True
    # The clock is at 2026-03-01 12:00: next 1st of the month, UTC.
    assert policy["next_rotation_at"].startswith("2026-04-01T00:00:00")
    read = await api.client.get(f"/v1/keys/{data['id']}/rotation")
    assert read.status_code == 200 and read.json()["data"]["pending"] is None
    missing = await api.client.get(f"/v1/keys/{(await api.create_key())[1]['id']}/rotation")
    assert missing.status_code == 404
    for body in BAD_POLICIES:
        response = await api.client.post(f"/v1/keys/{data['id']}/rotation", json=body)
        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    for path in ("/v1/keys/nonsense/rotation", "/v1/keys/key_00000000000000000000000000/rotation"):
        assert (await api.client.post(path, json=SEED_004)).status_code == 404
    # A manual rotation restarts a max-age policy's count (a cron keeps its calendar).
    aged = {"max_age_days": 30}
    assert (await api.client.post(f"/v1/keys/{data['id']}/rotation", json=aged)).is_success
    api.clock.advance(timedelta(days=10).total_seconds())
    assert (await api.client.post(f"/v1/keys/{data['id']}/rotate", json={})).is_success
    read = await api.client.get(f"/v1/keys/{data['id']}/rotation")
    expected = api.clock.now() + timedelta(days=30)
    assert read.json()["data"]["next_rotation_at"].startswith(expected.isoformat()[:19])


BAD_POLICIES: list[object] = [
    {"schedule": "0 0 30 2 *"},
    {"schedule": "99 * * * *"},
    {"schedule": "x" * 10_000},
    {"max_age_days": 0},
    {"max_age_days": 1.5},
    {"enabled": True},
    {"max_age_days": 30, "strategy": "now"},
    {"max_age_days": 30, "notification_channels": ["webhook:http://insecure.example"]},
    {"max_age_days": 30, "notification_channels": ["email:a@b.c"] * 11},
    {"max_age_days": 30, "notification_channels": ["email:" + "a" * 600 + "@b.c"]},
    {"max_age_days": 30, "grace_period_hours": 10**12},
    {"max_age_days": 30, "extra": True},
    [],
    "0 0 1 * *",
]


async def _everything_stored(runtime: Runtime) -> str:
    """Every row of every table (the webhook outbox, email deliveries and audit log included)."""
    texts = []
    async with runtime.store.unit.read() as conn:
        for table in metadata.sorted_tables:
            texts.extend(repr(tuple(row)) for row in await conn.execute(select(table)))
    return "\n".join(texts)


async def test_due_key_is_rotated_once_and_the_old_key_claims_once(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    recorder = Recorder()
    runtime = runtime_of(api)
    runtime.store.unit.journal_writers.append(recorder)
    rotations = runtime.services.rotations
    # An endpoint for every event: rotation events land in the webhook outbox, scanned below.
    endpoint = await api.client.post(
        "/v1/webhooks", json={"url": "https://hooks.example.com/k", "events": ["*"]}
    )
    assert endpoint.status_code == 201, endpoint.text
    # And one subscribed to nothing of rotation, named by the policy's notification_channels.
    channel = await api.client.post(
        "/v1/webhooks",
        json={"url": "https://hooks.example.com/rotations", "events": ["budget.exhausted"]},
    )
    assert channel.status_code == 201, channel.text
    old, data = await api.create_key()
    policy = {
        "max_age_days": 30,
        "grace_period_hours": 24,
        "auto_update_apps": True,
        "notification_channels": ["webhook:https://hooks.example.com/rotations"],
    }
    assert (await api.client.post(f"/v1/keys/{data['id']}/rotation", json=policy)).is_success
    assert await rotations.sweep(api.clock.now()) == 0  # not due yet
    assert await rotations.announce(api.clock.now()) == 0  # not within the notice period yet
    api.clock.advance(timedelta(days=29, hours=1).total_seconds())
    assert await rotations.announce(api.clock.now()) == 1  # 23 hours ahead: told once
    assert await rotations.announce(api.clock.now()) == 0
    assert "key.rotation.scheduled" in recorder.actions()
    api.clock.advance(timedelta(hours=23).total_seconds())
    assert await rotations.sweep(api.clock.now()) == 1
    assert await rotations.sweep(api.clock.now()) == 0  # rotated once, not again
    rotated = [c for c in recorder.changes if c[0] == "key.rotated"]
    assert len(rotated) == 1 and rotated[0][1] == "system" and rotated[0][2]["automatic"]
    # The old key still verifies in its grace period and the gateway can tell a new one waits.
    assert (await api.verify(old))["valid"] is True
    pending = (await api.client.get(f"/v1/keys/{data['id']}/rotation")).json()["data"]
    assert pending["pending"]["state"] == "pending" and pending["pending"]["self_claim"] is True
    assert pending["next_rotation_at"].startswith("2026-04-30T12:00")

    stored_while_held = await _everything_stored(runtime)
    claims = await asyncio.gather(
        *(api.client.post("/v1/self/rotation/claim", headers=api.as_key(old)) for _ in range(8))
    )
    won = [c for c in claims if c.status_code == 200]
    assert len(won) == 1, [c.status_code for c in claims]
    assert {c.status_code for c in claims if c not in won} == {409}
    new = won[0].json()["key"]
    assert won[0].json()["key_id"] == data["id"]
    assert (await api.verify(new))["valid"] is True
    # Gone from the server: neither the old key nor the operator can fetch it again.
    again = await api.client.post("/v1/self/rotation/claim", headers=api.as_key(old))
    assert again.status_code == 409 and again.json()["code"] == "ROTATION_NOT_CLAIMABLE"
    operator = await api.client.post(f"/v1/keys/{data['id']}/rotation/claim")
    assert operator.status_code == 409
    async with runtime.store.unit.read() as conn:
        row = (await conn.execute(select(held_rotation_secrets))).one()
    assert row.sealed_secret is None and row.state == "claimed"
    assert "key.rotation.claimed" in recorder.actions()
    # The new (current) key cannot claim: only the one it replaced could.
    own = await api.client.post("/v1/self/rotation/claim", headers=api.as_key(new))
    assert own.status_code == 409
    # The secret scan: never in the database unencrypted (while held or after), nor in any
    # webhook or email payload (the outbox), audit entry or log line.
    api.clock.advance(timedelta(days=2).total_seconds())
    await runtime.services.rotations.expire_held(api.clock.now())
    stored_after = await _everything_stored(runtime)
    assert "key.rotation.claimed" in stored_after  # the outbox and audit were scanned
    async with runtime.store.unit.read() as conn:
        query = select(webhook_deliveries.c.event_type).where(
            webhook_deliveries.c.endpoint_id == channel.json()["data"]["id"]
        )
        told = sorted(row.event_type for row in await conn.execute(query))
    assert told == ["key.rotated", "key.rotation.claimed", "key.rotation.scheduled"], told
    for text in (stored_while_held, stored_after, caplog.text, str(recorder.changes)):
        assert new not in text and new[-20:] not in text


@SQLITE_ONLY
async def test_self_claim_needs_auto_update_apps_and_a_live_old_key(api: Api) -> None:
    runtime = runtime_of(api)
    old, data = await api.create_key()
    org_id = str(data["org_id"])
    rotated = await runtime.services.rotations.rotate_automatically(
        org_id, str(data["id"]), timedelta(hours=1), "leaked"
    )
    assert rotated.old_key_expires_at == api.clock.now() + timedelta(hours=1)
    # After a leak the old key's holder may be the attacker: it cannot claim.
    refused = await api.client.post("/v1/self/rotation/claim", headers=api.as_key(old))
    assert refused.status_code == 409
    for bad in ("", "Bearer", "Bearer " + "k" * 300, "Basic abc", "Bearer kp_live_nonsense"):
        response = await api.client.post("/v1/self/rotation/claim", headers={"Authorization": bad})
        assert response.status_code in (401, 409), (bad, response.status_code)
        assert response.headers["content-type"].startswith("application/problem+json")
    # The operator can, once.
    claimed = await api.client.post(f"/v1/keys/{data['id']}/rotation/claim")
    assert claimed.status_code == 200, claimed.text
    assert (await api.verify(claimed.json()["key"]))["valid"] is True
    assert (await api.client.post(f"/v1/keys/{data['id']}/rotation/claim")).status_code == 409


async def test_an_unclaimed_secret_is_erased_when_its_window_ends(api: Api) -> None:
    recorder = Recorder()
    runtime = runtime_of(api)
    runtime.store.unit.journal_writers.append(recorder)
    _, data = await api.create_key()
    await runtime.services.rotations.rotate_automatically(
        str(data["org_id"]), str(data["id"]), timedelta(hours=2), "scheduled"
    )
    assert await runtime.services.rotations.expire_held(api.clock.now()) == 0
    api.clock.advance(7200)
    assert await runtime.services.rotations.expire_held(api.clock.now()) == 1
    assert await runtime.services.rotations.expire_held(api.clock.now()) == 0
    async with runtime.store.unit.read() as conn:
        row = (await conn.execute(select(held_rotation_secrets))).one()
    assert row.sealed_secret is None and row.state == "unclaimed"
    assert "key.rotation.unclaimed" in recorder.actions()
    late = await api.client.post(f"/v1/keys/{data['id']}/rotation/claim")
    assert late.status_code == 409
    # A manual rotation supersedes (erases) a held secret.
    _, data = await api.create_key()
    await runtime.services.rotations.rotate_automatically(
        str(data["org_id"]), str(data["id"]), timedelta(hours=2), "scheduled"
    )
    assert (await api.client.post(f"/v1/keys/{data['id']}/rotate", json={})).is_success
    async with runtime.store.unit.read() as conn:
        query = select(held_rotation_secrets).where(held_rotation_secrets.c.key_id == data["id"])
        row = (await conn.execute(query)).one()
    assert row.sealed_secret is None and row.state == "superseded"
    assert (await api.client.post(f"/v1/keys/{data['id']}/rotation/claim")).status_code == 409


@SQLITE_ONLY
async def test_jobs_are_listed_for_jobs_read_only(api: Api) -> None:
    runner = runtime_of(api).services.jobs
    # The background runner may hold the first run: make the jobs due again and run them here
    # (or see the background's run finish), within a generous bound.
    jobs: dict[str, Any] = {}
    for _ in range(100):
        api.clock.advance(61)
        await runner.run_once()
        response = await api.client.get("/v1/jobs")
        assert response.status_code == 200, response.text
        jobs = {job["name"]: job for job in response.json()["data"]}
        if jobs.get("rotation.sweep", {}).get("last_outcome") == "success":
            break
        await asyncio.sleep(0.1)
    assert {"rotation.sweep", "rotation.held_expiry", "rotation.notices"} <= set(jobs)
    assert jobs["rotation.sweep"]["schedule"] == "every 60 s"
    assert jobs["rotation.sweep"]["last_outcome"] == "success"
    without = await api.management_key("keys:read")
    denied = await api.client.get("/v1/jobs", headers=api.as_key(without))
    assert denied.status_code == 403
    reader = await api.management_key("jobs:read")
    assert (await api.client.get("/v1/jobs", headers=api.as_key(reader))).status_code == 200
    assert (await api.client.get("/v1/jobs?x=1")).status_code == 422


@SQLITE_ONLY
async def test_the_sdk_swaps_the_key_in_place_when_forward_auth_says_so(api: Api) -> None:
    runtime = runtime_of(api)
    old, data = await api.create_key()
    policy = {"max_age_days": 1, "grace_period_hours": 24, "auto_update_apps": True}
    assert (await api.client.post(f"/v1/keys/{data['id']}/rotation", json=policy)).is_success
    api.clock.advance(timedelta(days=1).total_seconds())
    assert await runtime.services.rotations.sweep(api.clock.now()) == 1
    assert (await api.verify(old))["rotation_pending"] is True

    rotated_to: list[str] = []
    transport = httpx.ASGITransport(app=api.app)  # type: ignore[arg-type]
    key = RotatingKey(
        old, "http://keyplane.test", on_rotated=rotated_to.append, async_transport=transport
    )
    # The customer's application behind a gateway doing forward auth: the gateway passes the
    # X-Keyplane-Rotation-Pending header on, and the auth class claims the new key.
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://keyplane.test",
        headers={"X-Keyplane-Gateway-Key": ROOT_KEY},
        auth=RotatingKeyAuth(key),
    ) as app_client:
        first = await app_client.get("/v1/auth")
        assert first.status_code == 200, first.text
        assert first.headers["X-Keyplane-Rotation-Pending"] == "true"
        assert key.current != old and rotated_to == [key.current]
        second = await app_client.get("/v1/auth")
        assert second.status_code == 200 and "X-Keyplane-Rotation-Pending" not in second.headers
    verdict = await api.verify(key.current)
    assert verdict["valid"] is True and verdict["rotation_pending"] is False
    # Claimed once: a second holder of the old key gets nothing.
    late = RotatingKey(old, "http://keyplane.test", async_transport=transport)
    assert await late.aclaim() is False and late.current == old
