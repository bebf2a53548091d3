"""``keyplane.vault``: ``use_key`` in-process and against a server, outcomes from exceptions."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import httpx
import pytest

import keyplane.vault
from keyplane import client as sdk
from keyplane.domain.clock import ManualClock
from keyplane.domain.vault import Outcome, Strategy
from keyplane.services.vault import configured_strategy
from keyplane.vault import (
    AllAtMaxConcurrencyError,
    AllRateLimitedError,
    NoCredentialError,
    RateLimited,
    RemoteVault,
    Unauthorized,
    Vault,
    open_vault,
    outcome_of,
)
from tests.api.test_vault import add
from tests.conftest import VAULT_KEY, Api, Database


def _status_error(status: int, retry_after: str | None = None) -> httpx.HTTPStatusError:
    request = httpx.Request("POST", "https://api.openai.com/v1/chat/completions")
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    response = httpx.Response(status, headers=headers, request=request)
    return httpx.HTTPStatusError("upstream", request=request, response=response)


def test_outcomes_are_read_from_the_exception() -> None:
    assert outcome_of(None) == (Outcome.OK, None)
    assert outcome_of(Unauthorized()) == (Outcome.UNAUTHORIZED, None)
    assert outcome_of(RateLimited(retry_after=12)) == (Outcome.RATE_LIMITED, 12)
    assert outcome_of(_status_error(401)) == (Outcome.UNAUTHORIZED, None)
    assert outcome_of(_status_error(429, "7")) == (Outcome.RATE_LIMITED, 7)
    assert outcome_of(_status_error(429, "Wed, 21 Oct 2015 07:28:00 GMT")) == (
        Outcome.RATE_LIMITED,
        None,
    )
    assert outcome_of(_status_error(500)) == (Outcome.OK, None)
    assert outcome_of(ValueError("a bug of the caller")) == (Outcome.OK, None)


async def _exercise(vault: Vault | RemoteVault, clock: ManualClock) -> None:
    async with vault.use_key(provider="openai", environment="production") as cred:
        assert cred.secret == "sk-first-0000000000"
        assert "sk-first" not in repr(cred)
    # The block raised Unauthorized: the first is disabled, the next lease gets the second.
    with pytest.raises(Unauthorized):
        async with vault.use_key(provider="openai", environment="production") as cred:
            assert cred.alias == "second"
            raise Unauthorized
    with pytest.raises(httpx.HTTPStatusError):
        async with vault.use_key(provider="openai", environment="production") as cred:
            assert cred.alias == "first"
            raise _status_error(429, "30")
    with pytest.raises(AllRateLimitedError) as refused:
        async with vault.use_key(provider="openai", environment="production"):
            pass
    assert refused.value.retry_after == 30
    clock.advance(31)
    async with vault.use_key(provider="openai", environment="production") as cred:
        assert cred.alias == "first"
        with pytest.raises(AllAtMaxConcurrencyError):
            async with vault.use_key(provider="openai", environment="production"):
                pass
    with pytest.raises(NoCredentialError):
        async with vault.use_key(provider="anthropic"):
            pass


async def _seed(api: Api) -> None:
    await add(
        api,
        alias="first",
        secret="sk-first-0000000000",
        environment="production",
        max_concurrent=1,
    )
    await add(api, alias="second", secret="sk-second-000000000", environment="production")


async def test_remote_use_key_releases_and_reports(api: Api) -> None:
    await _seed(api)
    # The first lease goes to "first" (round robin: never used, oldest); release it so the
    # next two go to "second" then "first" again.
    leaser = await api.management_key("vault:lease")
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=api.app),  # type: ignore[arg-type]
        base_url="http://keyplane.test",
        headers={"Authorization": f"Bearer {leaser}"},
    )
    async with client, RemoteVault(client=client) as vault:
        await _exercise(vault, api.clock)
    stats = (await api.client.get("/v1/vault/stats?provider=openai")).json()
    assert stats["live_leases"] == 0
    statuses = {item["alias"]: item["status"] for item in stats["items"]}
    assert statuses == {"first": "active", "second": "disabled"}


async def test_in_process_use_key_on_the_same_database(api: Api, database: Database) -> None:
    await _seed(api)
    async with open_vault(database.settings(), clock=api.clock) as vault:
        await _exercise(vault, api.clock)
        listed = await vault.list()
        assert {item.record.alias: item.status.value for item in listed} == {
            "first": "active",
            "second": "disabled",
        }


async def test_in_process_holders_share_max_concurrency(database: Database) -> None:
    async with open_vault(database.settings()) as vault:
        await vault.add("openai", "only", "sk-only-00000000000", max_concurrent=2)
        holding = most = 0
        full = asyncio.Event()  # set once two hold a lease together

        async def hold() -> None:
            nonlocal holding, most
            while True:
                try:
                    async with vault.use_key(provider="openai"):
                        holding += 1
                        most = max(most, holding)
                        if holding == 2:
                            full.set()
                        # Until a second holder got in, however slow the machine: a fixed
                        # hold time assumed one would.
                        await asyncio.wait_for(full.wait(), timeout=30)  # bounds a hang
                        await asyncio.sleep(0.01)
                        holding -= 1
                    return
                except AllAtMaxConcurrencyError:
                    await asyncio.sleep(0.01)

        await asyncio.gather(*(hold() for _ in range(10)))
        assert most == 2, most


def test_the_default_strategy_comes_from_the_settings_when_they_have_one() -> None:
    assert configured_strategy(SimpleNamespace()) is Strategy.ROUND_ROBIN
    assert configured_strategy(SimpleNamespace(vault_strategy="least_used")) is (
        Strategy.LEAST_USED
    )


async def test_a_lease_without_a_strategy_uses_the_vault_default(database: Database) -> None:
    async with open_vault(database.settings()) as vault:
        vault.service.default_strategy = Strategy.LEAST_USED
        await vault.add("openai", "old", "sk-old-000000000000")
        for _ in range(3):
            async with vault.use_key(provider="openai", strategy="round_robin"):
                pass
        await vault.add("openai", "new", "sk-new-000000000000")
        for _ in range(3):
            async with vault.use_key(provider="openai") as cred:
                assert cred.alias == "new"


async def test_module_level_use_key_runs_in_process_without_keyplane_url(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = database.settings()
    monkeypatch.delenv("KEYPLANE_URL", raising=False)
    monkeypatch.setenv("KEYPLANE_DATABASE_URL", database.url)
    if database.schema is not None:
        monkeypatch.setenv("KEYPLANE_DATABASE_SCHEMA", database.schema)
    monkeypatch.setenv("KEYPLANE_VAULT_KEY", VAULT_KEY)
    async with open_vault(settings) as vault:
        await vault.add("openai", "lib", "sk-lib-000000000000", environment="production")
    try:
        async with keyplane.vault.use_key(provider="openai", environment="production") as cred:
            assert cred.secret == "sk-lib-000000000000"
        with pytest.raises(RateLimited):
            async with keyplane.vault.use_key(provider="openai", environment="production"):
                raise RateLimited(retry_after=300)
        # The same SDK exception as the remote mode raises.
        with pytest.raises(AllRateLimitedError) as refused:
            async with keyplane.vault.use_key(provider="openai", environment="production"):
                pass
        assert isinstance(refused.value, sdk.RateLimitedError)
        assert refused.value.retry_after is not None and refused.value.retry_after > 200
    finally:
        await keyplane.vault.close()


async def test_configure_sets_the_vault_module_level_use_key_uses(database: Database) -> None:
    async with open_vault(database.settings()) as vault:
        await vault.add("anthropic", "configured", "sk-ant-conf-000000000")
        keyplane.vault.configure(vault)
        try:
            async with keyplane.vault.use_key(provider="anthropic") as cred:
                assert cred.alias == "configured"
        finally:
            await keyplane.vault.close()  # forgets it; the caller still owns it
        assert (await vault.list())[0].live_leases == 0


async def test_remote_vault_uses_a_given_sdk_client_and_leaves_it_open(api: Api) -> None:
    await add(api, alias="shared", secret="sk-shared-000000000")
    leaser = await api.management_key("vault:lease")
    transport = httpx.ASGITransport(app=api.app)  # type: ignore[arg-type]
    async with sdk.AsyncClient("http://keyplane.test", leaser, transport=transport) as client:
        async with RemoteVault(client=client) as vault, vault.use_key("openai") as cred:
            assert cred.alias == "shared"
        # Still usable: the vault did not close a client it was given.
        assert (await client.health()).status == "ok"
