"""``/api/v1``: the OpenRouter / AnyAPI provisioning API over the same keys as ``/v1``."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.conftest import Api

KEY_FIELDS = {
    "hash",
    "name",
    "label",
    "disabled",
    "limit",
    "limit_remaining",
    "limit_reset",
    "include_byok_in_limit",
    "usage",
    "usage_daily",
    "usage_weekly",
    "usage_monthly",
    "byok_usage",
    "byok_usage_daily",
    "byok_usage_weekly",
    "byok_usage_monthly",
    "created_at",
    "updated_at",
    "expires_at",
    "creator_user_id",
    "workspace_id",
    # AnyAPI's examples read these as well.
    "description",
    "last_used",
}


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> str:
    """An OpenRouter error body with this status, no traceback; returns the message."""
    assert response.status_code == status, (response.request.url, response.text[:300])
    assert response.headers["content-type"] == "application/json"
    assert "Traceback" not in response.text and 'File "' not in response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == status
    message = body["error"]["message"]
    assert isinstance(message, str) and message
    if code is not None:
        assert body["error"]["metadata"]["code"] == code, body
    return str(message)


async def create(api: Api, **fields: Any) -> dict[str, Any]:
    response = await api.client.post("/api/v1/keys", json={"name": "customer", **fields})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def native(api: Api, key_hash: str) -> dict[str, Any]:
    response = await api.client.get(f"/v1/keys/{key_hash}")
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


async def test_create_returns_the_key_once_and_maps_limit_to_the_budget(api: Api) -> None:
    created = await create(
        api, name="Pro Plan", label="customer-1-pro", limit=10000, description="auto"
    )
    assert created["key"].startswith("kp_live_")
    assert created["hash"] == created["data"]["hash"]
    data = created["data"]
    assert set(data) == KEY_FIELDS
    assert data["limit"] == 10000 and data["limit_remaining"] == 10000
    assert data["limit_reset"] is None and data["disabled"] is False
    assert data["label"] == "customer-1-pro" and data["description"] == "auto"
    assert data["usage"] == 0 and data["byok_usage"] == 0 and data["last_used"] is None
    assert data["created_at"] == "2026-03-01T12:00:00Z"
    shown = await native(api, created["hash"])
    assert shown["policy"] == {"budget": {"credit_limit": 10000.0}}
    assert shown["project_id"] == data["workspace_id"]
    assert (await api.verify(created["key"]))["code"] == "VALID"


async def test_trailing_slashes_are_accepted_everywhere(api: Api) -> None:
    response = await api.client.post("/api/v1/keys/", json={"name": "slash"})
    assert response.status_code == 201, response.text
    key_hash = response.json()["hash"]
    assert (await api.client.get("/api/v1/keys/")).status_code == 200
    assert (await api.client.get(f"/api/v1/keys/{key_hash}/")).status_code == 200
    patched = await api.client.patch(f"/api/v1/keys/{key_hash}/", json={"name": "renamed"})
    assert patched.json()["data"]["name"] == "renamed"
    assert (await api.client.get("/api/v1/key/")).status_code == 200
    assert (await api.client.delete(f"/api/v1/keys/{key_hash}/")).json() == {"deleted": True}


async def test_get_shows_usage_from_the_ledger_at_the_top_level_and_in_data(api: Api) -> None:
    created = await create(api, limit=50, limit_reset="monthly")
    key_id = (await native(api, created["hash"]))["id"]
    assert (await api.report("r1", key_id=key_id, cost=12.5)).status_code == 201
    assert (await api.verify(created["key"]))["code"] == "VALID"
    await api.app.state.runtime.last_used.flush()  # type: ignore[attr-defined]
    response = await api.client.get(f"/api/v1/keys/{created['hash']}")
    body = response.json()
    data = body["data"]
    assert data["usage"] == data["usage_monthly"] == data["usage_daily"] == 12.5
    assert data["limit"] == 50 and data["limit_remaining"] == 37.5
    assert data["limit_reset"] == "monthly"
    assert data["last_used"] == "2026-03-01T12:00:00Z"
    # AnyAPI's check_customer_usage reads these at the top level.
    assert (body["usage"], body["limit"], body["last_used"]) == (12.5, 50, data["last_used"])


async def test_patch_changes_name_limit_reset_byok_and_disabled(api: Api) -> None:
    created = await create(api, limit=10)
    url = f"/api/v1/keys/{created['hash']}"
    response = await api.client.patch(
        url,
        json={
            "name": "Enterprise",
            "limit": 500,
            "limit_reset": "weekly",
            "include_byok_in_limit": True,
            "disabled": True,
        },
    )
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["name"] == "Enterprise" and data["disabled"] is True
    assert (data["limit"], data["limit_reset"], data["include_byok_in_limit"]) == (
        500,
        "weekly",
        True,
    )
    shown = await native(api, created["hash"])
    assert shown["status"] == "disabled"
    assert shown["policy"]["budget"] == {"credit_limit": 500.0, "reset": "weekly"}
    assert shown["metadata"] == {"_compat": {"include_byok_in_limit": True}}
    assert (await api.verify(created["key"]))["code"] == "DISABLED"

    response = await api.client.patch(url, json={"disabled": False, "limit": None})
    data = response.json()["data"]
    assert data["disabled"] is False and data["limit"] is None and data["limit_reset"] is None
    assert (await api.verify(created["key"]))["code"] == "VALID"
    response = await api.client.patch(url, json={"include_byok_in_limit": False})
    assert response.json()["data"]["include_byok_in_limit"] is False
    assert (await native(api, created["hash"]))["metadata"] == {}


async def test_the_budget_set_through_limit_is_enforced_by_verify(api: Api) -> None:
    created = await create(api, limit=1)
    verdict = await api.verify(created["key"], cost=2)
    assert verdict["code"] == "BUDGET_EXCEEDED"


async def test_list_pages_by_100_and_hides_disabled_and_deleted_keys(api: Api) -> None:
    hashes = [(await create(api, name=f"k{i}"))["hash"] for i in range(103)]
    await api.client.patch(f"/api/v1/keys/{hashes[0]}", json={"disabled": True})
    await api.client.delete(f"/api/v1/keys/{hashes[1]}")
    first = (await api.client.get("/api/v1/keys")).json()["data"]
    assert [k["hash"] for k in first] == hashes[2:102]
    second = (await api.client.get("/api/v1/keys", params={"offset": 100})).json()["data"]
    assert [k["hash"] for k in second] == hashes[102:]
    everything = await api.client.get(
        "/api/v1/keys", params={"include_disabled": "true", "offset": 0}
    )
    listed = [k["hash"] for k in everything.json()["data"]]
    assert listed[0] == hashes[0] and hashes[1] not in listed and len(listed) == 100


async def test_delete_revokes_for_good(api: Api) -> None:
    created = await create(api)
    url = f"/api/v1/keys/{created['hash']}"
    assert (await api.client.delete(url)).json() == {"deleted": True}
    assert (await api.verify(created["key"]))["code"] == "REVOKED"
    assert (await native(api, created["hash"]))["status"] == "revoked"
    for method in ("GET", "PATCH", "DELETE"):
        body = {"name": "x"} if method == "PATCH" else None
        assert_error(await api.client.request(method, url, json=body), 404, "KEY_NOT_FOUND")


async def test_get_key_answers_an_api_key_about_itself(api: Api) -> None:
    created = await create(api, limit=20, limit_reset="daily")
    own = await api.client.get("/api/v1/key", headers={"Authorization": f"Bearer {created['key']}"})
    assert own.status_code == 200, own.text
    data = own.json()["data"]
    assert data["hash"] == created["hash"] and data["limit"] == 20
    assert data["is_provisioning_key"] is False and data["is_free_tier"] is False
    manager = (await api.client.get("/api/v1/key")).json()["data"]
    assert manager["is_provisioning_key"] is True and manager["limit"] is None
    # Presenting an API key never reaches the management endpoints.
    listing = await api.client.get(
        "/api/v1/keys", headers={"Authorization": f"Bearer {created['key']}"}
    )
    assert_error(listing, 401)
    await api.client.delete(f"/api/v1/keys/{created['hash']}")
    revoked = await api.client.get(
        "/api/v1/key", headers={"Authorization": f"Bearer {created['key']}"}
    )
    assert_error(revoked, 401, "UNAUTHENTICATED")
    assert created["key"] not in revoked.text


async def test_missing_or_bad_credentials_are_401(api: Api) -> None:
    api.client.headers.pop("Authorization")
    for headers in ({}, {"Authorization": "Bearer kp_mgmt_nope"}, {"Authorization": "Basic abc"}):
        for path in ("/api/v1/keys", "/api/v1/key"):
            response = await api.client.get(path, headers=headers)
            assert_error(response, 401, "UNAUTHENTICATED")
            assert response.headers["www-authenticate"] == "Bearer"


async def test_a_read_only_management_key_cannot_create(api: Api) -> None:
    reader = await api.management_key("keys:read")
    response = await api.client.post("/api/v1/keys", json={"name": "x"}, headers=api.as_key(reader))
    assert_error(response, 403, "MISSING_SCOPE")
    assert (await api.client.get("/api/v1/keys", headers=api.as_key(reader))).status_code == 200


async def test_a_project_bound_management_key_sees_only_its_project(api: Api) -> None:
    project = await api.client.post("/v1/projects", json={"name": "acme", "key_prefix": "acme"})
    project_id = project.json()["data"]["id"]
    bound = await api.management_key("keys:*", project_id=project_id)
    outside = await create(api, name="outside")
    inside = await api.client.post(
        "/api/v1/keys", json={"name": "inside"}, headers=api.as_key(bound)
    )
    assert inside.json()["key"].startswith("acme_live_")
    listed = (await api.client.get("/api/v1/keys", headers=api.as_key(bound))).json()["data"]
    assert [k["name"] for k in listed] == ["inside"]
    hidden = await api.client.get(f"/api/v1/keys/{outside['hash']}", headers=api.as_key(bound))
    assert_error(hidden, 404)


# -- hostile input ----------------------------------------------------------------------------

BAD_BODIES: list[tuple[str, Any]] = [
    ("wrong type name", {"name": 3}),
    ("missing name", {"limit": 10}),
    ("boolean limit", {"name": "x", "limit": True}),
    ("negative limit", {"name": "x", "limit": -1}),
    ("too precise limit", {"name": "x", "limit": "0.0000001"}),
    ("huge limit", {"name": "x", "limit": 1e300}),
    ("unknown reset", {"name": "x", "limit": 1, "limit_reset": "hourly"}),
    ("string disabled flag", {"name": "x", "include_byok_in_limit": "yes"}),
    ("unknown field", {"name": "x", "owner_id": "u"}),
    ("control characters", {"name": "nul\x00byte"}),
    ("escape sequence", {"name": "x", "label": "\x1b[31mred"}),
    ("oversized name", {"name": "k" * 10_000}),
    ("non-UTC expiry", {"name": "x", "expires_at": "2030-01-01T00:00:00+02:00"}),
    ("past expiry", {"name": "x", "expires_at": "2020-01-01T00:00:00Z"}),
    ("array body", [{"name": "x"}]),
    ("null body", None),
]


async def test_bad_create_bodies_are_400_and_create_nothing(api: Api) -> None:
    for case, body in BAD_BODIES:
        response = await api.client.post(
            "/api/v1/keys",
            content=json.dumps(body).encode(),
            headers={"content-type": "application/json"},
        )
        message = assert_error(response, 400)
        assert "\x00" not in message and "kkkkkkkkkk" not in message, case
    assert (await api.client.get("/v1/keys")).json()["data"] == []


async def test_malformed_json_is_400(api: Api) -> None:
    created = await create(api)
    for raw in (
        b"{",
        b'{"name": "x",}',
        b"{'name': 'x'}",
        b"\xff\xfe\x00{",
        b'{"name": "\\ud800"}',
    ):
        for method, path in (
            ("POST", "/api/v1/keys"),
            ("PATCH", f"/api/v1/keys/{created['hash']}"),
        ):
            response = await api.client.request(
                method, path, content=raw, headers={"content-type": "application/json"}
            )
            assert_error(response, 400)
    assert (await native(api, created["hash"]))["name"] == "customer"


BAD_PATCHES: list[dict[str, Any]] = [
    {"disabled": "true"},
    {"limit": "lots"},
    {"limit_reset": "never"},
    {"name": ""},
    {"hash": "abc"},
    {"name": "\ud800"},
]


async def test_bad_patches_are_400_and_change_nothing(api: Api) -> None:
    created = await create(api, limit=5)
    before = await native(api, created["hash"])
    for body in BAD_PATCHES:
        response = await api.client.patch(
            f"/api/v1/keys/{created['hash']}",
            content=json.dumps(body).encode(),
            headers={"content-type": "application/json"},
        )
        assert_error(response, 400)
    assert await native(api, created["hash"]) == before


async def test_unknown_or_malformed_hashes_are_404(api: Api) -> None:
    refs = ["0" * 64, "abc", "k" * 300, "%00", "..%2F..%2Fetc", "key_01" + "z" * 24, "%E2%80%AE"]
    for ref in refs:
        for method in ("GET", "PATCH", "DELETE"):
            body = {"name": "x"} if method == "PATCH" else None
            response = await api.client.request(method, f"/api/v1/keys/{ref}", json=body)
            assert_error(response, 404)


async def test_bad_list_parameters_are_400(api: Api) -> None:
    for params in (
        {"offset": "-1"},
        {"offset": "ten"},
        {"offset": "100001"},
        {"include_disabled": "maybe"},
        {"cursor": "x"},
    ):
        assert_error(await api.client.get("/api/v1/keys", params=params), 400)


async def test_unknown_paths_and_methods_answer_in_the_same_format(api: Api) -> None:
    assert_error(await api.client.get("/api/v1/nothing-here"), 404, "NOT_FOUND")
    assert_error(await api.client.put("/api/v1/keys", json={}), 405, "METHOD_NOT_ALLOWED")
    assert_error(await api.client.post("/api/v1/key", json={}), 405)


async def test_an_oversized_body_is_413_in_the_same_format(api: Api) -> None:
    huge = json.dumps({"name": "x", "description": "d" * 200_000}).encode()
    response = await api.client.post(
        "/api/v1/keys", content=huge, headers={"content-type": "application/json"}
    )
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert (await api.client.get("/v1/keys")).json()["data"] == []


async def test_get_key_follows_rotation_grace_and_never_touches_last_used(api: Api) -> None:
    created = await create(api)
    old = {"Authorization": f"Bearer {created['key']}"}
    key_id = (await native(api, created["hash"]))["id"]
    rotated = await api.client.post(f"/v1/keys/{key_id}/rotate", json={"grace_period_seconds": 60})
    new = {"Authorization": f"Bearer {rotated.json()['key']}"}
    assert (await api.client.get("/api/v1/key", headers=old)).status_code == 200
    api.clock.advance(60)
    assert_error(await api.client.get("/api/v1/key", headers=old), 401)
    current = await api.client.get("/api/v1/key", headers=new)
    assert current.json()["data"]["hash"] == rotated.json()["data"]["hash"]
    await api.app.state.runtime.last_used.flush()  # type: ignore[attr-defined]
    assert (await native(api, key_id))["last_used_at"] is None
