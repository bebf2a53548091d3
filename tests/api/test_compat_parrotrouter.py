"""``/parrotrouter/v1``: seed 004's key API over the native keys, its rules and its refusals."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from keyplane.domain.tenancy import Principal
from keyplane.errors import ConflictError
from tests.conftest import Api

BASE = "/parrotrouter/v1"
#: Refusals decided before storage is reached, or alike on every backend: SQLite only, for time.
SQLITE_ONLY = pytest.mark.parametrize("database", ["sqlite"], indirect=True)


def problem(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """A problem+json answer with this status, never a traceback; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "Traceback" not in response.text
    body: dict[str, Any] = response.json()
    if code is not None:
        assert body["code"] == code, body
    return body


async def create(api: Api, **fields: Any) -> dict[str, Any]:
    response = await api.client.post(f"{BASE}/keys", json={"name": "parrot", **fields})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_created_key_is_a_native_key_with_the_mapped_policy(api: Api) -> None:
    body = await create(
        api,
        description="Key for production application",
        environment="staging",
        permissions={
            "models": ["gpt-3.5-turbo"],
            "max_requests_per_minute": 100,
            "max_cost_per_day": 50.10,
        },
        restrictions={"ip_whitelist": ["203.0.113.0/24"], "referrers": ["https://a.example/*"]},
        metadata={"team": "backend"},
        expires_at="2027-01-01T00:00:00Z",
    )
    assert body["key"].startswith("kp_test_") and body["id"].startswith("key_")
    assert body["created_at"] == "2026-03-01T12:00:00Z"
    native = (await api.client.get(f"/v1/keys/{body['id']}")).json()["data"]
    assert native["environment"] == "test" and native["tags"] == ["environment:staging"]
    assert native["metadata"] == {"team": "backend"}
    assert native["expires_at"] == "2027-01-01T00:00:00Z"
    assert native["policy"] == {
        "models": {"allow": ["gpt-3.5-turbo"]},
        "rate_limits": [{"name": "per_minute", "limit": 100, "period": "1m"}],
        "budget": {"credit_limit": 50.1, "reset": "daily"},
        "network": {"ip_allow": ["203.0.113.0/24"], "referrers": ["https://a.example/*"]},
    }
    # The rules are enforced as the native ones are.
    context = {"ip": "203.0.113.9", "referrer": "https://a.example/app"}
    refused = await api.verify(body["key"], model="gpt-4", **context)
    assert refused["code"] == "FORBIDDEN_MODEL", refused
    outside = await api.verify(body["key"], model="gpt-3.5-turbo", ip="198.51.100.1")
    assert outside["valid"] is False, outside
    allowed = await api.verify(body["key"], model="gpt-3.5-turbo", **context)
    assert allowed["valid"] is True, allowed
    shown = await api.client.get(f"{BASE}/keys/{body['id']}")
    assert shown.status_code == 200 and shown.json()["id"] == body["id"]
    # null name and metadata leave them as they are; null description clears it (as /v1).
    nulls = {"name": None, "metadata": None, "description": None}
    patched = await api.client.patch(f"{BASE}/keys/{body['id']}", json=nulls)
    assert patched.status_code == 200, patched.text
    assert patched.json()["metadata"] == {"team": "backend"}
    assert (patched.json()["name"], patched.json()["description"]) == ("parrot", None)


@SQLITE_ONLY
async def test_a_management_key_is_needed(api: Api) -> None:
    answer = await api.client.post(
        f"{BASE}/keys", json={"name": "x"}, headers={"Authorization": "Bearer nope"}
    )
    problem(answer, 401)
    reader = api.as_key(await api.management_key("keys:read"))
    problem(await api.client.post(f"{BASE}/keys", json={"name": "x"}, headers=reader), 403)


async def test_a_write_only_caller_learns_the_key_id_and_status_only(api: Api) -> None:
    writer = api.as_key(await api.management_key("keys:write"))
    answer = await api.client.post(
        f"{BASE}/keys", json={"name": "w", "metadata": {"m": "hidden"}}, headers=writer
    )
    assert answer.status_code == 201, answer.text
    assert set(answer.json()) == {"id", "status", "created_at", "key"}
    key_id = answer.json()["id"]
    rotated = await api.client.post(f"{BASE}/keys/{key_id}/rotate", json={}, headers=writer)
    assert set(rotated.json()) == {"id", "status", "created_at", "key", "old_key_expires_at"}
    patched = await api.client.patch(f"{BASE}/keys/{key_id}", json={}, headers=writer)
    assert set(patched.json()) == {"id", "status", "created_at"}


