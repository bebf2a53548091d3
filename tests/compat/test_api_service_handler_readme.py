# ruff: noqa: E501  (the README's code blocks are kept exactly as written, long lines too)
"""Seed 002's README examples, run as written with only the import changed.

Each snippet below is the README's code block verbatim except ``api_service_handler`` ->
``keyplane.compat.api_service_handler``. On PostgreSQL the two lines naming the SQLite
backend are swapped for a PostgreSQL URL (what a PostgreSQL user of the seed writes); the
test's schema comes from ``KEYPLANE_DATABASE_SCHEMA``. Setup keys are added beside the
README's own so that each example has something to find, and the printed lines are checked.
"""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from keyplane.compat.api_service_handler import APIServiceHandler, KeyNotFoundError
from keyplane.domain.clock import ManualClock
from tests.conftest import Database

CONFIGURE = """
import asyncio
from keyplane.compat.api_service_handler.client import APIServiceHandler

async def main():
    handler = APIServiceHandler(
        storage_backend="sqlite",                   # memory, sqlite, mongodb, postgresql
        connection_string="sqlite:///api_keys.db",  # Path or URI to database
        encrypt_keys=True,                          # Strongly recommended
        shared_secret="your-super-secret-32-byte-key-here!!!", # Used for AES-GCM
        rotation_strategy="round_robin",            # round_robin, least_used, random, weighted
        auto_reset_counters=True,                   # Auto-refresh quotas on day/month rollover
        soft_delete=True                            # Keep deleted keys as "revoked" for auditing
    )
    
    # ⚠️ You MUST initialize the handler to establish db connections
    await handler.initialize()
    
    print("🚀 API Service Handler is ready!")
    
    # Safely close connections before your app shuts down
    await handler.close()
"""

ADD_KEY = """
from keyplane.compat.api_service_handler.models import Environment

key = await handler.add_key(
    provider="openai",               # Supported provider enum string
    key_value="sk-proj-1234567890",  # The raw API key
    alias="prod-gpt4-key",           # Friendly name
    daily_limit=1000,                # Max 1000 uses per day
    monthly_limit=25000,             # Max 25000 uses per month
    max_concurrent=5,                # Max 5 active parallel requests
    environment=Environment.PRODUCTION,
    tags=["premium", "gpt-4"],
    metadata={"billing_account": "acct_123"},
    weight=10                        # Useful if using "weighted" rotation
)
"""

GET_ONE = """
# Get a specific key (Decrypted)
key = await handler.get_key(key_id="uuid-string", decrypt=True)
"""

FILTER = """
# Complex Filtering
filtered_keys = await handler.get_all_keys(
    provider="google_gemini",
    tags=["premium"],
    environment="production",
    has_capacity=True # ✨ Magic! Only returns keys that haven't hit rate limits
)
"""

METADATA = """
# Returns only keys assigned to the engineering team
engineering_keys = await handler.get_all_keys(
    metadata_filter={"team": "engineering"}
)

# Nested JSON matching using dot-notation!
enterprise_keys = await handler.get_all_keys(
    metadata_filter={"billing.tier": "enterprise"}
)

# You can even route requests strictly based on metadata!
async with handler.use_key(provider="openai", metadata_filter={"project_id": "proj-789"}) as p_key:
    pass
"""

USE_KEY = """
from keyplane.compat.api_service_handler.exceptions import RateLimitExceededError, NoAvailableKeyError, MaxConcurrentExceededError

async def generate_text(prompt: str):
    try:
        # Request a key for Anthropic that is designated for production
        async with handler.use_key(provider="anthropic", environment="production") as api_key:
            
            # The key is automatically decrypted and ready to use
            raw_key = api_key.key_value
            print(f"Executing request with {api_key.alias}")
            
            # response = await my_llm_client.chat(api_key=raw_key, messages=prompt)
            
    except NoAvailableKeyError:
        print("❌ No active Anthropic keys found!")
    except RateLimitExceededError as e:
        print(f"🛑 All keys are rate limited! {e}")
    except MaxConcurrentExceededError as e:
        print(f"⚠️ Too many parallel requests active right now! {e}")
"""

STATS = """
# Get usage for a specific key
stats = await handler.get_usage_stats(key.id)
print(f"Daily remaining: {stats.daily_remaining}")

# Get aggregated usage across all keys for a provider
provider_stats = await handler.get_provider_stats("openai")
for stat in provider_stats:
    print(f"{stat.alias}: {stat.daily_usage_count} uses today")
"""

BULK_ZERO = """
await handler.bulk_add_keys([{"provider": "openai", "key_value": "sk-...", "daily_limit": 0}])
"""


def _for_backend(code: str, database: Database) -> str:
    if database.name == "sqlite":
        return code
    swapped = code.replace('storage_backend="sqlite", ', 'storage_backend="postgresql",')
    swapped = swapped.replace('"sqlite:///api_keys.db",', f'"{database.url}",')
    assert swapped != code
    return swapped


