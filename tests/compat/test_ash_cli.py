"""``ash``, seed 002's command line, configured by ``ASH_*`` as the seed's README says."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from keyplane.compat.api_service_handler.cli import app
from tests.conftest import Database

SECRET = "sk-live-abcdefghijklmnop"


@pytest.fixture
def ash_env(database: Database, tmp_path: Path) -> dict[str, str]:
    env = {
        "ASH_SHARED_SECRET": "an-operator-secret-of-enough-length",
        "KEYPLANE_VAULT_KEY": "",
        "KEYPLANE_VAULT_KEY_FILE": "",
    }
    if database.name == "sqlite":
        env |= {"ASH_STORAGE_BACKEND": "sqlite", "ASH_CONNECTION_STRING": database.url}
    else:
        assert database.schema is not None
        env |= {
            "ASH_STORAGE_BACKEND": "postgresql",
            "ASH_CONNECTION_STRING": database.url,
            "KEYPLANE_DATABASE_SCHEMA": database.schema,
        }
    return env


def ash(env: dict[str, str], *args: str, input: str | None = None) -> tuple[int, str, str]:
    # Empty variables are unset ones (CliRunner sets None as "unset").
    given: dict[str, str | None] = {k: (v or None) for k, v in env.items()}
    result = CliRunner().invoke(app, list(args), env=given, input=input, catch_exceptions=True)
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        result.exception,
        result.output,
    )
    assert "Traceback" not in result.output and "Traceback" not in result.stderr
    return result.exit_code, result.stdout, result.stderr


def as_json(text: str) -> Any:
    return json.loads(text)


def test_the_readme_commands_manage_keys(ash_env: dict[str, str]) -> None:
    # The README's table, command by command.
    code, stdout, stderr = ash(
        ash_env, "keys", "add", "--provider", "openai", "--key", SECRET, "--alias", "prod"
    )
    assert code == 0, stderr
    assert "shell history" in stderr  # a key on the command line is warned about
    assert SECRET not in stdout
    key_id = stdout.split()[1]
    assert key_id.startswith("cred_")

    code, stdout, _ = ash(
        ash_env,
        "keys",
        "add",
        "--provider",
        "anthropic",
        "--key",
        "-",
        "--daily-limit",
        "2",
        "--json",
        input="sk-ant-from-stdin-000000\n",
    )
    assert code == 0
    claude = as_json(stdout)
    assert claude["provider"] == "anthropic" and claude["daily_limit"] == 2
    assert "sk-ant-from-stdin" not in stdout

    code, stdout, _ = ash(ash_env, "keys", "list", "--provider", "anthropic")
    assert code == 0 and "anthropic" in stdout and "sk-ant-from-stdin" not in stdout
    code, stdout, _ = ash(
        ash_env, "keys", "list", "--provider", "anthropic", "--show-keys", "--json"
    )
    assert [k["key_value"] for k in as_json(stdout)] == ["sk-ant-from-stdin-000000"]
    code, stdout, _ = ash(ash_env, "keys", "list", "--json")
    assert sorted(k["alias"] for k in as_json(stdout)) == sorted(["prod", claude["alias"]])
    assert SECRET not in stdout

    code, stdout, _ = ash(ash_env, "keys", "get", key_id)
    assert code == 0 and "alias: prod" in stdout and SECRET not in stdout
    code, stdout, _ = ash(ash_env, "keys", "get", key_id, "--show-key", "--json")
    assert as_json(stdout)["key_value"] == SECRET

    code, stdout, _ = ash(
        ash_env, "keys", "update", key_id, "--alias", "new-name", "--status", "inactive", "--json"
    )
    assert code == 0
    assert (as_json(stdout)["alias"], as_json(stdout)["status"]) == ("new-name", "inactive")

    code, stdout, _ = ash(ash_env, "usage", "stats", claude["id"], "--json")
    stats = as_json(stdout)
    assert (stats["daily_limit"], stats["daily_remaining"], stats["daily_usage_count"]) == (2, 2, 0)
    code, stdout, _ = ash(ash_env, "usage", "stats", claude["id"])
    assert code == 0 and "today" in stdout

    code, stdout, _ = ash(ash_env, "keys", "delete", key_id)
    assert code == 0
    code, stdout, _ = ash(ash_env, "keys", "get", key_id, "--json")
    assert as_json(stdout)["status"] == "revoked"  # soft delete: kept for audit
    code, stdout, _ = ash(ash_env, "keys", "delete", key_id, "--hard")
    assert code == 0
    code, _, stderr = ash(ash_env, "keys", "get", key_id)
    assert code == 1 and "not found" in stderr
    code, _, stderr = ash(ash_env, "keys", "delete", key_id)
    assert code == 1 and "not found" in stderr

    code, stdout, _ = ash(ash_env, "health", "--json")
    assert code == 0 and as_json(stdout)["storage_healthy"] is True


def test_bad_input_is_a_clear_error_not_a_traceback(ash_env: dict[str, str]) -> None:
    code, _, stderr = ash(ash_env, "keys", "add", "--provider", "openai")
    assert code == 2 and "--key" in stderr
    code, _, stderr = ash(ash_env, "keys", "add", "--provider", "openai", "--key", " padded ")
    assert code == 2 and "whitespace" in stderr
    code, _, _ = ash(
        ash_env, "keys", "add", "--provider", "openai", "--key", "x" * 20, "--daily-limit", "-1"
    )
    assert code == 2
    code, _, stderr = ash(ash_env, "keys", "update", "cred_nope", "--status", "revoked")
    assert code == 2 and "active or inactive" in stderr
    code, _, stderr = ash(ash_env, "keys", "list", "--status", "bogus")
    assert code == 2
    code, _, stderr = ash(ash_env | {"ASH_STORAGE_BACKEND": "mongodb"}, "health")
    assert code == 2 and "MongoDB" in stderr
    code, _, stderr = ash(ash_env | {"ASH_SHARED_SECRET": "short"}, "health")
    assert code == 2 and "16" in stderr and "short" not in stderr


def test_a_database_nobody_listens_on_exits_3(tmp_path: Path) -> None:
    env = {
        "ASH_STORAGE_BACKEND": "postgresql",
        "ASH_CONNECTION_STRING": "postgresql://nobody@127.0.0.1:9/none",
        "ASH_SHARED_SECRET": "an-operator-secret-of-enough-length",
    }
    code, _, stderr = ash(env, "health")
    assert code == 3, stderr