#: Bodies (over a valid {"name": "k"}) each refused with a 422 naming the field given.
MALFORMED: list[tuple[dict[str, Any], str]] = [
    ({"restrictions": {"ip_whitelist": ["203.0.113.0/24"] * 1001}}, "ip_whitelist"),
    ({"permissions": {"models": ["m"] * 201}}, "models"),
    ({"permissions": {"features": {f"f{i}": True for i in range(201)}}}, "features"),
    ({"permissions": {"models": 5}}, "models"),
    ({"permissions": {"features": "chat"}}, "features"),
    ({"permissions": {"max_cost_per_day": "1e999999"}}, "max_cost_per_day"),
    ({"permissions": {"max_requests_per_day": True}}, "max_requests_per_day"),
    ({"permissions": {"max_requests_per_day": 10**13}}, "max_requests_per_day"),
    ({"rate_limits": {"requests": {"per_second": -1}}}, "per_second"),
    ({"security": {"authentication": {"max_timestamp_age": 10**9}}}, "max_timestamp_age"),
    ({"security": {"domain_restrictions": {"user_agent_pattern": "a" * 501}}}, "user_agent"),
    ({"environment": "Prod uction"}, "environment"),
    ({"name": "bad\u0000name"}, "name"),
    ({"permisions": {}}, "permisions"),
    ({"members": [{"user_id": "u"}] * 101}, "members"),
    ({"expires_at": "x" * 41}, "expires_at"),
]
#: Bodies the seed-shape check lets through and the native rules refuse, by native field.
NATIVE_REFUSALS: list[tuple[dict[str, Any], str]] = [
    ({"restrictions": {"ip_whitelist": ["not-a-network"]}}, "native.policy.network.ip_allow.0"),
    ({"permissions": {"models": ["has space"]}}, "native.policy.models.allow.0"),
    ({"expires_at": "tomorrow"}, "native.expires_at"),
    (
        {"security": {"domain_restrictions": {"user_agent_pattern": "(["}}},
        "native.policy.network.user_agent",
    ),
]


@SQLITE_ONLY
async def test_malformed_or_oversized_input_is_a_422_naming_the_field(api: Api) -> None:
    for body, where in MALFORMED:
        answer = await api.client.post(f"{BASE}/keys", json={"name": "k", **body})
        details = problem(answer, 422)
        assert where in json.dumps(details), (where, details)
        assert "1e999999" not in answer.text and "bad\\u0000" not in answer.text  # not echoed
    for body, native_field in NATIVE_REFUSALS:
        answer = await api.client.post(f"{BASE}/keys", json={"name": "k", **body})
        details = problem(answer, 422)
        assert [error["loc"] for error in details["errors"]] == [native_field], details
    assert (await api.client.get("/v1/keys")).json()["data"] == []


@SQLITE_ONLY
async def test_a_rule_given_twice_is_refused(api: Api) -> None:
    answer = await api.client.post(
        f"{BASE}/keys",
        json={
            "name": "k",
            "restrictions": {"referrers": ["https://a.example/*"]},
            "security": {"domain_restrictions": {"allowed_referrers": ["https://b.example/*"]}},
        },
    )
    problem(answer, 422, "CONFLICTING_FIELDS")


@SQLITE_ONLY
async def test_the_team_example_is_refused_naming_teams(api: Api) -> None:
    answer = await api.client.post(
        f"{BASE}/keys",
        json={"name": "Frontend Team Key", "type": "team", "members": [{"user_id": "u1"}]},
    )
    details = problem(answer, 422, "TEAMS_NOT_AVAILABLE")
    assert "type, members" in details["detail"]


@SQLITE_ONLY
async def test_unknown_and_malformed_key_ids_are_404(api: Api) -> None:
    for path in ("/keys/key_01m8yzy9jneaeqfvbks33zz3cy", "/keys/../../etc", "/keys/%00"):
        for method in ("GET", "PATCH", "DELETE"):
            answer = await api.client.request(method, f"{BASE}{path}", json={})
            assert answer.status_code == 404, (method, path, answer.text)
    for tail in ("rotate", "disable", "rotation", "audit/export"):
        answer = await api.client.post(
            f"{BASE}/keys/key_01m8yzy9jneaeqfvbks33zz3cy/{tail}",
            json={"audit/export": {"format": "csv"}, "rotation": {"max_age_days": 90}}.get(
                tail, {}
            ),
        )
        assert answer.status_code == 404, (tail, answer.text)


@SQLITE_ONLY
async def test_revoke_immediately_false_is_refused_and_the_key_stays(api: Api) -> None:
    body = await create(api)
    answer = await api.client.request(
        "DELETE", f"{BASE}/keys/{body['id']}", json={"revoke_immediately": False}
    )
    problem(answer, 422, "UNSUPPORTED_FIELD")
    assert (await api.verify(body["key"]))["valid"] is True
    gone = await api.client.request("DELETE", f"{BASE}/keys/{body['id']}")
    assert gone.status_code == 200 and gone.json()["status"] == "revoked"
    assert (await api.verify(body["key"]))["valid"] is False


