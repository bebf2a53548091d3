"""``APIServiceHandler`` beyond the README: settings, refusals, secrets, bulk adds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from keyplane import errors
from keyplane.compat.api_service_handler import (
    APIServiceHandler,
    EncryptionError,
    Environment,
    KeyNotFoundError,
    KeyStatus,
    MaxConcurrentExceededError,
    NoAvailableKeyError,
    Provider,
    RateLimitExceededError,
    StorageNotInitializedError,
    provider_name,
)
from keyplane.domain.clock import ManualClock
from keyplane.domain.tenancy import Principal
from keyplane.services.runtime import open_vault_service
from keyplane.services.vault import NewCredential
from tests.conftest import Database

SHARED = "a-shared-secret-for-the-tests-0001"


def _backend(database: Database) -> dict[str, str]:
    kind = "sqlite" if database.name == "sqlite" else "postgresql"
    return {"storage_backend": kind, "connection_string": database.url}


@pytest.fixture
def schema_env(database: Database, monkeypatch: pytest.MonkeyPatch) -> Database:
    for name in ("KEYPLANE_VAULT_KEY", "KEYPLANE_VAULT_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    if database.schema is not None:
        monkeypatch.setenv("KEYPLANE_DATABASE_SCHEMA", database.schema)
    return database


@pytest.fixture
async def handler(schema_env: Database, clock: ManualClock) -> AsyncIterator[APIServiceHandler]:
    async with APIServiceHandler(**_backend(schema_env), shared_secret=SHARED, clock=clock) as h:
        yield h


def _upstream(status: int, retry_after: str | None = None) -> httpx.HTTPStatusError:
    request = httpx.Request("POST", "https://api.example.test/v1/chat")
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    response = httpx.Response(status, headers=headers, request=request)
    return httpx.HTTPStatusError("upstream", request=request, response=response)


def test_unknown_providers_fall_back_to_custom_known_ones_in_any_case() -> None:
    assert provider_name("OpenAI") == "openai"
    assert provider_name("Google-Gemini") == "google_gemini"
    assert provider_name("my-internal-api") == "custom"
    assert provider_name(Environment.PRODUCTION) == "custom"  # an enum is read by value
    assert provider_name(Provider.GOOGLE_GEMINI) == "google_gemini"
    assert Provider.from_string("ANTHROPIC") is Provider.ANTHROPIC
    assert Provider.from_string("Eleven-Labs") is Provider.ELEVEN_LABS
    assert Provider.from_string("unknown_service") is Provider.CUSTOM
    with pytest.raises(errors.ValidationError):
        provider_name("x" * 101)


async def test_ash_variables_configure_a_handler_built_without_arguments(
    schema_env: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = _backend(schema_env)
    monkeypatch.setenv("ASH_STORAGE_BACKEND", backend["storage_backend"])
    monkeypatch.setenv("ASH_CONNECTION_STRING", backend["connection_string"])
    monkeypatch.setenv("ASH_SHARED_SECRET", SHARED)
    monkeypatch.setenv("ASH_ROTATION_STRATEGY", "LEAST_USED")
    monkeypatch.setenv("ASH_DEFAULT_DAILY_LIMIT", "7")
    async with APIServiceHandler() as handler:
        key = await handler.add_key(provider="openai", key_value="sk-from-env-config-0000")
        assert key.daily_limit == 7
        assert (await handler.health_check())["rotation_strategy"] == "least_used"
    # The same secret opens the same keys in another handler; another secret does not.
    async with APIServiceHandler(**backend, shared_secret=SHARED) as again:
        assert (await again.get_key(key.id)).key_value == "sk-from-env-config-0000"
    async with APIServiceHandler(**backend, shared_secret="another-secret-entirely-0000") as other:
        with pytest.raises(EncryptionError) as failed:
            await other.get_key(key.id)
        assert "sk-from" not in str(failed.value)
        with pytest.raises(EncryptionError):
            async with other.use_key(provider="openai"):
                pass


async def test_the_memory_backend_keeps_nothing_after_close(tmp_path: Path) -> None:
    handler = APIServiceHandler(storage_backend="memory")  # no secret needed: nothing persists
    await handler.initialize()
    key = await handler.add_key(provider="openai", key_value="sk-memory-only-00000")
    async with handler.use_key(provider="openai") as leased:
        assert leased.key_value == "sk-memory-only-00000"
        assert "sk-memory" not in repr(leased)
    assert (await handler.get_usage_stats(key.id)).daily_usage_count == 1
    await handler.close()
    with pytest.raises(StorageNotInitializedError):
        await handler.get_key(key.id)


def test_settings_are_checked_before_anything_opens() -> None:
    with pytest.raises(errors.ConfigurationError, match="MongoDB"):
        APIServiceHandler(storage_backend="mongodb")
    with pytest.raises(errors.ConfigurationError, match="rotation_strategy"):
        APIServiceHandler(rotation_strategy="fastest")
    with pytest.raises(errors.ConfigurationError) as short:
        APIServiceHandler(shared_secret="tiny")
    assert "tiny" not in str(short.value)


async def test_a_persistent_backend_without_a_secret_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KEYPLANE_VAULT_KEY", raising=False)
    monkeypatch.delenv("ASH_SHARED_SECRET", raising=False)
    handler = APIServiceHandler(storage_backend="sqlite", connection_string=str(tmp_path / "k.db"))
    with pytest.raises(errors.ConfigurationError, match="shared_secret"):
        await handler.initialize()


async def test_refusals_take_the_seed_s_names(
    handler: APIServiceHandler, clock: ManualClock
) -> None:
    with pytest.raises(NoAvailableKeyError):
        async with handler.use_key(provider="mistral"):
            pass
    await handler.add_key(provider="mistral", key_value="mistral-key-000000000", max_concurrent=1)
    async with handler.use_key(provider="mistral") as held:
        with pytest.raises(MaxConcurrentExceededError):
            async with handler.use_key(provider="mistral"):
                pass
    # The block's exception says how the upstream call went: a 429 cools the key down.
    with pytest.raises(httpx.HTTPStatusError):
        async with handler.use_key(provider="mistral") as held:
            raise _upstream(429, "30")
    with pytest.raises(RateLimitExceededError) as cooling:
        async with handler.use_key(provider="mistral"):
            pass
    assert cooling.value.retry_after == 30
    clock.advance(31)
    # A 401 disables it: it shows as inactive and is not handed out again.
    with pytest.raises(httpx.HTTPStatusError):
        async with handler.use_key(provider="mistral") as held:
            raise _upstream(401)
    assert (await handler.get_key(held.id, decrypt=False)).status is KeyStatus.INACTIVE
    with pytest.raises(NoAvailableKeyError):
        await handler.get_next_key(provider="mistral")
    await handler.update_key(held.id, status="active")
    picked = await handler.get_next_key(provider="mistral")
    assert picked.key_value == "mistral-key-000000000"
    assert picked.daily_usage_count == 4  # get_next_key counts: every key handed out is a use


async def test_rotation_and_filters(handler: APIServiceHandler) -> None:
    ids = [
        (
            await handler.add_key(
                provider="groq",
                key_value=f"gsk-test-{i}-0000000000",
                alias=f"g{i}",
                tags=["a"] if i else ["b"],
                environment="staging",
            )
        ).id
        for i in range(3)
    ]
    seen = []
    for _ in range(3):
        async with handler.use_key(provider="groq", environment=Environment.STAGING) as leased:
            seen.append(leased.id)
    assert sorted(seen) == sorted(ids)  # round robin: each once
    assert [k.alias for k in await handler.get_all_keys(provider="groq", tags=["b", "zzz"])] == [
        "g0"
    ]
    assert await handler.get_all_keys(provider="groq", environment="production") == []
    await handler.update_key(ids[1], daily_limit=1)
    exhausted = await handler.get_all_keys(provider="groq", has_capacity=False)
    assert [k.id for k in exhausted] == [ids[1]]
    assert [k.alias for k in await handler.get_all_keys(alias_contains="G2")] == ["g2"]
    assert len(await handler.get_all_keys(status="active")) == 3
    assert await handler.delete_key(ids[0]) is True
    assert [k.id for k in await handler.get_all_keys(status="revoked")] == [ids[0]]
    assert [s.key_id for s in await handler.get_provider_stats("groq")] == ids[1:]


async def test_bulk_add_reports_bad_items_by_index_and_keeps_the_good(
    handler: APIServiceHandler,
) -> None:
    result = await handler.bulk_add_keys(
        [
            {"provider": "openai", "key_value": "sk-bulk-one-000000000"},
            {"provider": "openai", "key_value": " padded-key-00000000 "},
            {"provider": "openai"},
            {"provider": "openai", "key_value": "sk-bulk-two-000000000", "daily_limit": 0},
        ]
    )
    assert (result.total, result.successful, result.failed) == (4, 2, 2)
    assert [e.split(":")[0] for e in sorted(result.errors)] == ["key 1", "key 2"]
    assert "padded" not in " ".join(result.errors)
    blocked = await handler.get_key(result.created_ids[1], decrypt=False)
    assert blocked.daily_limit == 0 and not blocked.has_capacity


async def test_unknown_ids_and_unsupported_fields_are_clear_errors(
    handler: APIServiceHandler,
) -> None:
    for call in (
        handler.get_key("cred_missing"),
        handler.get_usage_stats("not-even-an-id"),
        handler.update_key("cred_missing", alias="x"),
    ):
        with pytest.raises(KeyNotFoundError):
            await call
    assert await handler.delete_key("cred_missing") is False
    with pytest.raises(errors.ValidationError, match="priority"):
        await handler.add_key(provider="openai", key_value="sk-priority-00000000", priority=2)
    with pytest.raises(errors.ValidationError, match="expires_at"):
        await handler.add_key(
            provider="openai",
            key_value="sk-expiring-00000000",
            expires_at=datetime(2030, 1, 1, tzinfo=UTC),
        )
    with pytest.raises(errors.ValidationError):
        await handler.update_key("cred_missing", status="revoked")


async def test_wrong_types_are_validation_errors_not_crashes(handler: APIServiceHandler) -> None:
    key = await handler.add_key(provider="openai", key_value="sk-typed-0000000000000")
    result = await handler.bulk_add_keys(
        [
            {"provider": "openai", "key_value": "sk-ok-00000000000000"},
            {"provider": "openai", "key_value": 12345},
            {"provider": "openai", "key_value": "sk-x-00000000000000", "daily_limit": "10"},
            {"provider": "openai", "key_value": "sk-y-00000000000000", "tags": "ci"},
            {"provider": "openai", "key_value": "sk-z-00000000000000", "tags": [1]},
            {"provider": "openai", "key_value": "sk-w-00000000000000", "metadata": "team"},
            {"provider": "openai", "key_value": "sk-v-00000000000000", "weight": True},
            {"provider": "openai", "key_value": "sk-u-00000000000000", "colour": "red"},
            "not a dict",  # type: ignore[list-item]
        ]
    )
    assert (result.successful, result.failed) == (1, 8)
    assert sorted(int(e.split(":")[0].split()[1]) for e in result.errors) == list(range(1, 9))
    bad_calls = [
        handler.get_all_keys(status="bogus"),
        handler.get_all_keys(tags="premium"),  # type: ignore[arg-type]
        handler.get_all_keys(metadata_filter=["team"]),  # type: ignore[arg-type]
        handler.update_key(key.id, tags=[None]),  # type: ignore[list-item]
        handler.update_key(key.id, daily_limit=-1),
        handler.update_key(key.id, weight="heavy"),  # type: ignore[arg-type]
        handler.get_next_key(provider="openai", tags=[""]),
    ]
    for call in bad_calls:
        with pytest.raises(errors.ValidationError):
            await call
    with pytest.raises(errors.ValidationError):
        async with handler.use_key(provider="openai", hold_seconds=10**9):
            pass


async def test_revealing_a_secret_outside_a_lease_needs_its_own_scope(
    schema_env: Database, clock: ManualClock
) -> None:
    settings = schema_env.settings()
    async with open_vault_service(settings, clock) as (service, org):
        owner = Principal("k1", org.id, None, ("vault:*",), is_root=True)
        record = await service.add(
            owner, NewCredential(provider="openai", alias="a", secret="sk-reveal-000000000")
        )
        assert await service.reveal(owner, record.id) == "sk-reveal-000000000"
        operator = Principal("k2", org.id, None, ("vault:read", "vault:write", "vault:lease"))
        with pytest.raises(errors.PermissionDeniedError):
            await service.reveal(operator, record.id)
