"""``/v1/vault``: credentials CRUD, masking, filters, stats, leases and their outcomes."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.conftest import Api

SECRET = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"


async def add(api: Api, **fields: Any) -> dict[str, Any]:
    body = {"provider": "openai", "alias": "prod-gpt4-key", "secret": SECRET, **fields}
    response = await api.client.post("/v1/vault/credentials", json=body)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


async def lease(api: Api, **fields: Any) -> httpx.Response:
    return await api.client.post("/v1/vault/leases", json={"provider": "openai", **fields})


async def release(api: Api, lease_id: str, **body: Any) -> httpx.Response:
    return await api.client.request(
        "DELETE", f"/v1/vault/leases/{lease_id}", json=body if body else None
    )


async def test_the_contract_shapes_round_trip_and_the_secret_is_write_only(api: Api) -> None:
    created = await add(
        api,
        environment="production",
        tags=["premium"],
        metadata={"billing": {"tier": "enterprise"}},
        weight=10,
        daily_limit=1000,
        monthly_limit=25000,
        max_concurrent=5,
    )
    assert created["provider"] == "openai"
    assert created["secret_hint"] == "sk-p...6789"
    assert created["status"] == "active"
    assert created["usage"]["daily_remaining"] == 1000
    assert SECRET not in str(created)
    fetched = await api.client.get(f"/v1/vault/credentials/{created['id']}")
    listed = await api.client.get("/v1/vault/credentials")
    for response in (fetched, listed):
        assert response.status_code == 200
        assert SECRET not in response.text
        assert "sealed_secret" not in response.text

    taken = await lease(
        api,
        environment="production",
        tags=["premium"],
        metadata_filter={"billing.tier": "enterprise"},
        ttl_seconds=60,
    )
    assert taken.status_code == 201, taken.text
    body = taken.json()
    assert body["secret"] == SECRET
    assert body["credential_id"] == created["id"]
    assert body["alias"] == "prod-gpt4-key"
    assert body["expires_at"].startswith("2026-03-01T12:01:00")
    stats = (await api.client.get(f"/v1/vault/credentials/{created['id']}/stats")).json()
    assert stats["usage"]["daily_used"] == 1
    assert stats["usage"]["live_leases"] == 1
    released = await release(api, body["lease_id"])
    assert released.status_code == 200, released.text
    assert (await release(api, body["lease_id"])).status_code == 404


async def test_provider_names_are_case_insensitive_and_typos_are_refused(api: Api) -> None:
    assert (await add(api, provider="Google-Gemini"))["provider"] == "google_gemini"
    assert (await add(api, provider="custom", alias="other"))["provider"] == "custom"
    response = await api.client.post(
        "/v1/vault/credentials", json={"provider": "OpenAl", "alias": "a", "secret": "s" * 20}
    )
    assert response.status_code == 422
    assert response.json()["code"] == "UNKNOWN_PROVIDER"
    assert "openai" in response.json()["detail"]
    assert "custom" in response.json()["detail"]


async def test_bad_input_is_a_clear_4xx(api: Api) -> None:
    cases: list[dict[str, Any]] = [
        {"provider": "openai", "alias": "a", "secret": ""},
        {"provider": "openai", "alias": "a", "secret": "   "},
        {"provider": "openai", "alias": "a", "secret": " sk-padded "},
        {"provider": "openai", "alias": "a", "secret": "sk\x00nul"},
        {"provider": "openai", "alias": "a", "secret": "sk", "metadata": {"x": "y" * 9000}},
        {"provider": "openai", "alias": "a", "secret": "sk", "daily_limit": -1},
        {"provider": "openai", "alias": "a", "secret": "sk", "daily_limit": "10"},
        {"provider": "openai", "alias": "a", "secret": "sk", "weight": 1.5},
        {"provider": "openai", "alias": "a", "secret": "sk", "environment": "Prod uction"},
        {"provider": "openai", "alias": "a", "secret": "sk", "unknown": 1},
        {"provider": "\udcff", "alias": "a", "secret": "sk"},
    ]
    for body in cases:
        # json.dumps escapes the lone surrogate, as a hostile client could send it.
        response = await api.client.post(
            "/v1/vault/credentials",
            content=json.dumps(body),
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert "sk-padded" not in response.text and "nul" not in response.text
    bad_leases: list[dict[str, Any]] = [
        {"metadata_filter": {"billing..tier": "x"}},
        {"metadata_filter": {"a": {"nested": 1}}},
        {"metadata_filter": {f"k{i}": "v" for i in range(11)}},
        {"ttl_seconds": 0},
        {"ttl_seconds": 10**6},
        {"provider": "opnai"},
        {"strategy": "fastest"},
    ]
    for body in bad_leases:
        response = await lease(api, **body)
        assert response.status_code == 422, (body, response.text)
    bad_lists = [
        "metadata.a..b=1",
        "has_capacity=maybe",
        "provider=nope_nope",
        "bogus=1",
        "tags=" + "x" * 200,
    ]
    for query in bad_lists:
        response = await api.client.get(f"/v1/vault/credentials?{query}")
        assert response.status_code == 422, (query, response.text)
    assert (await api.client.get("/v1/vault/credentials/nope")).status_code == 404
    assert (await release(api, "lease_00000000000000000000000000")).status_code == 404
    assert (await release(api, "x", outcome="exploded")).status_code in (404, 422)


async def test_filters(api: Api) -> None:
    enterprise = await add(
        api,
        alias="ent",
        environment="production",
        tags=["premium", "gpt-4"],
        metadata={"billing": {"tier": "enterprise"}, "seats": 5, "sso": True},
    )
    starter = await add(
        api, alias="starter", environment="staging", metadata={"billing": {"tier": "starter"}}
    )
    blocked = await add(api, alias="blocked", provider="anthropic", daily_limit=0)

    async def ids(query: str) -> list[str]:
        response = await api.client.get(f"/v1/vault/credentials?{query}")
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["data"]]

    assert await ids("provider=OPENAI") == [enterprise["id"], starter["id"]]
    assert await ids("provider=anthropic") == [blocked["id"]]
    assert await ids("environment=staging") == [starter["id"]]
    assert await ids("tags=premium") == [enterprise["id"]]
    assert await ids("tags=premium,gpt-4") == [enterprise["id"]]
    assert await ids("tags=premium&tags=other") == []
    assert await ids("metadata.billing.tier=enterprise") == [enterprise["id"]]
    assert await ids("metadata.seats=5&metadata.sso=true") == [enterprise["id"]]
    assert await ids("has_capacity=false") == [blocked["id"]]
    assert await ids("has_capacity=true") == [enterprise["id"], starter["id"]]
    page = (await api.client.get("/v1/vault/credentials?limit=2")).json()
    assert page["has_more"] is True
    rest = await ids(f"cursor={page['next_cursor']}")
    assert rest == [blocked["id"]]


async def test_bulk_add_is_all_or_nothing(api: Api) -> None:
    good = {"provider": "openai", "alias": "one", "secret": "sk-one-1234567890"}
    response = await api.client.post(
        "/v1/vault/credentials/bulk",
        json={"credentials": [good, {**good, "alias": "two", "provider": "anthropic"}]},
    )
    assert response.status_code == 201, response.text
    assert [c["provider"] for c in response.json()["data"]] == ["openai", "anthropic"]
    failing = await api.client.post(
        "/v1/vault/credentials/bulk",
        json={"credentials": [good, {**good, "provider": "opnai"}]},
    )
    assert failing.status_code == 422
    assert "credential 1" in failing.json()["detail"]
    listed = (await api.client.get("/v1/vault/credentials")).json()["data"]
    assert len(listed) == 2


async def test_update_and_soft_delete(api: Api) -> None:
    created = await add(api, daily_limit=5)
    changed = await api.client.patch(
        f"/v1/vault/credentials/{created['id']}",
        json={"alias": "renamed", "secret": "sk-new-secret-000111222333", "daily_limit": None},
    )
    assert changed.status_code == 200, changed.text
    data = changed.json()["data"]
    assert (data["alias"], data["daily_limit"], data["secret_hint"]) == (
        "renamed",
        None,
        "sk-n...2333",
    )
    assert (await lease(api)).json()["secret"] == "sk-new-secret-000111222333"
    disabled = await api.client.patch(
        f"/v1/vault/credentials/{created['id']}", json={"status": "disabled"}
    )
    assert disabled.json()["data"]["status"] == "disabled"
    assert (await lease(api)).json()["code"] == "NO_CREDENTIAL"
    await api.client.patch(f"/v1/vault/credentials/{created['id']}", json={"status": "active"})
    deleted = await api.client.delete(f"/v1/vault/credentials/{created['id']}")
    assert deleted.json()["data"]["status"] == "revoked"
    # Soft delete keeps the record, masked, and never leases it again.
    kept = (await api.client.get(f"/v1/vault/credentials/{created['id']}")).json()["data"]
    assert kept["status"] == "revoked" and kept["revoked_at"] is not None
    assert (await lease(api)).status_code == 404
    again = await api.client.patch(f"/v1/vault/credentials/{created['id']}", json={"alias": "x"})
    assert again.status_code == 409
    erased = await api.client.delete(f"/v1/vault/credentials/{created['id']}?hard=true")
    assert erased.status_code == 200
    assert (await api.client.get(f"/v1/vault/credentials/{created['id']}")).status_code == 404


async def test_outcomes_disable_or_cool_down_so_the_next_lease_picks_another(api: Api) -> None:
    first = await add(api, alias="first")
    second = await add(api, alias="second")
    taken = (await lease(api)).json()
    assert taken["credential_id"] == first["id"]
    released = await release(api, taken["lease_id"], outcome="unauthorized")
    assert released.json()["credential_status"] == "disabled"
    for _ in range(3):
        again = (await lease(api)).json()
        assert again["credential_id"] == second["id"]
        await release(api, again["lease_id"])
    again = (await lease(api)).json()
    cooled = await release(api, again["lease_id"], outcome="rate_limited", retry_after=30)
    assert cooled.json()["credential_status"] == "cooling_down"
    refused = await lease(api)
    assert refused.status_code == 429
    assert refused.json()["code"] == "ALL_RATE_LIMITED"
    assert refused.json()["retry_after"] == 30
    assert refused.headers["retry-after"] == "30"
    api.clock.advance(31)
    assert (await lease(api)).json()["credential_id"] == second["id"]


async def test_max_concurrency_refusal_and_expiry_frees_the_slot(api: Api) -> None:
    await add(api, max_concurrent=1)
    held = await lease(api, ttl_seconds=10)
    assert held.status_code == 201
    refused = await lease(api)
    assert refused.status_code == 429
    assert refused.json()["code"] == "ALL_AT_MAX_CONCURRENCY"
    assert refused.json()["retry_after"] == 10
    api.clock.advance(10)
    assert (await lease(api)).status_code == 201


async def test_usage_limits_reset_at_utc_day_and_month_boundaries(api: Api) -> None:
    created = await add(api, daily_limit=2, monthly_limit=3)
    for _ in range(2):
        await release(api, (await lease(api)).json()["lease_id"])
    exhausted = await lease(api)
    assert (exhausted.status_code, exhausted.json()["code"]) == (404, "NO_CREDENTIAL")
    api.clock.advance(12 * 3600)  # 2026-03-02 00:00 UTC: a new day, the same month
    await release(api, (await lease(api)).json()["lease_id"])
    assert (await lease(api)).status_code == 404  # monthly limit of 3 reached
    stats = (await api.client.get("/v1/vault/stats?provider=openai")).json()
    assert (stats["daily_used"], stats["monthly_used"], stats["monthly_remaining"]) == (1, 3, 0)
    assert stats["items"][0]["id"] == created["id"]
    api.clock.advance(30 * 24 * 3600)  # April
    assert (await lease(api)).status_code == 201


async def test_scopes_guard_the_vault(api: Api) -> None:
    await add(api)
    reader = api.as_key(await api.management_key("vault:read"))
    leaser = api.as_key(await api.management_key("vault:lease"))
    assert (await api.client.get("/v1/vault/credentials", headers=reader)).status_code == 200
    assert (
        await api.client.post("/v1/vault/leases", json={"provider": "openai"}, headers=reader)
    ).status_code == 403
    body = {"provider": "openai", "alias": "x", "secret": "sk-xxxxxxxxxxxx"}
    assert (
        await api.client.post("/v1/vault/credentials", json=body, headers=leaser)
    ).status_code == 403
    taken = await api.client.post("/v1/vault/leases", json={"provider": "openai"}, headers=leaser)
    assert taken.status_code == 201


async def test_project_bound_keys_cannot_change_the_organizations_vault(api: Api) -> None:
    project = await api.client.post("/v1/projects", json={"name": "team-a"})
    assert project.status_code == 201, project.text
    bound = api.as_key(await api.management_key("vault:*", project_id=project.json()["data"]["id"]))
    body = {"provider": "openai", "alias": "x", "secret": "sk-xxxxxxxxxxxx"}
    refused = await api.client.post("/v1/vault/credentials", json=body, headers=bound)
    assert refused.status_code == 403


async def test_a_full_credential_has_no_capacity_until_a_lease_ends(api: Api) -> None:
    created = await add(api, max_concurrent=1)
    held = (await lease(api)).json()
    full = (await api.client.get("/v1/vault/credentials?has_capacity=false")).json()["data"]
    assert [item["id"] for item in full] == [created["id"]]
    assert full[0]["usage"]["live_leases"] == 1
    await release(api, held["lease_id"])
    free = (await api.client.get("/v1/vault/credentials?has_capacity=true")).json()["data"]
    assert [item["id"] for item in free] == [created["id"]]
