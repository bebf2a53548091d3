"""The vault and its master key through the API: not configured, wrong key, moved ciphertext."""

from __future__ import annotations

import base64
import contextlib
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import select, update

from keyplane.api.app import create_app
from keyplane.domain.clock import ManualClock
from keyplane.store.tables import vault_credentials
from tests.api.test_vault import add, lease
from tests.conftest import ROOT_KEY, VAULT_KEY, Api, Database

OTHER_KEY = base64.b64encode(bytes(range(100, 132))).decode("ascii")


@contextlib.asynccontextmanager
async def server(
    database: Database, clock: ManualClock, **settings: object
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


async def test_without_a_master_key_the_vault_says_so_and_the_rest_works(
    database: Database, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with server(database, clock, vault_key=None) as client:
        body = {"provider": "openai", "alias": "a", "secret": "sk-0123456789abcdef"}
        refused = await client.post("/v1/vault/credentials", json=body)
        assert refused.status_code == 503
        assert refused.json()["code"] == "VAULT_NOT_CONFIGURED"
        assert "KEYPLANE_VAULT_KEY" in refused.json()["detail"]
        leased = await client.post("/v1/vault/leases", json={"provider": "openai"})
        assert (leased.status_code, leased.json()["code"]) == (503, "VAULT_NOT_CONFIGURED")
        assert (await client.post("/v1/keys", json={"name": "still fine"})).status_code == 201
    # An expected state: one warning at startup, no error (nor traceback) per request.
    warnings = [r for r in caplog.records if "VAULT_NOT_CONFIGURED" in r.getMessage()]
    assert [r.levelno for r in warnings] == [logging.WARNING]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def test_a_wrong_master_key_is_a_clear_error_that_costs_no_use(
    database: Database, clock: ManualClock
) -> None:
    async with server(database, clock) as client:
        body = {"provider": "openai", "alias": "a", "secret": "sk-0123456789abcdef"}
        created = (await client.post("/v1/vault/credentials", json=body)).json()["data"]
    async with server(database, clock, vault_key=OTHER_KEY) as client:
        refused = await client.post("/v1/vault/leases", json={"provider": "openai"})
        assert refused.status_code == 503, refused.text
        assert refused.json()["code"] == "VAULT_KEY_MISSING"
        assert created["master_key_id"] in refused.json()["detail"]
        assert "sk-0123" not in refused.text
        stats = (await client.get(f"/v1/vault/credentials/{created['id']}/stats")).json()
        assert (stats["usage"]["daily_used"], stats["usage"]["live_leases"]) == (0, 0)
    # During a rotation window the old key opens what it sealed.
    async with server(
        database, clock, vault_key=OTHER_KEY, vault_previous_keys=VAULT_KEY
    ) as client:
        taken = await client.post("/v1/vault/leases", json={"provider": "openai"})
        assert taken.json()["secret"] == "sk-0123456789abcdef"


async def test_a_ciphertext_moved_to_another_row_does_not_open(api: Api) -> None:
    first = await add(api, alias="first", secret="sk-first-0123456789")
    second = await add(api, alias="second", secret="sk-second-012345678")
    runtime = api.app.state.runtime  # type: ignore[attr-defined]
    # The runtime's own write unit: its background writers (the audit log's) take turns with
    # this one. A bare transaction that reads and then writes failed with "database is
    # locked" when one of them committed in between.
    async with runtime.store.unit.write() as conn:
        token = (
            await conn.execute(
                select(vault_credentials.c.sealed_secret).where(
                    vault_credentials.c.id == first["id"]
                )
            )
        ).scalar_one()
        assert "sk-first" not in token
        await conn.execute(
            update(vault_credentials)
            .where(vault_credentials.c.id == second["id"])
            .values(sealed_secret=token)
        )
    # Round robin: "first" is leased and released, then "second" is tried with first's token.
    taken = (await lease(api)).json()
    assert taken["secret"] == "sk-first-0123456789"
    await api.client.delete(f"/v1/vault/leases/{taken['lease_id']}")
    moved = await lease(api)
    assert moved.status_code == 500
    assert moved.json()["code"] == "VAULT_INTEGRITY"
    assert "sk-first" not in moved.text
