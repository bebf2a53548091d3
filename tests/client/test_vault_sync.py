"""The SDK's vault on the blocking Client against a real ``keyplane serve`` (with a vault key),
the retry rules of leases and releases against a scripted server, and the module-level
``keyplane.vault.use_key`` in its remote mode."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import httpx
import pytest

import keyplane.vault
from keyplane.client import (
    AllAtMaxConcurrencyError,
    AllRateLimitedError,
    Client,
    ConnectionError,
    NoCredentialError,
    NotFoundError,
    ServerError,
    Unauthorized,
)
from tests.client.conftest import Reply, ScriptedServer
from tests.conftest import ROOT_KEY
from tests.e2e.conftest import Server

pytestmark = pytest.mark.e2e

LEASE_BODY = {
    "lease_id": "lease_x",
    "credential_id": "cred_x",
    "provider": "openai",
    "alias": "x",
    "secret": "sk-scripted-000000000",
    "environment": None,
    "expires_at": "2030-01-01T00:00:00Z",
}


@pytest.fixture
def client(vault_server: Server) -> Iterator[Client]:
    with Client(vault_server.base_url, ROOT_KEY, max_retries=0) as sdk:
        yield sdk


def _env() -> str:
    # The server is shared by the module: each test leases in an environment of its own.
    return f"env-{secrets.token_hex(4)}"


def _status_error(status: int, retry_after: str | None = None) -> httpx.HTTPStatusError:
    request = httpx.Request("POST", "https://api.anthropic.com/v1/messages")
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    response = httpx.Response(status, headers=headers, request=request)
    return httpx.HTTPStatusError("upstream", request=request, response=response)


def test_credentials_over_the_wire(client: Client) -> None:
    env = _env()
    created = client.vault.create("anthropic", "main", "sk-ant-sync-0000000000", environment=env)
    assert created.secret_hint == "sk-a...0000"
    assert [c.id for c in client.vault.iterate(environment=env, page_size=1)] == [created.id]
    assert client.vault.update(created.id, weight=5).weight == 5
    assert client.vault.stats(created.id).usage.total == 0
    assert client.vault.provider_stats("anthropic").credentials >= 1
    assert client.vault.delete(created.id, hard=True).id == created.id
    with pytest.raises(NotFoundError):
        client.vault.get(created.id)


def test_sync_use_key_outcomes(client: Client) -> None:
    env = _env()
    made = [
        client.vault.create(
            "anthropic", alias, f"sk-ant-{alias}-0000000000", environment=env, max_concurrent=1
        )
        for alias in ("first", "second")
    ]
    with client.vault.use_key("anthropic", environment=env) as lease:
        assert lease.secret == f"sk-ant-{lease.alias}-0000000000"
    with pytest.raises(Unauthorized), client.vault.use_key("anthropic", environment=env) as lease:
        refused = lease.credential_id
        raise Unauthorized
    assert client.vault.get(refused).status == "disabled"
    client.vault.update(refused, status="active")
    # A 429 cools one down for 600 s: every lease now goes to the other.
    cooling = client.vault.use_key("anthropic", environment=env)
    with pytest.raises(httpx.HTTPStatusError), cooling as lease:
        cooled = lease.credential_id
        raise _status_error(429, "600")
    assert client.vault.get(cooled).status == "cooling_down"
    other = next(c.id for c in made if c.id != cooled)
    with client.vault.use_key("anthropic", environment=env) as lease:
        assert lease.credential_id == other
        with pytest.raises(AllAtMaxConcurrencyError):
            client.vault.lease("anthropic", environment=env)
    client.vault.update(other, status="disabled")
    with pytest.raises(AllRateLimitedError) as refused_all:
        client.vault.lease("anthropic", environment=env)
    assert refused_all.value.retry_after is not None and 0 < refused_all.value.retry_after <= 600
    with pytest.raises(NoCredentialError):
        client.vault.lease("anthropic", environment=_env())


async def test_module_level_use_key_goes_to_the_server_when_keyplane_url_is_set(
    client: Client, vault_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _env()
    created = client.vault.create("openai", "remote", "sk-remote-0000000000", environment=env)
    monkeypatch.setenv("KEYPLANE_URL", vault_server.base_url)
    monkeypatch.setenv("KEYPLANE_MANAGEMENT_KEY", ROOT_KEY)
    try:
        async with keyplane.vault.use_key(provider="openai", environment=env) as cred:
            assert (cred.credential_id, cred.secret) == (created.id, "sk-remote-0000000000")
            assert client.vault.stats(created.id).usage.live_leases == 1
        assert client.vault.stats(created.id).usage.live_leases == 0
        with pytest.raises(Unauthorized):
            async with keyplane.vault.use_key(provider="openai", environment=env):
                raise Unauthorized
        assert client.vault.get(created.id).status == "disabled"
        with pytest.raises(keyplane.vault.NoCredentialError):
            async with keyplane.vault.use_key(provider="openai", environment=env):
                pass
    finally:
        await keyplane.vault.close()


# -- retries, against a scripted server -------------------------------------------------------


def _scripted(server: ScriptedServer, waits: list[float]) -> Client:
    return Client(server.url, "kp_mgmt_test", max_retries=3, sleep=waits.append)


def test_a_lease_is_not_retried_once_sent(scripted: ScriptedServer) -> None:
    # A retry after a 503 or a dropped answer could take a second lease nobody releases.
    scripted.script(Reply(503, {"code": "UNAVAILABLE", "detail": "busy"}), Reply(201, LEASE_BODY))
    waits: list[float] = []
    with _scripted(scripted, waits) as client, pytest.raises(ServerError):
        client.vault.lease("openai")
    assert len(scripted.received) == 1
    scripted.replies.clear()
    scripted.script(Reply(0, hang_up=True), Reply(201, LEASE_BODY))
    with _scripted(scripted, waits) as client, pytest.raises(ConnectionError):
        client.vault.lease("openai")
    assert len(scripted.received) == 2 and waits == []
    # Other POSTs still retry (the server deduplicates them by Idempotency-Key).
    assert scripted.received[0].headers.get("idempotency-key")


def test_a_lease_is_retried_when_no_connection_could_be_made() -> None:
    attempts: list[httpx.Request] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        attempts.append(request)
        if len(attempts) < 3:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(201, json=LEASE_BODY)

    waits: list[float] = []
    with Client(
        "http://keyplane.test",
        max_retries=3,
        transport=httpx.MockTransport(refuse),
        sleep=waits.append,
    ) as client:
        assert client.vault.lease("openai").lease_id == "lease_x"
    assert len(attempts) == 3 and len(waits) == 2


def test_a_retried_release_that_finds_the_lease_gone_is_done(scripted: ScriptedServer) -> None:
    scripted.script(
        Reply(503, {"code": "UNAVAILABLE", "detail": "busy"}),
        Reply(404, {"code": "LEASE_NOT_FOUND", "detail": "no such lease"}),
    )
    waits: list[float] = []
    with _scripted(scripted, waits) as client:
        released = client.vault.release("lease_x", "rate_limited", 30)
    assert released.already_released and released.outcome == "rate_limited"
    assert [r.method for r in scripted.received] == ["DELETE", "DELETE"]
    assert scripted.received[0].body == b'{"outcome":"rate_limited","retry_after":30}'
    # A first attempt's 404 is an answer, not a lost one.
    scripted.script(Reply(404, {"code": "LEASE_NOT_FOUND", "detail": "no such lease"}))
    with _scripted(scripted, waits) as client, pytest.raises(NotFoundError):
        client.vault.release("lease_x")
