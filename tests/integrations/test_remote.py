"""The FastAPI dependency and the middleware against a real Keyplane server, over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from keyplane.client import AsyncClient
from keyplane.integrations import KeyGuard
from keyplane.integrations.remote import RemoteVerifier
from tests.conftest import ROOT_KEY, free_port
from tests.e2e.conftest import BACKENDS, Server, ServerFactory, make_backend
from tests.integrations import behaviour
from tests.integrations.service import dependency_service, middleware_service


@pytest.fixture(scope="module", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp(f"remote-{request.param}")
    with make_backend(request.param, workdir) as db:
        factory = ServerFactory(workdir)
        try:
            yield factory(db.env)
        finally:
            factory.stop_all()


@pytest.fixture
async def admin(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with server.async_client() as client:
        yield client


def keys_on(admin: httpx.AsyncClient) -> behaviour.Keys:
    async def create(**fields: object) -> tuple[str, str]:
        response = await admin.post("/v1/keys", json={"name": "remote", **fields})
        assert response.status_code == 201, response.text
        return response.json()["key"], response.json()["data"]["id"]

    async def revoke(key_id: str) -> None:
        response = await admin.request("DELETE", f"/v1/keys/{key_id}", json={})
        assert response.status_code == 200, response.text

    return behaviour.Keys(create, revoke)


@pytest.fixture
async def guard(server: Server, admin: httpx.AsyncClient) -> AsyncIterator[KeyGuard]:
    created = await admin.post("/v1/management-keys", json={"name": "svc", "scopes": ["verify"]})
    assert created.status_code == 201, created.text
    async with AsyncClient(server.base_url, created.json()["key"], max_retries=0) as client:
        yield KeyGuard(RemoteVerifier(client))


def service_client(app: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
        base_url="http://service.test",
    )


async def test_dependency_against_a_remote_keyplane(
    admin: httpx.AsyncClient, guard: KeyGuard
) -> None:
    async with service_client(dependency_service(guard)) as service:
        await behaviour.dependency_allows_and_refuses(keys_on(admin), service)


async def test_middleware_against_a_remote_keyplane(
    admin: httpx.AsyncClient, guard: KeyGuard
) -> None:
    async with service_client(middleware_service(guard)) as service:
        await behaviour.middleware_allows_and_refuses(keys_on(admin), service)


async def test_an_unreachable_keyplane_fails_closed(admin: httpx.AsyncClient) -> None:
    key, _ = await keys_on(admin).create()
    nowhere = f"http://127.0.0.1:{free_port()}"
    async with AsyncClient(nowhere, ROOT_KEY, max_retries=0, timeout=2) as client:
        app = dependency_service(KeyGuard(RemoteVerifier(client)))
        async with service_client(app) as service:
            response = await service.get("/any", headers=behaviour.bearer(key))
    behaviour.assert_problem(response, 503, "AUTH_UNAVAILABLE")
    assert key not in response.text


async def test_a_rejected_management_key_fails_closed(
    server: Server, admin: httpx.AsyncClient
) -> None:
    key, _ = await keys_on(admin).create()
    async with AsyncClient(server.base_url, "kp_mgmt_wrong", max_retries=0) as client:
        app = dependency_service(KeyGuard(RemoteVerifier(client)))
        async with service_client(app) as service:
            response = await service.get("/any", headers=behaviour.bearer(key))
    behaviour.assert_problem(response, 503, "AUTH_UNAVAILABLE")
