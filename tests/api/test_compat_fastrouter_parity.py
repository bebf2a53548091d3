"""Seed 001's ``createServiceKey`` example unchanged: organization aliases for ``org_id`` and,
when the operator allows it, projects created by ``project_name`` / ``project_id``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from keyplane.api.app import create_app
from keyplane.domain.clock import ManualClock
from keyplane.services.projects import prefix_for
from tests.api.test_compat_fastrouter import SEED_EXAMPLE, assert_error
from tests.api.test_organizations import second_org
from tests.conftest import ROOT_KEY, Api, Database

#: What FastRouter's FAQ calls required besides the example's fields.
FASTROUTER_IDS = {"org_id": "fr-org-7f3a", "project_id": "fr-proj-5521"}


@pytest.fixture
async def creating_api(database: Database, clock: ManualClock) -> AsyncIterator[Api]:
    """Keyplane with KEYPLANE_COMPAT_CREATE_PROJECTS=true."""
    app = create_app(database.settings(compat_create_projects=True), clock=clock)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://keyplane.test",
            headers={"Authorization": f"Bearer {ROOT_KEY}"},
        ) as client,
    ):
        yield Api(client, app, clock, database)


async def projects(api: Api) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in (await api.client.get("/v1/projects")).json()["data"]}


async def test_the_seed_example_runs_unchanged_when_projects_may_be_created(
    creating_api: Api,
) -> None:
    api = creating_api
    response = await api.client.post("/prod/createServiceKey", json=SEED_EXAMPLE)
    assert response.status_code == 201, response.text
    created = response.json()
    made = (await projects(api))["Production"]
    assert made["key_prefix"] == "production"
    assert created["project_id"] == made["id"] and created["project_name"] == "Production"
    assert created["api_key"].startswith("production_live_")
    # The same call again lands in the same project.
    again = await api.client.post("/prod/createServiceKey", json=SEED_EXAMPLE)
    assert again.json()["project_id"] == made["id"]
    assert sorted(await projects(api)) == ["Production", "default"]


async def test_fastrouter_ids_name_the_organization_and_project(creating_api: Api) -> None:
    api = creating_api
    body = {**SEED_EXAMPLE, **FASTROUTER_IDS}
    refused = await api.client.post("/prod/createServiceKey", json=body)
    assert_error(refused, 403, "ORG_MISMATCH")  # not an alias yet
    added = await api.client.put("/v1/organization/aliases/fr-org-7f3a")
    assert added.status_code == 200, added.text
    assert added.json()["data"]["aliases"] == ["fr-org-7f3a"]
    response = await api.client.post("/prod/createServiceKey", json=body)
    assert response.status_code == 201, response.text
    assert response.json()["project_name"] == "Production"
    listed = await api.client.get("/prod/getServiceKeys", params={"org_id": "fr-org-7f3a"})
    assert [k["api_key_name"] for k in listed.json()["service_keys"]] == ["ci-pipeline"]
    # A project named by FastRouter's id alone is created under that name, found again by it.
    by_id = {"api_key_name": "svc", "project_id": "fr-proj-9000"}
    first = await api.client.post("/prod/createServiceKey", json=by_id)
    second = await api.client.post("/prod/createServiceKey", json=by_id)
    assert first.status_code == second.status_code == 201
    assert first.json()["project_id"] == second.json()["project_id"]
    assert first.json()["project_name"] == "fr-proj-9000"


async def test_creating_a_project_needs_the_right_to_create_projects(creating_api: Api) -> None:
    api = creating_api
    writer = await api.management_key("keys:write", "keys:read")
    response = await api.client.post(
        "/prod/createServiceKey", json=SEED_EXAMPLE, headers=api.as_key(writer)
    )
    assert_error(response, 403)
    assert sorted(await projects(api)) == ["default"]
    owner = await api.management_key("keys:*", "projects:write")
    response = await api.client.post(
        "/prod/createServiceKey", json=SEED_EXAMPLE, headers=api.as_key(owner)
    )
    assert response.status_code == 201, response.text


async def test_without_the_setting_a_missing_project_stays_a_404(api: Api) -> None:
    response = await api.client.post("/prod/createServiceKey", json=SEED_EXAMPLE)
    assert_error(response, 404, "PROJECT_NOT_FOUND")
    assert sorted(await projects(api)) == ["default"]


async def test_aliases_are_managed_per_organization(api: Api) -> None:
    assert (await api.client.get("/v1/organization/aliases")).json()["data"]["aliases"] == []
    for bad in ("has space", "-leading", "x" * 201, "org_01h0000000000000000000000a"):
        response = await api.client.put(f"/v1/organization/aliases/{bad}")
        assert response.status_code == 422, (bad, response.text)
        assert "Traceback" not in response.text
    assert (await api.client.put("/v1/organization/aliases/acme.io")).status_code == 200
    assert (await api.client.put("/v1/organization/aliases/acme.io")).status_code == 200
    other = await second_org(api)
    taken = await api.client.put("/v1/organization/aliases/acme.io", headers=other.headers)
    assert taken.status_code == 409 and taken.json()["code"] == "ALIAS_TAKEN"
    # Another organization's alias does not name this one.
    await api.client.put("/v1/organization/aliases/other-co", headers=other.headers)
    response = await api.client.get("/prod/getServiceKeys", params={"org_id": "other-co"})
    assert_error(response, 403, "ORG_MISMATCH")
    reader = await api.management_key("projects:read")
    denied = await api.client.put("/v1/organization/aliases/x1", headers=api.as_key(reader))
    assert denied.status_code == 403
    listed = await api.client.get("/v1/organization/aliases", headers=api.as_key(reader))
    assert listed.json()["data"]["aliases"] == ["acme.io"]
    assert (await api.client.delete("/v1/organization/aliases/acme.io")).status_code == 204
    gone = await api.client.delete("/v1/organization/aliases/acme.io")
    assert gone.status_code == 404 and gone.json()["code"] == "ALIAS_NOT_FOUND"


async def test_get_service_keys_filters_by_tags(api: Api) -> None:
    for name, tags in (("a", ["ci", "prod"]), ("b", ["ci"]), ("c", ["prod"]), ("d", [])):
        response = await api.client.post(
            "/prod/createServiceKey", json={"api_key_name": name, "tags": tags}
        )
        assert response.status_code == 201

    async def names(params: Any) -> list[str]:
        response = await api.client.get("/prod/getServiceKeys", params=params)
        assert response.status_code == 200, response.text
        return [k["api_key_name"] for k in response.json()["service_keys"]]

    assert await names({"tags": "ci"}) == ["a", "b"]
    assert await names([("tags", "ci"), ("tags", "prod")]) == ["a"]
    assert await names({"tags": "prod,ci"}) == ["a"]
    assert await names({"tags": "prod", "limit": 1, "offset": 1}) == ["c"]
    assert await names({"tags": "nothing"}) == []
    many = ",".join(f"t{i}" for i in range(21))
    assert_error(await api.client.get("/prod/getServiceKeys", params={"tags": many}), 400)


def test_prefixes_made_from_names_are_valid_prefixes() -> None:
    assert prefix_for("Production") == "production"
    assert prefix_for("Customer Envs (EU)") == "customer_envs_eu"
    assert prefix_for("2025 batch") == "p_2025_batch"
    assert prefix_for("fr-proj-5521") == "fr_proj_5521"
    assert prefix_for("!!!") == "p"
    assert prefix_for("a" * 40) == "a" * 16
