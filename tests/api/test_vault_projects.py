"""Project binding of the vault: a project-bound management key reaches its project's
credentials and the org-wide ones shared with projects, and nothing else, on every operation."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.conftest import Api
from tests.domain.test_vault import record

SECRET = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"


async def add(api: Api, alias: str, **fields: Any) -> dict[str, Any]:
    body = {"provider": "openai", "alias": alias, "secret": f"{SECRET}-{alias}", **fields}
    response = await api.client.post("/v1/vault/credentials", json=body)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


async def project(api: Api, name: str) -> str:
    response = await api.client.post("/v1/projects", json={"name": name})
    assert response.status_code == 201, response.text
    project_id: str = response.json()["data"]["id"]
    return project_id


class Tenants:
    """Project A and B, a key bound to A, and one credential of each kind."""

    def __init__(self, api: Api, a_key: dict[str, str], ids: dict[str, str]) -> None:
        self.api = api
        self.a_key = a_key
        self.ids = ids

    async def lease(self, headers: dict[str, str] | None = None, **body: Any) -> httpx.Response:
        return await self.api.client.post(
            "/v1/vault/leases", json={"provider": "openai", **body}, headers=headers or {}
        )

    async def release(
        self, lease_id: str, headers: dict[str, str] | None = None, **body: Any
    ) -> httpx.Response:
        return await self.api.client.request(
            "DELETE", f"/v1/vault/leases/{lease_id}", json=body or None, headers=headers or {}
        )


@pytest.fixture
async def tenants(api: Api) -> Tenants:
    a, b = await project(api, "team-a"), await project(api, "team-b")
    ids = {
        "a": (await add(api, "a-own", project_id=a, tags=["a"]))["id"],
        "b": (await add(api, "b-own", project_id=b, tags=["b"]))["id"],
        "org": (await add(api, "org-private", tags=["org"]))["id"],
        "shared": (await add(api, "org-shared", shared_with_projects=True, tags=["shared"]))["id"],
    }
    a_key = api.as_key(await api.management_key("vault:read", "vault:lease", project_id=a))
    return Tenants(api, a_key, ids)


UNREACHABLE = ("b", "org")


async def test_a_project_key_lists_only_its_own_and_shared_credentials(tenants: Tenants) -> None:
    api, ids = tenants.api, tenants.ids
    seen = await api.client.get("/v1/vault/credentials", headers=tenants.a_key)
    assert seen.status_code == 200
    assert {item["id"] for item in seen.json()["data"]} == {ids["a"], ids["shared"]}
    # Filters cannot widen the reach.
    for tag in ("b", "org"):
        tagged = await api.client.get(f"/v1/vault/credentials?tags={tag}", headers=tenants.a_key)
        assert tagged.json()["data"] == []
    everything = (await api.client.get("/v1/vault/credentials")).json()["data"]
    assert {item["id"] for item in everything} == set(ids.values())
    shown = {item["id"]: item for item in everything}
    assert shown[ids["org"]]["project_id"] is None
    assert shown[ids["shared"]]["shared_with_projects"] is True


async def test_out_of_reach_credentials_answer_as_missing_ones(tenants: Tenants) -> None:
    api = tenants.api
    missing = "cred_" + "0" * 26
    for path in ("", "/stats"):
        absent = await api.client.get(
            f"/v1/vault/credentials/{missing}{path}", headers=tenants.a_key
        )
        assert absent.status_code == 404
        for name in UNREACHABLE:
            hidden = await api.client.get(
                f"/v1/vault/credentials/{tenants.ids[name]}{path}", headers=tenants.a_key
            )
            assert (hidden.status_code, hidden.json()["code"]) == (404, absent.json()["code"])
            assert hidden.json()["detail"] == absent.json()["detail"]
        for name in ("a", "shared"):
            own = await api.client.get(
                f"/v1/vault/credentials/{tenants.ids[name]}{path}", headers=tenants.a_key
            )
            assert own.status_code == 200


async def test_provider_stats_count_only_reachable_credentials(tenants: Tenants) -> None:
    api = tenants.api
    stats = await api.client.get("/v1/vault/stats?provider=openai", headers=tenants.a_key)
    assert stats.status_code == 200
    body = stats.json()
    assert body["credentials"] == 2
    assert {item["id"] for item in body["items"]} == {tenants.ids["a"], tenants.ids["shared"]}
    whole = (await api.client.get("/v1/vault/stats?provider=openai")).json()
    assert whole["credentials"] == 4


async def test_a_project_key_leases_only_reachable_credentials(tenants: Tenants) -> None:
    # Every strategy, many times: the choice is made among reachable credentials only.
    for strategy in ("round_robin", "random", "weighted", "least_used"):
        for _ in range(6):
            taken = await tenants.lease(tenants.a_key, strategy=strategy)
            assert taken.status_code == 201, taken.text
            assert taken.json()["credential_id"] in {tenants.ids["a"], tenants.ids["shared"]}
            assert (
                await tenants.release(taken.json()["lease_id"], tenants.a_key)
            ).status_code == 200
    for tag in UNREACHABLE:
        refused = await tenants.lease(tenants.a_key, tags=[tag])
        assert (refused.status_code, refused.json()["code"]) == (404, "NO_CREDENTIAL")
    shared = await tenants.lease(tenants.a_key, tags=["shared"])
    assert shared.json()["credential_id"] == tenants.ids["shared"]


async def test_a_lease_out_of_reach_cannot_be_released_or_reported(tenants: Tenants) -> None:
    api = tenants.api
    for name in UNREACHABLE:
        # An org-wide caller leases the credential; the project key learns the lease id.
        taken = await tenants.lease(tags=[name])
        assert taken.json()["credential_id"] == tenants.ids[name]
        lease_id = taken.json()["lease_id"]
        for outcome in ("unauthorized", "rate_limited", "ok"):
            refused = await tenants.release(lease_id, tenants.a_key, outcome=outcome)
            assert (refused.status_code, refused.json()["code"]) == (404, "LEASE_NOT_FOUND")
        shown = (await api.client.get(f"/v1/vault/credentials/{tenants.ids[name]}")).json()
        assert shown["data"]["status"] == "active"
        assert shown["data"]["usage"]["live_leases"] == 1
        # The lease is still its holder's to give back.
        assert (await tenants.release(lease_id)).status_code == 200


async def test_a_project_key_reports_outcomes_on_reachable_credentials(tenants: Tenants) -> None:
    taken = await tenants.lease(tenants.a_key, tags=["a"])
    released = await tenants.release(
        taken.json()["lease_id"], tenants.a_key, outcome="unauthorized"
    )
    assert released.status_code == 200
    assert released.json()["credential_status"] == "disabled"


async def test_sharing_and_moving_credentials_is_the_operators_call(tenants: Tenants) -> None:
    api, ids = tenants.api, tenants.ids
    patched = await api.client.patch(
        f"/v1/vault/credentials/{ids['org']}", json={"shared_with_projects": True}
    )
    assert patched.status_code == 200 and patched.json()["data"]["shared_with_projects"] is True
    assert (await tenants.lease(tenants.a_key, tags=["org"])).status_code == 201
    unshared = await api.client.patch(
        f"/v1/vault/credentials/{ids['shared']}", json={"shared_with_projects": False}
    )
    assert unshared.status_code == 200
    assert (await tenants.lease(tenants.a_key, tags=["shared"])).status_code == 404
    # Moving B's credential to A; and back to the organization with project_id null.
    a_project = (await api.client.get(f"/v1/vault/credentials/{ids['a']}")).json()["data"][
        "project_id"
    ]
    moved = await api.client.patch(
        f"/v1/vault/credentials/{ids['b']}", json={"project_id": a_project}
    )
    assert moved.status_code == 200 and moved.json()["data"]["project_id"] == a_project
    assert (await tenants.lease(tenants.a_key, tags=["b"])).status_code == 201
    to_org = await api.client.patch(f"/v1/vault/credentials/{ids['b']}", json={"project_id": None})
    assert to_org.json()["data"]["project_id"] is None
    # A project key still cannot change any of it.
    writer = api.as_key(await api.management_key("vault:*", project_id=a_project))
    refused = await api.client.patch(
        f"/v1/vault/credentials/{ids['a']}", json={"shared_with_projects": True}, headers=writer
    )
    assert refused.status_code == 403


async def test_an_unknown_project_is_refused(api: Api) -> None:
    body = {"provider": "openai", "alias": "x", "secret": SECRET}
    unknown = "proj_" + "0" * 26
    response = await api.client.post("/v1/vault/credentials", json={**body, "project_id": unknown})
    assert (response.status_code, response.json()["code"]) == (404, "PROJECT_NOT_FOUND")
    bad = await api.client.post("/v1/vault/credentials", json={**body, "project_id": "nope"})
    assert bad.status_code == 422
    created = await add(api, "x")
    patched = await api.client.patch(
        f"/v1/vault/credentials/{created['id']}", json={"project_id": unknown}
    )
    assert (patched.status_code, patched.json()["code"]) == (404, "PROJECT_NOT_FOUND")


async def test_mixed_reaches_in_concurrent_batches_keep_the_limits_exact(api: Api) -> None:
    a = await project(api, "team-a")
    b = await project(api, "team-b")
    reachable = {
        (await add(api, "a-own", project_id=a, max_concurrent=1))["id"],
        (await add(api, "org-shared", shared_with_projects=True, max_concurrent=1))["id"],
    }
    await add(api, "b-own", project_id=b, max_concurrent=1)
    await add(api, "org-private", max_concurrent=1)
    a_key = api.as_key(await api.management_key("vault:lease", project_id=a))

    async def take(headers: dict[str, str]) -> httpx.Response:
        return await api.client.post(
            "/v1/vault/leases", json={"provider": "openai", "ttl_seconds": 600}, headers=headers
        )

    # Concurrent leases of the project key alone: only its reachable credentials, once each.
    alone = await asyncio.gather(*(take(a_key) for _ in range(20)))
    taken = [r.json() for r in alone if r.status_code == 201]
    assert sorted(lease["credential_id"] for lease in taken) == sorted(reachable)
    for lease in taken:
        await api.client.delete(f"/v1/vault/leases/{lease['lease_id']}")
    # Project and org-wide leases queue together: they go in batches of their own reach,
    # and every batch locks the rows it chooses from, so each credential is leased once.
    answers = await asyncio.gather(*(take(a_key if n % 2 else {}) for n in range(40)))
    granted = [
        (n % 2, r.json()["credential_id"]) for n, r in enumerate(answers) if r.status_code == 201
    ]
    assert len(granted) == 4
    assert {credential for bound, credential in granted if bound} <= reachable
    assert len({credential for _, credential in granted}) == 4
    refused = {r.json()["code"] for r in answers if r.status_code != 201}
    assert refused == {"ALL_AT_MAX_CONCURRENCY"}


async def test_the_stores_rule_is_the_domains_rule(api: Api) -> None:
    projects = [await project(api, "team-a"), await project(api, "team-b")]
    made = [
        await add(api, f"c{n}", project_id=owner, shared_with_projects=shared)
        for n, (owner, shared) in enumerate(
            (owner, shared) for owner in (None, *projects) for shared in (False, True)
        )
    ]
    for caller in projects:
        headers = api.as_key(await api.management_key("vault:read", project_id=caller))
        listed = await api.client.get("/v1/vault/credentials", headers=headers)
        expected = {
            item["id"]
            for item in made
            if record(
                0, project_id=item["project_id"], shared_with_projects=item["shared_with_projects"]
            ).reachable_from(caller)
        }
        assert {item["id"] for item in listed.json()["data"]} == expected
        assert len(expected) == 3  # its own two (shared or not) and the shared org-wide one
