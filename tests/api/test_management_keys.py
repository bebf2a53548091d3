"""``/v1/management-keys`` and management-plane authentication."""

from __future__ import annotations

from tests.conftest import Api


async def test_api_key_on_the_management_api_is_401(api: Api) -> None:
    key, _ = await api.create_key()
    response = await api.client.get("/v1/keys", headers=api.as_key(key))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["code"] == "UNAUTHENTICATED"
    assert key not in response.text


async def test_missing_and_unknown_credentials_are_401(api: Api) -> None:
    for header in (
        {"Authorization": ""},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer kp_mgmt_nope"},
    ):
        response = await api.client.get("/v1/keys", headers=header)
        assert response.status_code == 401


async def test_create_list_get_and_revoke(api: Api) -> None:
    response = await api.client.post(
        "/v1/management-keys", json={"name": "ci", "scopes": ["keys:read", "verify"]}
    )
    assert response.status_code == 201, response.text
    secret = response.json()["key"]
    record = response.json()["data"]
    assert secret.startswith("kp_mgmt_")
    assert record["scopes"] == ["keys:read", "verify"]
    assert record["created_by"] == "root"
    assert secret not in (await api.client.get("/v1/management-keys")).text
    listed = (await api.client.get("/v1/management-keys")).json()["data"]
    assert record["id"] in [item["id"] for item in listed]
    fetched = await api.client.get(f"/v1/management-keys/{record['id']}")
    assert fetched.json()["data"] == record
    assert (await api.client.get("/v1/keys", headers=api.as_key(secret))).status_code == 200
    await api.app.state.runtime.management_last_used.flush()  # type: ignore[attr-defined]
    used = (await api.client.get(f"/v1/management-keys/{record['id']}")).json()["data"]
    assert used["last_used_at"] is not None
    revoked = await api.client.delete(f"/v1/management-keys/{record['id']}")
    assert revoked.json()["data"]["revoked_at"] is not None
    # refused at once: the management-key cache is invalidated by the revocation
    assert (await api.client.get("/v1/keys", headers=api.as_key(secret))).status_code == 401


async def test_scopes_limit_what_a_management_key_can_do(api: Api) -> None:
    reader = await api.management_key("keys:read")
    assert (await api.client.get("/v1/keys", headers=api.as_key(reader))).status_code == 200
    refused = await api.client.post("/v1/keys", json={"name": "x"}, headers=api.as_key(reader))
    assert refused.status_code == 403
    assert refused.json()["code"] == "MISSING_SCOPE"
    writer = await api.management_key("keys:*")
    created = await api.client.post("/v1/keys", json={"name": "x"}, headers=api.as_key(writer))
    assert created.status_code == 201


async def test_a_key_can_never_grant_more_than_it_holds(api: Api) -> None:
    delegator = await api.management_key("management_keys:write", "keys:read")
    ok = await api.client.post(
        "/v1/management-keys",
        json={"name": "sub", "scopes": ["keys:read"]},
        headers=api.as_key(delegator),
    )
    assert ok.status_code == 201
    for wider in (["keys:write"], ["keys:*"], ["*"], ["management_keys:write", "verify"]):
        refused = await api.client.post(
            "/v1/management-keys",
            json={"name": "esc", "scopes": wider},
            headers=api.as_key(delegator),
        )
        assert refused.status_code == 403, wider
        assert refused.json()["code"] == "SCOPE_ESCALATION"


async def test_project_bound_keys_stay_in_their_project(api: Api) -> None:
    project = (await api.client.post("/v1/projects", json={"name": "p"})).json()["data"]
    bound = await api.management_key("*", project_id=project["id"])
    created = await api.client.post("/v1/keys", json={"name": "in"}, headers=api.as_key(bound))
    assert created.json()["data"]["project_id"] == project["id"]
    _, other = await api.create_key(name="elsewhere")
    hidden = await api.client.get(f"/v1/keys/{other['id']}", headers=api.as_key(bound))
    assert hidden.status_code == 404
    listed = (await api.client.get("/v1/keys", headers=api.as_key(bound))).json()["data"]
    assert [item["name"] for item in listed] == ["in"]
    escape = await api.client.post(
        "/v1/management-keys",
        json={"name": "x", "scopes": ["keys:read"], "project_id": None},
        headers=api.as_key(bound),
    )
    assert escape.json()["data"]["project_id"] == project["id"]
    default = (await api.client.get("/v1/projects")).json()["data"]
    other_project = next(p["id"] for p in default if p["id"] != project["id"])
    refused = await api.client.post(
        "/v1/keys", json={"name": "x", "project_id": other_project}, headers=api.as_key(bound)
    )
    assert refused.status_code == 403


async def test_unknown_management_scopes_are_rejected(api: Api) -> None:
    response = await api.client.post(
        "/v1/management-keys", json={"name": "x", "scopes": ["billing:write"]}
    )
    assert response.status_code == 422
    assert response.json()["code"] == "INVALID_SCOPE"


async def test_a_narrow_key_cannot_revoke_a_broader_one(api: Api) -> None:
    admin = await api.management_key("management_keys:write", "management_keys:read")
    broad = (
        await api.client.post("/v1/management-keys", json={"name": "broad", "scopes": ["*"]})
    ).json()["data"]
    refused = await api.client.delete(
        f"/v1/management-keys/{broad['id']}", headers=api.as_key(admin)
    )
    assert refused.status_code == 403
