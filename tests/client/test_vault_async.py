"""The SDK's vault on AsyncClient against the real app (in-process ASGI), on each backend."""

from __future__ import annotations

import httpx
import pytest

from keyplane.client import (
    AllAtMaxConcurrencyError,
    AllRateLimitedError,
    AsyncClient,
    Credential,
    LeaseRefusedError,
    NoCredentialError,
    NotFoundError,
    RateLimited,
    RateLimitedError,
    Unauthorized,
    ValidationError,
)
from tests.conftest import Api

SECRET_A = "sk-first-0000000000aaaa"
SECRET_B = "sk-second-000000000bbbb"


def _status_error(status: int, retry_after: str | None = None) -> httpx.HTTPStatusError:
    request = httpx.Request("POST", "https://api.openai.com/v1/chat/completions")
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    response = httpx.Response(status, headers=headers, request=request)
    return httpx.HTTPStatusError("upstream", request=request, response=response)


async def _two(sdk: AsyncClient) -> tuple[Credential, Credential]:
    first = await sdk.vault.create(
        "OpenAI", "first", SECRET_A, environment="production", max_concurrent=1
    )
    second = await sdk.vault.create("openai", "second", SECRET_B, environment="production")
    return first, second


async def test_credential_lifecycle(sdk: AsyncClient) -> None:
    created = await sdk.vault.create(
        "openai",
        "prod-1",
        SECRET_A,
        environment="production",
        tags=["premium"],
        metadata={"billing": {"tier": "enterprise"}},
        daily_limit=100,
    )
    assert (created.provider, created.alias, created.daily_limit) == ("openai", "prod-1", 100)
    assert created.secret_hint == "sk-f...aaaa" and SECRET_A not in created.model_dump_json()
    many = await sdk.vault.create_many(
        [
            {"provider": "anthropic", "alias": f"a-{n}", "secret": f"sk-ant-{n:016d}"}
            for n in range(3)
        ]
    )
    assert [c.alias for c in many] == ["a-0", "a-1", "a-2"]

    assert (await sdk.vault.get(created.id)).id == created.id
    found = await sdk.vault.list(
        provider="openai", tags=["premium"], metadata={"billing.tier": "enterprise"}
    )
    assert [c.id for c in found.data] == [created.id]
    assert (await sdk.vault.list(provider="openai", has_capacity=False)).data == []
    page = await sdk.vault.list(provider="anthropic", limit=2)
    assert page.has_more and len(page.data) == 2
    # One page at a time, each credential once (ids created in one tick have no set order).
    aliases = [c.alias async for c in sdk.vault.iterate(provider="anthropic", page_size=1)]
    assert sorted(aliases) == ["a-0", "a-1", "a-2"]

    updated = await sdk.vault.update(created.id, alias="renamed", daily_limit=None)
    assert (updated.alias, updated.daily_limit) == ("renamed", None)
    disabled = await sdk.vault.update(created.id, status="disabled")
    assert disabled.status == "disabled"

    stats = await sdk.vault.stats(created.id)
    assert (stats.id, stats.usage.daily_used) == (created.id, 0)
    totals = await sdk.vault.provider_stats("anthropic")
    assert (totals.credentials, totals.daily_remaining) == (3, None)

    revoked = await sdk.vault.delete(created.id)
    assert revoked.status == "revoked"
    erased = await sdk.vault.delete(many[0].id, hard=True)
    assert erased.id == many[0].id
    with pytest.raises(NotFoundError):
        await sdk.vault.get(many[0].id)


async def test_use_key_reports_what_the_block_raised(sdk: AsyncClient, api: Api) -> None:
    first, second = await _two(sdk)
    async with sdk.vault.use_key("openai", environment="production") as lease:
        assert (lease.alias, lease.secret) == ("first", SECRET_A)
        assert SECRET_A not in repr(lease)
    assert (await sdk.vault.stats(first.id)).usage.live_leases == 0  # released

    # Unauthorized disables the credential; the exception goes on.
    with pytest.raises(Unauthorized):
        async with sdk.vault.use_key("openai", environment="production") as lease:
            assert lease.alias == "second"
            raise Unauthorized
    assert (await sdk.vault.get(second.id)).status == "disabled"

    # A 429 from the provider cools "first" down for its Retry-After.
    with pytest.raises(httpx.HTTPStatusError):
        async with sdk.vault.use_key("openai", environment="production") as lease:
            assert lease.alias == "first"
            raise _status_error(429, "30")
    assert (await sdk.vault.get(first.id)).status == "cooling_down"
    with pytest.raises(AllRateLimitedError) as refused:
        await sdk.vault.lease("openai", environment="production")
    assert refused.value.retry_after == 30
    assert isinstance(refused.value, RateLimitedError | LeaseRefusedError)

    api.clock.advance(31)
    async with sdk.vault.use_key("openai", environment="production") as lease:
        assert lease.alias == "first"
        with pytest.raises(AllAtMaxConcurrencyError) as busy:
            async with sdk.vault.use_key("openai", environment="production"):
                pass
        assert busy.value.code == "ALL_AT_MAX_CONCURRENCY"
    with pytest.raises(NoCredentialError) as none:
        await sdk.vault.lease("anthropic")
    assert isinstance(none.value, NotFoundError)


async def test_rate_limited_exception_cools_down_and_the_next_lease_picks_another(
    sdk: AsyncClient,
) -> None:
    first, second = await _two(sdk)
    with pytest.raises(RateLimited):
        async with sdk.vault.use_key("openai") as lease:
            cooled = lease.credential_id
            raise RateLimited(retry_after=120)
    other = second.id if cooled == first.id else first.id
    assert (await sdk.vault.get(cooled)).status == "cooling_down"
    for _ in range(3):
        async with sdk.vault.use_key("openai") as lease:
            assert lease.credential_id == other


async def test_releasing_twice_and_bad_input(sdk: AsyncClient) -> None:
    await _two(sdk)
    lease = await sdk.vault.lease("openai", ttl_seconds=5, strategy="least_used")
    released = await sdk.vault.release(lease.lease_id, "ok")
    assert (released.credential_id, released.already_released) == (lease.credential_id, False)
    # Not a retry: the caller asked twice, and hears that the lease is gone.
    with pytest.raises(NotFoundError):
        await sdk.vault.release(lease.lease_id)
    with pytest.raises(ValidationError):
        await sdk.vault.lease("openai", ttl_seconds=0)
    with pytest.raises(ValidationError):
        await sdk.vault.create("no-such-provider", "x", SECRET_A)
    with pytest.raises(ValidationError):
        await sdk.vault.create_many([])
    with pytest.raises(NotFoundError):
        await sdk.vault.get("../../v1/keys")
