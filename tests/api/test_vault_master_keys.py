"""The vault API under master key changes: a wrong or missing key, a rotation window with two
keys, and a tampered row all give a clear problem, never ciphertext, garbage or a secret."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
from sqlalchemy import select, update

from keyplane.api.app import create_app
from keyplane.domain.clock import ManualClock
from keyplane.domain.envelope import MasterKey
from keyplane.settings import to_async_url
from keyplane.store.tables import vault_credentials
from keyplane.store.unit import create_engine
from tests.conftest import ROOT_KEY, VAULT_KEY, Database

OLD = MasterKey.from_base64(VAULT_KEY)
NEW = MasterKey(b"N" * 32)
SECRET = "sk-proj-master-keys-0123456789abcdefghij"


@contextlib.asynccontextmanager
async def _client(
    database: Database, clock: ManualClock, **settings: Any
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(database.settings(**settings), clock=clock)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://keyplane.test",
            headers={"Authorization": f"Bearer {ROOT_KEY}"},
        ) as client,
    ):
        yield client


async def _add(client: httpx.AsyncClient, provider: str, secret: str = SECRET) -> dict[str, Any]:
    response = await client.post(
        "/v1/vault/credentials", json={"provider": provider, "alias": provider, "secret": secret}
    )
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def _no_secret(response: httpx.Response, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in response.text
    assert "kpv1." not in response.text


async def test_a_server_without_the_sealing_key_refuses_clearly(
    database: Database, clock: ManualClock
) -> None:
    async with _client(database, clock) as client:
        added = await _add(client, "openai")
        assert added["master_key_id"] == OLD.key_id

    async with _client(database, clock, vault_key=NEW.to_base64()) as client:
        response = await client.post("/v1/vault/leases", json={"provider": "openai"})
        assert response.status_code == 503, response.text
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["code"] == "VAULT_KEY_MISSING"
        assert f"sealed with master key {OLD.key_id}, which is not configured" in problem["detail"]
        _no_secret(response, SECRET, OLD.to_base64(), NEW.to_base64())
        # Nothing was taken: the credential still has its whole allowance and no live lease.
        shown = (await client.get(f"/v1/vault/credentials/{added['id']}")).json()["data"]
        assert (shown["usage"]["total"], shown["usage"]["live_leases"]) == (0, 0)


async def test_during_a_rotation_window_both_keys_open_and_new_secrets_use_the_new_one(
    database: Database, clock: ManualClock
) -> None:
    async with _client(database, clock) as client:
        old_one = await _add(client, "openai")

    window = {"vault_key": NEW.to_base64(), "vault_previous_keys": OLD.to_base64()}
    async with _client(database, clock, **window) as client:
        new_one = await _add(client, "anthropic", SECRET + "-new")
        assert new_one["master_key_id"] == NEW.key_id
        for provider, secret in (("openai", SECRET), ("anthropic", SECRET + "-new")):
            leased = await client.post("/v1/vault/leases", json={"provider": provider})
            assert leased.status_code == 201, leased.text
            assert leased.json()["secret"] == secret
            released = await client.delete(f"/v1/vault/leases/{leased.json()['lease_id']}")
            assert released.status_code == 200, released.text
        # Setting a secret again seals it with the current key.
        patched = await client.patch(
            f"/v1/vault/credentials/{old_one['id']}", json={"secret": SECRET + "-renewed"}
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["data"]["master_key_id"] == NEW.key_id
        _no_secret(patched, SECRET + "-renewed")


async def test_a_tampered_or_moved_secret_is_refused_not_served(
    database: Database, clock: ManualClock
) -> None:
    async with _client(database, clock) as client:
        victim = await _add(client, "openai", SECRET)
        premium = await _add(client, "anthropic", SECRET + "-premium")

    # Someone with write access to the database copies the premium token into their row.
    engine = create_engine(to_async_url(database.url), database.schema)
    try:
        async with engine.begin() as conn:
            token = (
                await conn.execute(
                    select(vault_credentials.c.sealed_secret).where(
                        vault_credentials.c.id == premium["id"]
                    )
                )
            ).scalar_one()
            await conn.execute(
                update(vault_credentials)
                .where(vault_credentials.c.id == victim["id"])
                .values(sealed_secret=token)
            )
    finally:
        await engine.dispose()

    async with _client(database, clock) as client:
        response = await client.post("/v1/vault/leases", json={"provider": "openai"})
        assert response.status_code == 500, response.text
        assert response.json()["code"] == "VAULT_INTEGRITY"
        _no_secret(response, SECRET, SECRET + "-premium")
        # The genuine row still serves.
        fine = await client.post("/v1/vault/leases", json={"provider": "anthropic"})
        assert fine.status_code == 201 and fine.json()["secret"] == SECRET + "-premium"
