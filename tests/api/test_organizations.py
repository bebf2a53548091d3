"""Two real organizations side by side: each has its own default project, and nothing crosses.

A second organization is made the one way the code supports, ``Store.create_organization``
(there is no API to create organizations), and given a management key with
``ManagementKeys.issue``, as the first start does for the first one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import httpx

from keyplane.domain.tenancy import Project
from tests.api.test_verify import runtime_of
from tests.conftest import Api


@dataclass
class SecondOrg:
    org_id: str
    default: Project
    headers: dict[str, str]


async def second_org(api: Api) -> SecondOrg:
    runtime = runtime_of(api)
    org, default = await runtime.store.tenancy.create_organization("second", api.clock.now())
    issued = await runtime.services.management.issue(
        org.id, "org2 root", ("*",), None, created_by=None
    )
    return SecondOrg(org.id, default, api.as_key(issued.secret))


async def post(api: Api, path: str, body: object, headers: dict[str, str]) -> httpx.Response:
    return await api.client.post(path, json=body, headers=headers)


async def test_each_org_has_its_own_default_project(api: Api) -> None:
    runtime = runtime_of(api)
    two = await second_org(api)
    assert two.default.org_id == two.org_id and two.default.name == "default"
    assert two.default.id != runtime.default_project.id
    # Keys created without a project land in the caller's own org's default project.
    theirs = await post(api, "/v1/keys", {"name": "org2 key"}, two.headers)
    assert theirs.status_code == 201, theirs.text
    assert theirs.json()["data"]["project_id"] == two.default.id
    assert theirs.json()["data"]["org_id"] == two.org_id
    mine = await api.create_key(name="org1 key")
    assert mine[1]["project_id"] == runtime.default_project.id
    # The same through both compatibility surfaces.
    fast = await post(api, "/prod/createServiceKey", {"api_key_name": "svc"}, two.headers)
    assert fast.status_code == 201, fast.text
    assert fast.json()["project_id"] == two.default.id
    router = await post(api, "/api/v1/keys", {"name": "or"}, two.headers)
    assert router.status_code == 201, router.text
    got = await api.client.get(f"/v1/keys/{router.json()['hash']}", headers=two.headers)
    assert got.json()["data"]["project_id"] == two.default.id
    # Each org lists only its own projects.
    listed = (await api.client.get("/v1/projects", headers=two.headers)).json()["data"]
    assert [p["id"] for p in listed] == [two.default.id]


async def test_nothing_crosses_between_two_orgs(api: Api) -> None:
    two = await second_org(api)
    _, mine = await api.create_key(name="org1 key", owner="shared-owner")
    theirs = (
        await post(api, "/v1/keys", {"name": "org2 key", "owner": "shared-owner"}, two.headers)
    ).json()["data"]
    # Lists.
    for headers, own, other in ((two.headers, theirs, mine), ({}, mine, theirs)):
        listed = (
            await api.client.get("/v1/keys", params={"owner": "shared-owner"}, headers=headers)
        ).json()["data"]
        assert [k["id"] for k in listed] == [own["id"]]
        # Get, update, rotate by id and by hash of the other org: 404, never the record.
        for ref in (other["id"], other["hash"]):
            assert (await api.client.get(f"/v1/keys/{ref}", headers=headers)).status_code == 404
        for method, path in (
            ("PATCH", f"/v1/keys/{other['id']}"),
            ("POST", f"/v1/keys/{other['id']}/rotate"),
            ("POST", f"/v1/keys/{other['id']}/disable"),
            ("DELETE", f"/v1/keys/{other['id']}"),
        ):
            response = await api.client.request(method, path, json={}, headers=headers)
            assert response.status_code == 404, (method, path, response.text)
    # Usage and verify: org 2 cannot report against, nor verify, org 1's key.
    secret, org1_key = await api.create_key(name="org1 metered")
    report = {"key_id": org1_key["id"], "cost": 1, "request_id": "r-cross"}
    crossed = await post(api, "/v1/usage", report, two.headers)
    assert crossed.status_code == 404, crossed.text
    verdict = (await post(api, "/v1/verify", {"key": secret}, two.headers)).json()
    assert verdict["valid"] is False and verdict["code"] == "NOT_FOUND", verdict
    assert "org1 metered" not in json.dumps(verdict)
    # Projects by id: org 1's project is unknown to org 2.
    org1_project = (
        await api.client.post("/v1/projects", json={"name": "Production", "key_prefix": "prod"})
    ).json()["data"]["id"]
    assert (
        await api.client.get(f"/v1/projects/{org1_project}", headers=two.headers)
    ).status_code == 404
    made = await post(api, "/v1/keys", {"name": "x", "project_id": org1_project}, two.headers)
    assert made.status_code == 404 and made.json()["code"] == "PROJECT_NOT_FOUND"
    # Projects and plans by name: the same names in both orgs are different objects.
    fast = await post(
        api, "/prod/createServiceKey", {"api_key_name": "s", "project_name": "Production"},
        two.headers,
    )  # fmt: skip
    assert fast.status_code == 404, fast.text
    assert (await api.client.post("/v1/plans", json={"name": "gold"})).status_code == 201
    by_name = await post(api, "/v1/keys", {"name": "x", "plan": "gold"}, two.headers)
    assert by_name.status_code == 422 and by_name.json()["code"] == "PLAN_NOT_FOUND"
    assert (await api.client.get("/v1/plans/gold", headers=two.headers)).status_code == 404
    assert (await api.client.get("/v1/plans", headers=two.headers)).json()["data"] == []
    # Management keys.
    org1_mk = (await api.client.get("/v1/management-keys")).json()["data"]
    org2_mk = (await api.client.get("/v1/management-keys", headers=two.headers)).json()["data"]
    assert {k["id"] for k in org1_mk}.isdisjoint({k["id"] for k in org2_mk})
    for key in org1_mk:
        got = await api.client.get(f"/v1/management-keys/{key['id']}", headers=two.headers)
        assert got.status_code == 404


async def test_an_org_without_a_default_project_gets_one_on_first_use(api: Api) -> None:
    """An organization made before migration 0005 (or inserted by hand) is repaired lazily."""
    from sqlalchemy import insert

    from keyplane.store.tables import organizations

    runtime = runtime_of(api)
    async with runtime.store.engine.begin() as conn:
        await conn.execute(
            insert(organizations).values(id="org_bare", name="bare", created_at=api.clock.now())
        )
    issued = await runtime.services.management.issue(
        "org_bare", "bare", ("*",), None, created_by=None
    )
    made = await post(api, "/v1/keys", {"name": "k"}, api.as_key(issued.secret))
    assert made.status_code == 201, made.text
    assert made.json()["data"]["project_id"] != runtime.default_project.id  # not org 1's
    project = await runtime.store.tenancy.default_project("org_bare", api.clock.now())
    assert made.json()["data"]["project_id"] == project.id