async def _run(code: str, namespace: dict[str, Any]) -> None:
    """Run a snippet as the body of an async function; its names stay in ``namespace``."""
    body = textwrap.indent(code, "    ")
    exec(  # noqa: S102 - the README's own code, the point of this test
        f"async def __snippet__():\n{body}\n    globals().update(locals())\n", namespace
    )
    await namespace["__snippet__"]()


@pytest.fixture
def at_backend(database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Database:
    monkeypatch.chdir(tmp_path)  # the README's sqlite:///api_keys.db lands here
    for name in ("KEYPLANE_VAULT_KEY", "KEYPLANE_VAULT_KEY_FILE", "KEYPLANE_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    if database.schema is not None:
        monkeypatch.setenv("KEYPLANE_DATABASE_SCHEMA", database.schema)
    return database


async def test_the_readme_examples_run_as_written(
    at_backend: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    namespace: dict[str, Any] = {}
    await _run(_for_backend(CONFIGURE, at_backend), namespace)
    await namespace["main"]()
    assert "API Service Handler is ready!" in capsys.readouterr().out
    if at_backend.name == "sqlite":
        assert Path("api_keys.db").exists()

    # The same configuration, kept open for the other examples, on a clock of the test's.
    clock = ManualClock(datetime(2026, 3, 10, 12, tzinfo=UTC))
    backend = (
        {"storage_backend": "sqlite", "connection_string": "sqlite:///api_keys.db"}
        if at_backend.name == "sqlite"
        else {"storage_backend": "postgresql", "connection_string": at_backend.url}
    )
    handler = APIServiceHandler(
        **backend,
        encrypt_keys=True,
        shared_secret="your-super-secret-32-byte-key-here!!!",
        rotation_strategy="round_robin",
        auto_reset_counters=True,
        soft_delete=True,
        clock=clock,
    )
    await handler.initialize()
    namespace = {"handler": handler}
    try:
        await _run(ADD_KEY, namespace)
        key = namespace["key"]
        assert (key.provider, key.alias, key.environment) == (
            "openai",
            "prod-gpt4-key",
            "production",
        )
        assert key.key_value != "sk-proj-1234567890"  # masked unless asked for
        assert (await handler.get_key(key.id, decrypt=True)).key_value == "sk-proj-1234567890"

        with pytest.raises(KeyNotFoundError):  # the README's placeholder id, as the seed does
            await _run(GET_ONE, namespace)
        gemini = await handler.add_key(
            provider="Google-Gemini", key_value="AIza-test-000000000000", tags=["premium"]
        )
        await handler.add_key(provider="google_gemini", key_value="AIza-test-1111111111111")
        await _run(FILTER, namespace)
        assert [k.id for k in namespace["filtered_keys"]] == [gemini.id]

        routed = await handler.add_key(
            provider="openai",
            key_value="sk-proj-routed-0000000",
            alias="routed",
            metadata={
                "team": "engineering",
                "project_id": "proj-789",
                "billing": {"tier": "enterprise"},
            },
        )
        await _run(METADATA, namespace)
        assert [k.id for k in namespace["engineering_keys"]] == [routed.id]
        assert [k.id for k in namespace["enterprise_keys"]] == [routed.id]
        assert namespace["p_key"].alias == "routed"
        assert namespace["p_key"].key_value == "sk-proj-routed-0000000"

        await _run(USE_KEY, namespace)
        generate_text = namespace["generate_text"]
        capsys.readouterr()
        await generate_text("hello")
        assert "No active Anthropic keys found!" in capsys.readouterr().out
        await handler.add_key(
            provider="anthropic", key_value="sk-ant-test-000000000", alias="claude", daily_limit=1
        )
        await generate_text("hello")
        assert capsys.readouterr().out.strip() == "Executing request with claude"
        await generate_text("hello")  # its one use today is spent
        assert "All keys are rate limited!" in capsys.readouterr().out
        clock.advance(24 * 3600)  # the next UTC day brings the allowance back
        await generate_text("hello")
        assert capsys.readouterr().out.strip() == "Executing request with claude"

        await _run(STATS, namespace)
        printed = capsys.readouterr().out.splitlines()
        assert printed[0] == "Daily remaining: 1000"
        # The routed lease was yesterday (the clock moved a day): counters roll at UTC midnight.
        assert sorted(printed[1:]) == ["prod-gpt4-key: 0 uses today", "routed: 0 uses today"]

        before = len(await handler.get_keys_by_provider("openai"))
        await _run(BULK_ZERO, namespace)
        blocked = [k for k in await handler.get_keys_by_provider("openai") if k.daily_limit == 0]
        assert len(blocked) == 1 and before + 1 == len(await handler.get_keys_by_provider("openai"))
    finally:
        await handler.close()