async def test_rotation_keeps_the_old_key_for_the_grace_period_or_ends_it(api: Api) -> None:
    body = await create(api)
    kept = await api.client.post(
        f"{BASE}/keys/{body['id']}/rotate", json={"invalidate_old": False, "grace_period_hours": 2}
    )
    assert kept.status_code == 200, kept.text
    assert kept.json()["old_key_expires_at"] == "2026-03-01T14:00:00Z"
    assert (await api.verify(body["key"]))["valid"] is True
    api.clock.advance(2 * 3600 + 1)
    assert (await api.verify(body["key"]))["valid"] is False
    newer = kept.json()["key"]
    ended = await api.client.post(f"{BASE}/keys/{body['id']}/rotate", json={"invalidate_old": True})
    assert ended.json()["old_key_expires_at"] == ended.json()["updated_at"]
    assert (await api.verify(newer))["valid"] is False
    assert (await api.verify(ended.json()["key"]))["valid"] is True
    contradiction = await api.client.post(
        f"{BASE}/keys/{body['id']}/rotate", json={"invalidate_old": True, "grace_period_hours": 1}
    )
    problem(contradiction, 422, "CONFLICTING_FIELDS")
    too_long = await api.client.post(
        f"{BASE}/keys/{body['id']}/rotate", json={"grace_period_hours": 721}
    )
    problem(too_long, 422)


async def test_disable_with_auto_enable_after(api: Api) -> None:
    body = await create(api)
    answer = await api.client.post(
        f"{BASE}/keys/{body['id']}/disable", json={"reason": "abuse", "auto_enable_after": "1h"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["auto_enable_at"] == "2026-03-01T13:00:00Z"
    assert (await api.verify(body["key"]))["code"] == "DISABLED"
    api.clock.advance(3600 + 1)
    assert (await api.verify(body["key"]))["valid"] is True
    for bad in ("1w", "31d", "x" * 17, 0, True):
        answer = await api.client.post(
            f"{BASE}/keys/{body['id']}/disable", json={"auto_enable_after": bad}
        )
        problem(answer, 422)


async def test_audit_events_in_the_seed_shape_with_mapped_event_types(api: Api) -> None:
    body = await create(api)
    await api.client.patch(f"{BASE}/keys/{body['id']}", json={"name": "renamed"})
    await api.client.post(f"{BASE}/keys/{body['id']}/disable", json={"reason": "abuse"})
    answer = await api.client.get(
        f"{BASE}/keys/{body['id']}/audit",
        params={"event_types": ["permission_change"], "start_date": "2026-03-01"},
    )
    assert answer.status_code == 200, answer.text
    [event] = answer.json()["events"]
    assert event["event_type"] == "permission_change" and event["action"] == "key.updated"
    assert set(event) >= {"timestamp", "event_type", "user_id", "ip_address", "details"}
    everything = await api.client.get(f"{BASE}/keys/{body['id']}/audit")
    actions = [e["action"] for e in everything.json()["events"]]
    assert actions == ["key.disabled", "key.updated", "key.created"]
    for params in (
        {"event_types": ["DROP TABLE"]},
        {"event_types": ["usage"] * 21},
        {"start_date": "2026-02-30"},
        {"since": "2026-01-01"},
    ):
        problem(await api.client.get(f"{BASE}/keys/{body['id']}/audit", params=params), 422)


async def test_a_rule_merge_never_overwrites_a_change_it_did_not_see(api: Api) -> None:
    body = await create(api, permissions={"max_requests_per_minute": 100})
    keys = api.app.state.runtime.services.keys  # type: ignore[attr-defined]
    root = Principal("root", body["org_id"], None, ("*",), is_root=True)
    stale = (await keys.get(root, body["id"])).policy
    # Another writer changes the rules between the merge's read and its write.
    await api.client.patch(f"{BASE}/keys/{body['id']}", json={"permissions": {"models": ["a"]}})
    with pytest.raises(ConflictError) as conflict:
        await keys.update(root, body["id"], {"policy": stale}, expected_policy=stale)
    assert conflict.value.code == "POLICY_CHANGED"
    # Through the surface, each merge reads the rules afresh: both changes stay.
    await api.client.patch(
        f"{BASE}/keys/{body['id']}", json={"permissions": {"max_requests_per_day": 9}}
    )
    policy = (await api.client.get(f"/v1/keys/{body['id']}")).json()["data"]["policy"]
    assert policy["models"] == {"allow": ["a"]}
    assert [w["name"] for w in policy["rate_limits"]] == ["per_minute", "per_day"]
