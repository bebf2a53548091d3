"""Response headers: nosniff everywhere, no-store on everything but the docs' assets, and the
docs UI served from the package, not a CDN."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.conftest import Api

VAULT_SECRET = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"


def assert_private(response: httpx.Response) -> None:
    assert response.headers.get("x-content-type-options") == "nosniff", response.headers
    assert response.headers.get("cache-control") == "no-store", response.headers


async def test_every_answer_carrying_a_secret_is_no_store(api: Api) -> None:
    created = await api.client.post("/v1/keys", json={"name": "k"})
    assert created.status_code == 201 and "key" in created.json()
    assert_private(created)
    key_id = created.json()["data"]["id"]
    rotated = await api.client.post(f"/v1/keys/{key_id}/rotate", json={})
    assert rotated.status_code == 200, rotated.text
    assert_private(rotated)
    management = await api.client.post(
        "/v1/management-keys", json={"name": "m", "scopes": ["verify"]}
    )
    assert management.status_code == 201
    assert_private(management)

    credential = await api.client.post(
        "/v1/vault/credentials",
        json={"provider": "openai", "alias": "a", "secret": VAULT_SECRET},
    )
    assert credential.status_code == 201, credential.text
    leased = await api.client.post("/v1/vault/leases", json={"provider": "openai"})
    assert leased.status_code == 201, leased.text
    assert VAULT_SECRET in leased.text
    assert_private(leased)

    openrouter = await api.client.post("/api/v1/keys", json={"name": "c"})
    assert openrouter.status_code == 201, openrouter.text
    assert_private(openrouter)
    fastrouter = await api.client.post("/prod/createServiceKey", json={"api_key_name": "s"})
    assert fastrouter.status_code == 201, fastrouter.text
    assert_private(fastrouter)


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/healthz", None, 200),
        ("GET", "/v1/keys", None, 200),
        ("POST", "/v1/verify", {"key": "kp_live_nope"}, 200),
        ("GET", "/v1/keys/key_nothere", None, 404),
        ("POST", "/v1/keys", {"name": 5}, 422),
        ("POST", "/v1/keys", {"name": "x" * 70_000}, 413),
        ("GET", "/nowhere", None, 404),
        ("GET", "/openapi.json", None, 200),
    ],
)
async def test_every_api_answer_is_nosniff_and_no_store(
    api: Api, method: str, path: str, body: object, status: int
) -> None:
    response = await api.client.request(method, path, json=body)
    assert response.status_code == status, response.text
    assert_private(response)


async def test_unauthenticated_and_oversized_header_answers_carry_them_too(api: Api) -> None:
    response = await api.client.get("/v1/keys", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401
    assert_private(response)
    response = await api.client.get("/healthz", headers={f"x-a{i}": "1" for i in range(150)})
    assert response.status_code == 431
    assert_private(response)


async def test_the_docs_page_loads_nothing_from_another_host(api: Api) -> None:
    page = await api.client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert_private(page)
    html = page.text
    # No absolute URL anywhere (scripts, styles, icons, links): a blank page offline, and
    # third-party code next to a form where management keys are pasted.
    assert not re.search(r"(?i)(https?:)?//[a-z0-9.-]+\.[a-z]", html), html
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
    assert {a.rsplit("/", 1)[-1] for a in assets} >= {"swagger-ui-bundle.js", "swagger-ui.css"}
    for asset in assets:
        assert asset.startswith("/docs/assets/"), asset
        response = await api.client.get(asset)
        assert response.status_code == 200, asset
        assert response.headers.get("x-content-type-options") == "nosniff"
        assert "no-store" not in response.headers.get("cache-control", "")
    assert "/openapi.json" in html


async def test_redoc_is_served_from_the_package_too(api: Api) -> None:
    page = await api.client.get("/redoc")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    # No absolute URL (ReDoc's default page loads its bundle and Google Fonts from CDNs).
    assert not re.search(r"(?i)(https?:)?//[a-z0-9.-]+\.[a-z]", html), html
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
    assert "/redoc/assets/redoc.standalone.js" in assets
    for asset in assets:
        assert asset.startswith(("/redoc/assets/", "/docs/assets/")), asset
        response = await api.client.get(asset)
        assert response.status_code == 200, asset
        assert "no-store" not in response.headers.get("cache-control", "")
    assert "/openapi.json" in html
