"""Rotation policies on a plan: every key on the plan without its own policy follows it (keys
there now, keys created on it or moved onto it later), a key's own policy wins, and the sweep
rotates them through the same indexed due rows as a key's own policy."""

from __future__ import annotations

from datetime import timedelta

from keyplane.services.runtime import Runtime
from tests.conftest import Api


def _runtime(api: Api) -> Runtime:
    runtime: Runtime = api.app.state.runtime  # type: ignore[attr-defined]
    return runtime


async def _plan(api: Api, name: str) -> None:
    response = await api.client.post("/v1/plans", json={"name": name})
    assert response.status_code == 201, response.text


async def test_plan_policy_rotates_its_keys_and_a_keys_own_policy_wins(api: Api) -> None:
    rotations = _runtime(api).services.rotations
    await _plan(api, "pro")
    await _plan(api, "free")
    _, before = await api.create_key(plan="pro")
    _, own = await api.create_key(plan="pro")
    _, elsewhere = await api.create_key(plan="free")
    _, bare = await api.create_key()
    own_policy = {"max_age_days": 90}
    assert (await api.client.post(f"/v1/keys/{own['id']}/rotation", json=own_policy)).is_success

    response = await api.client.post(
        "/v1/plans/pro/rotation", json={"max_age_days": 30, "grace_period_hours": 1}
    )
    assert response.status_code == 200, response.text
    assert response.json()["data"]["keys_following"] == 1  # not the key with its own
    got = (await api.client.get("/v1/plans/pro/rotation")).json()["data"]
    assert got["max_age_days"] == 30 and got["plan"] == "pro"
    assert (await api.client.get("/v1/plans/free/rotation")).status_code == 404

    api.clock.advance(timedelta(days=10).total_seconds())
    _, later = await api.create_key(plan="pro")  # created on the plan afterwards
    moved = await api.client.patch(f"/v1/keys/{bare['id']}", json={"plan": "pro"})
    assert moved.status_code == 200, moved.text
    left = await api.client.patch(f"/v1/keys/{before['id']}", json={"plan": "free"})
    assert left.status_code == 200, left.text
    # Moved off the plan: no longer follows it. Moved onto it and created on it: follow it.
    assert (await api.client.get(f"/v1/keys/{before['id']}/rotation")).status_code == 404
    assert (await api.client.get(f"/v1/keys/{elsewhere['id']}/rotation")).status_code == 404
    inherited = (await api.client.get(f"/v1/keys/{later['id']}/rotation")).json()["data"]
    assert inherited["max_age_days"] == 30 and inherited["from_plan"] == got["plan_id"]

    api.clock.advance(timedelta(days=25).total_seconds())  # bare is 35 days old, later 25
    assert await rotations.sweep(api.clock.now()) == 1
    assert (await api.client.get(f"/v1/keys/{bare['id']}/rotation")).json()["data"]["pending"]
    api.clock.advance(timedelta(days=6).total_seconds())  # later: 31 days
    assert await rotations.sweep(api.clock.now()) == 1
    assert (await api.client.get(f"/v1/keys/{later['id']}/rotation")).json()["data"]["pending"]
    # The key's own 90-day policy was kept (41 days old now): not rotated, not overwritten.
    mine = (await api.client.get(f"/v1/keys/{own['id']}/rotation")).json()["data"]
    assert mine["max_age_days"] == 90 and mine["pending"] is None

    # Changing the plan's policy reaches its followers, never the key's own.
    assert (
        await api.client.post("/v1/plans/pro/rotation", json={"schedule": "0 0 1 * *"})
    ).is_success
    assert (await api.client.get(f"/v1/keys/{later['id']}/rotation")).json()["data"][
        "schedule"
    ] == "0 0 1 * *"
    assert (await api.client.get(f"/v1/keys/{own['id']}/rotation")).json()["data"][
        "schedule"
    ] is None


async def test_plan_rotation_is_audited_and_answers_hostile_input(api: Api) -> None:
    await _plan(api, "pro")
    for body in (
        {"max_age_days": -1},
        {"max_age_days": 10**12},
        {"schedule": "* " * 500},
        {"strategy": "sometimes"},
        {"grace_period_hours": "x"},
        {"unknown": 1},
        [],
    ):
        response = await api.client.post("/v1/plans/pro/rotation", json=body)
        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    missing = await api.client.post("/v1/plans/nope/rotation", json={"max_age_days": 1})
    assert missing.status_code == 404
    bad_ref = await api.client.get("/v1/plans/" + "x" * 300 + "/rotation")
    assert bad_ref.status_code in (404, 422)

    reader = api.as_key(await api.management_key("plans:read"))
    denied = await api.client.post(
        "/v1/plans/pro/rotation", json={"max_age_days": 1}, headers=reader
    )
    assert denied.status_code == 403
    writer = api.as_key(await api.management_key("plans:write"))
    ok = await api.client.post("/v1/plans/pro/rotation", json={"max_age_days": 1}, headers=writer)
    assert ok.status_code == 200, ok.text
    keys_only = api.as_key(await api.management_key("keys:read"))
    assert (await api.client.get("/v1/plans/pro/rotation", headers=keys_only)).status_code == 403
    audit = (
        await api.client.get("/v1/audit", params={"action": "plan.rotation.configured"})
    ).json()
    assert [entry["action"] for entry in audit["data"]] == ["plan.rotation.configured"]
