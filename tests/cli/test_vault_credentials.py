"""``keyplane vault add | list | show | update | delete | stats | import`` against a real database:
secrets go in through stdin or an environment variable and never come out; bad input is one
line and a non-zero exit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from keyplane.cli.main import app as cli
from keyplane.domain.envelope import MasterKey
from tests.conftest import Database

SECRET = "sk-proj-cli-0123456789abcdefghijklmnop"


@pytest.fixture
def run(database: Database, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``keyplane vault ...`` on each backend."""
    return _runner(database, monkeypatch)


@pytest.fixture
def run_sqlite(sqlite_database: Database, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The same on SQLite only: for what the command line itself checks."""
    return _runner(sqlite_database, monkeypatch)


def _runner(database: Database, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("KEYPLANE_DATABASE_URL", database.url)
    if database.schema is not None:
        monkeypatch.setenv("KEYPLANE_DATABASE_SCHEMA", database.schema)
    monkeypatch.setenv("KEYPLANE_VAULT_KEY", MasterKey(b"k" * 32).to_base64())
    for name in ("KEYPLANE_VAULT_KEY_FILE", "KEYPLANE_VAULT_PREVIOUS_KEYS"):
        monkeypatch.delenv(name, raising=False)
    runner = CliRunner()

    def invoke(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> Result:
        result = runner.invoke(cli, ["vault", *args], input=stdin, env=env)
        assert SECRET not in result.output
        return result

    return invoke


def _json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_credential_lifecycle_from_the_command_line(run: Any) -> None:
    added = _json(
        run(
            "add",
            "OpenAI",
            "prod-1",
            "--environment",
            "production",
            "--tag",
            "premium",
            "--metadata",
            '{"billing": {"tier": "enterprise"}}',
            "--daily-limit",
            "100",
            "--max-concurrent",
            "2",
            "--json",
            stdin=SECRET + "\n",
        )
    )
    assert added["provider"] == "openai"
    assert added["secret_hint"] == "sk-p...mnop"
    assert (added["daily_limit"], added["monthly_limit"], added["max_concurrent"]) == (100, None, 2)
    other = run(
        "add",
        "anthropic",
        "a-1",
        "--secret-env",
        "ANTHROPIC_KEY",
        env={"ANTHROPIC_KEY": "sk-ant-" + "z" * 30},
    )
    assert other.exit_code == 0, other.output
    assert other.stdout.startswith("added cred_")

    assert [c["alias"] for c in _json(run("list", "--json"))] == ["prod-1", "a-1"]
    assert [
        c["alias"] for c in _json(run("list", "--metadata", "billing.tier=enterprise", "--json"))
    ] == ["prod-1"]
    assert [c["alias"] for c in _json(run("list", "--provider", "ANTHROPIC", "--json"))] == ["a-1"]
    table = run("list", "--tag", "premium")
    assert table.exit_code == 0 and added["id"] in table.stdout and "sk-p...mnop" in table.stdout

    shown = _json(run("show", added["id"], "--json"))
    assert shown["usage"]["daily_remaining"] == 100
    updated = _json(run("update", added["id"], "--daily-limit", "none", "--disable", "--json"))
    assert (updated["daily_limit"], updated["status"]) == (None, "disabled")
    assert _json(run("list", "--has-capacity", "--json"))[0]["alias"] == "a-1"
    renewed = run("update", added["id"], "--new-secret", stdin="sk-proj-renewed-" + "r" * 20)
    assert renewed.exit_code == 0, renewed.output
    assert _json(run("show", added["id"], "--json"))["secret_hint"] == "sk-p...rrrr"

    totals = _json(run("stats", "openai", "--json"))
    assert totals["credentials"] == 1
    revoked = run("delete", added["id"])
    assert revoked.exit_code == 0 and "revoked" in revoked.stdout
    assert _json(run("show", added["id"], "--json"))["status"] == "revoked"


def test_import_adds_all_or_reports_the_bad_item(run: Any, tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(
        json.dumps(
            {
                "credentials": [
                    {
                        "provider": "openai",
                        "alias": f"imp-{n}",
                        "secret": f"{SECRET}-{n}",
                        "weight": n + 1,
                    }
                    for n in range(3)
                ]
            }
        )
    )
    imported = run("import", str(good))
    assert imported.exit_code == 0, imported.output
    assert "imported 3 credentials" in imported.stdout

    lines = tmp_path / "lines.jsonl"
    lines.write_text(
        json.dumps({"provider": "groq", "alias": "l1", "secret": SECRET + "-l1"})
        + "\n\n"
        + json.dumps({"provider": "custom", "alias": "l2", "secret": SECRET + "-l2"})
        + "\n"
    )
    assert "imported 2" in run("import", str(lines)).stdout

    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            [
                {"provider": "openai", "alias": "ok", "secret": SECRET + "-ok"},
                {"provider": "openai", "alias": "empty", "secret": ""},
            ]
        )
    )
    refused = run("import", str(bad))
    assert refused.exit_code == 1
    assert "credential 1: the secret must not be empty" in refused.output
    assert len(_json(run("list", "--json"))) == 5  # nothing of the bad file was added


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (("add", "opnai", "x"), SECRET, "did you mean 'openai'"),
        (("add", "openai", "x"), "", "the secret must not be empty"),
        (("add", "openai", "x", "--daily-limit", "lots"), SECRET, "--daily-limit must be"),
        (("add", "openai", "x", "--metadata", "[1]"), SECRET, "must be a JSON object"),
        (("add", "openai", "x", "--secret-env", "NOT_SET_ANYWHERE"), None, "is not set"),
        (("list", "--metadata", "billing"), None, "path=value"),
        (("list", "--metadata", "a..b=1"), None, ""),
        (("show", "cred_nope"), None, ""),
        (("update", "cred_nope"), None, "nothing to change"),
        (("delete", "not-an-id"), None, ""),
        (("stats", "custom-ish"), None, "unknown provider"),
        (("import", "/nonexistent/file.json"), None, "cannot read"),
    ],
)
def test_bad_input_is_one_line_and_a_non_zero_exit(
    run_sqlite: Any, args: tuple[str, ...], stdin: str | None, message: str
) -> None:
    result = run_sqlite(*args, stdin=stdin)
    assert result.exit_code in (1, 2), result.output
    assert "error:" in result.output
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "content",
    [
        b"\xff\xfe",
        b"{not json",
        b'{"credentials": 3}',
        b'[{"provider": "openai"}]',
        b'[{"provider": "openai", "alias": "a", "secret": "s-123456789", "weight": true}]',
        b'[{"provider": "openai", "alias": "a", "secret": "s-123456789", "colour": "red"}]',
        b"[]",
    ],
    ids=[
        "binary",
        "not-json",
        "not-a-list",
        "missing-fields",
        "bool-weight",
        "unknown-field",
        "empty",
    ],
)
def test_a_malformed_import_file_is_refused(
    run_sqlite: Any, tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "in.json"
    path.write_bytes(content)
    result = run_sqlite("import", str(path))
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and "Traceback" not in result.output


def test_adding_without_a_master_key_says_how_to_configure_one(
    run_sqlite: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KEYPLANE_VAULT_KEY")
    result = run_sqlite("add", "openai", "x", stdin=SECRET)
    assert result.exit_code == 2
    assert "KEYPLANE_VAULT_KEY" in result.output
