"""``/v1/plans``: templates, overrides, and keys following their plan at once."""

from __future__ import annotations

from tests.conftest import Api

PRO = {
    "rate_limits": [{"name": "per_minute", "limit": 2, "period": "1m"}],
    "budget": {"credit_limit": 50, "reset": "monthly", "alert_thresholds": [0.8]},
    "models": {"allow": ["gpt-4*"]},
    "scopes": ["chat"],
}


async def _plan(api: Api, name: str = "pro", **fields: object) -> dict[str, object]:
    response = await api.client.post("/v1/plans", json={"name": name, "policy": PRO, **fields})
    assert response.status_code == 201, response.text
    plan: dict[str, object] = response.json()["data"]
    return plan


async def test_plan_crud(api: Api) -> None:
    plan = await _plan(api, description="for growing teams")
    assert plan["policy"]["budget"]["credit_limit"] == 50  # type: ignore[index]
    assert (await api.client.post("/v1/plans", json={"name": "pro"})).status_code == 409
    listed = (await api.client.get("/v1/plans")).json()["data"]
    assert [p["name"] for p in listed] == ["pro"]
    by_id = (await api.client.get(f"/v1/plans/{plan['id']}")).json()["data"]
    assert by_id == (await api.client.get("/v1/plans/pro")).json()["data"]
    renamed = await api.client.patch("/v1/plans/pro", json={"name": "pro-2024"})
    assert renamed.json()["data"]["name"] == "pro-2024"
    assert renamed.json()["data"]["policy"] == plan["policy"]
    assert (await api.client.get("/v1/plans/pro")).status_code == 404
    deleted = await api.client.delete("/v1/plans/pro-2024")
    assert deleted.status_code == 200
    assert (await api.client.get("/v1/plans")).json()["data"] == []


async def test_a_key_gets_plan_plus_overrides(api: Api) -> None:
    await _plan(api)
    key, data = await api.create_key(plan="pro", policy={"budget": {"credit_limit": 5}}, scopes=[])
    assert data["plan"] == "pro"
    assert data["policy"] == {"budget": {"credit_limit": 5.0}}
    effective = data["effective_policy"]
    assert effective["budget"] == {  # type: ignore[index]
        "credit_limit": 5.0,
        "reset": "monthly",
        "alert_thresholds": [0.8],
    }
    assert effective["rate_limits"][0]["limit"] == 2  # type: ignore[index]
    assert data["limit"] == 5.0
    # The plan's scopes apply to a key without scopes of its own.
    verdict = await api.verify(key, model="gpt-4o", scopes=["chat"])
    assert (verdict["code"], verdict["scopes"]) == ("VALID", ["chat"])
    assert (await api.verify(key, model="gpt-4o", scopes=["admin"]))["code"] == (
        "INSUFFICIENT_SCOPE"
    )
    assert (await api.verify(key, model="o1"))["code"] == "FORBIDDEN_MODEL"


async def test_changing_a_plan_changes_every_key_on_it_at_once(api: Api) -> None:
    await _plan(api)
    keys = [(await api.create_key(plan="pro"))[0] for _ in range(3)]
    for key in keys:  # warm every cache entry
        assert (await api.verify(key, model="gpt-4o"))["plan"] == "pro"
    response = await api.client.patch(
        "/v1/plans/pro", json={"policy": {**PRO, "models": {"allow": ["claude-*"]}}}
    )
    assert response.status_code == 200, response.text
    for key in keys:
        assert (await api.verify(key, model="gpt-4o"))["code"] == "FORBIDDEN_MODEL"
        assert (await api.verify(key, model="claude-3-opus"))["code"] == "VALID"


async def test_a_key_can_leave_its_plan_and_a_used_plan_cannot_be_deleted(api: Api) -> None:
    await _plan(api)
    key, data = await api.create_key(plan="pro")
    response = await api.client.delete("/v1/plans/pro")
    assert response.status_code == 409
    assert response.json()["code"] == "PLAN_IN_USE"
    updated = await api.client.patch(f"/v1/keys/{data['id']}", json={"plan": None})
    assert updated.status_code == 200
    assert updated.json()["data"]["plan"] is None
    assert updated.json()["data"]["effective_policy"] == {}
    assert (await api.verify(key, model="anything"))["code"] == "VALID"
    assert (await api.client.delete("/v1/plans/pro")).status_code == 200


async def test_unknown_plans_and_bad_policies_store_nothing(api: Api) -> None:
    before = (await api.client.get("/v1/keys")).json()["data"]
    bad_bodies = [
        {"name": "k", "plan": "nope"},
        {"name": "k", "policy": {"budget": {"credit_limit": -1}}},
        {"name": "k", "policy": {"budget": {"credit_limit": 0.0000001}}},
        {"name": "k", "policy": {"budget": {"credit_limit": 1e30}}},
        {"name": "k", "policy": {"budget": {"credit_limit": True}}},
        {"name": "k", "policy": {"budget": {"reset": "yearly"}}},
        {"name": "k", "policy": {"rate_limits": [{"name": "x", "limit": 0, "period": "1m"}]}},
        {"name": "k", "policy": {"rate_limits": [{"name": "x", "limit": 10**15, "period": "1m"}]}},
        {"name": "k", "policy": {"rate_limits": [{"name": "x", "limit": 1, "period": "31d"}]}},
        {
            "name": "k",
            "policy": {
                "rate_limits": [{"name": "x", "limit": 1, "period": "30d", "burst": 10**12}]
            },
        },
        {"name": "k", "policy": {"rate_limits": [{"name": "x", "limit": 1, "period": "1y"}]}},
        {"name": "k", "policy": {"rate_limits": [{"name": "x", "limit": "10", "period": "1m"}]}},
        {
            "name": "k",
            "policy": {
                "rate_limits": [
                    {"name": "x", "limit": 1, "period": "1m"},
                    {"name": "x", "limit": 2, "period": "1h"},
                ]
            },
        },
        {"name": "k", "policy": {"network": {"ip_allow": ["300.1.1.1"]}}},
        {"name": "k", "policy": {"network": {"ip_allow": ["10.0.0.1/24"]}}},
        {"name": "k", "policy": {"network": {"ip_deny": ["2001:db8::/129"]}}},
        {"name": "k", "policy": {"network": {"user_agent": "a{1000}{1000}"}}},
        {"name": "k", "policy": {"network": {"user_agent": "foo(?=bar)"}}},
        {"name": "k", "policy": {"network": {"user_agent": "(a)\\1"}}},
        {"name": "k", "policy": {"network": {"user_agent": "x" * 1000}}},
        {"name": "k", "policy": {"network": {"user_agent": "("}}},
        {"name": "k", "policy": {"network": {"origins": ["javascript:alert(1)"]}}},
        {"name": "k", "policy": {"concurrency": {"max_parallel": 0}}},
        {"name": "k", "policy": {"models": {"allow": ["gpt 4"]}}},
        {"name": "k", "policy": {"unknown": 1}},
    ]
    for body in bad_bodies:
        response = await api.client.post("/v1/keys", json=body)
        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert "Traceback" not in response.text
    assert (await api.client.get("/v1/keys")).json()["data"] == before
    response = await api.client.post("/v1/plans", json={"name": "Bad Name"})
    assert response.status_code == 422
    assert (await api.client.get("/v1/plans")).json()["data"] == []


async def test_plan_scopes_for_management_keys(api: Api) -> None:
    reader = await api.management_key("keys:read")
    response = await api.client.post("/v1/plans", json={"name": "x"}, headers=api.as_key(reader))
    assert response.status_code == 403
