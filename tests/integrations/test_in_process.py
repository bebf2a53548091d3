"""The FastAPI dependency and the ASGI middleware with an in-process verifier (no network)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import Depends, FastAPI
from sqlalchemy import text

from keyplane.errors import PermissionDeniedError
from keyplane.integrations import (
    AuthRequest,
    Decision,
    InProcessVerifier,
    KeyAuthMiddleware,
    KeyGuard,
    require_key,
)
from keyplane.services.runtime import Runtime
from tests.conftest import ROOT_KEY, Api
from tests.integrations import behaviour
from tests.integrations.service import dependency_service, middleware_service


def runtime_of(api: Api) -> Runtime:
    runtime: Runtime = api.app.state.runtime  # type: ignore[attr-defined]
    return runtime


def keys_of(api: Api) -> behaviour.Keys:
    async def create(**fields: object) -> tuple[str, str]:
        key, data = await api.create_key(**fields)
        return key, str(data["id"])

    async def revoke(key_id: str) -> None:
        response = await api.client.request("DELETE", f"/v1/keys/{key_id}", json={})
        assert response.status_code == 200

    return behaviour.Keys(create, revoke)


async def guard_of(api: Api) -> KeyGuard:
    verifier_key = await api.management_key("verify")
    verifier = await InProcessVerifier.authenticated(runtime_of(api), verifier_key)
    return KeyGuard(verifier, now=api.clock.now)


@pytest.fixture
async def service(api: Api) -> AsyncIterator[httpx.AsyncClient]:
    app = dependency_service(await guard_of(api))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://service.test"
    ) as client:
        yield client


async def test_dependency_in_process(api: Api, service: httpx.AsyncClient) -> None:
    await behaviour.dependency_allows_and_refuses(keys_of(api), service)


async def test_middleware_in_process(api: Api) -> None:
    app = middleware_service(await guard_of(api))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://service.test"
    ) as client:
        await behaviour.middleware_allows_and_refuses(keys_of(api), client)


async def test_a_verifier_needs_the_verify_scope(api: Api) -> None:
    reader = await api.management_key("keys:read")
    with pytest.raises(PermissionDeniedError):
        await InProcessVerifier.authenticated(runtime_of(api), reader)
    assert await InProcessVerifier.authenticated(runtime_of(api), ROOT_KEY)


async def test_the_client_address_comes_from_trusted_proxies_only(api: Api) -> None:
    verifier = await InProcessVerifier.authenticated(runtime_of(api), ROOT_KEY)
    key, _ = await api.create_key(policy={"network": {"ip_allow": ["203.0.113.0/24"]}})
    headers = {"Authorization": f"Bearer {key}", "X-Forwarded-For": "203.0.113.9"}
    for trusted, status in (((), 403), (("127.0.0.1",), 200)):
        app = dependency_service(KeyGuard(verifier, trusted_proxies=trusted))
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://service.test"
        ) as client:
            assert (await client.get("/any", headers=headers)).status_code == status


async def test_the_key_can_come_from_another_header(api: Api) -> None:
    verifier = await InProcessVerifier.authenticated(runtime_of(api), ROOT_KEY)
    key, data = await api.create_key()
    app = dependency_service(KeyGuard(verifier, key_header="X-API-Key"))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://service.test"
    ) as client:
        response = await client.get("/any", headers={"X-API-Key": key})
        assert response.json()["key_id"] == data["id"]
        bearer = await client.get("/any", headers={"Authorization": f"Bearer {key}"})
        assert bearer.status_code == 401


async def test_refusals_keep_their_status_without_install(api: Api) -> None:
    guard = await guard_of(api)
    app = FastAPI()

    # A default, not Annotated: the annotation would name a local, unresolvable later.
    @app.get("/x")
    async def route(_key: Decision = Depends(require_key(guard=guard))) -> None:  # noqa: B008
        return None

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://service.test"
    ) as client:
        response = await client.get("/x")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


class _NeverAsked:
    """A verifier that must not be consulted: a request without a key is refused before."""

    async def verify(self, key: str, request: AuthRequest) -> Decision:
        raise AssertionError("the verifier was asked about a request without a key")


async def test_a_websocket_without_a_key_is_closed_as_a_policy_violation() -> None:
    reached: list[str] = []

    async def app(scope: object, receive: object, send: object) -> None:
        reached.append("app")

    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    middleware = KeyAuthMiddleware(app, KeyGuard(_NeverAsked()))
    scope = {"type": "websocket", "path": "/ws", "headers": [], "client": ("127.0.0.1", 1)}
    await middleware(scope, receive, send)  # type: ignore[arg-type]
    assert sent == [{"type": "websocket.close", "code": 1008}]
    assert reached == []


async def test_a_database_that_cannot_answer_fails_closed(api: Api) -> None:
    guard = await guard_of(api)
    # A key no cache has seen needs the database; take the table it reads away.
    unseen, _ = await api.create_key()
    runtime = runtime_of(api)
    await runtime.directory.hashes.clear()
    async with runtime.store.engine.begin() as conn:
        await conn.execute(text("DROP TABLE api_key_secrets"))
    app = dependency_service(guard)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://service.test"
    ) as client:
        response = await client.get("/any", headers=behaviour.bearer(unseen))
    behaviour.assert_problem(response, 503, "AUTH_UNAVAILABLE")
    assert unseen not in response.text
