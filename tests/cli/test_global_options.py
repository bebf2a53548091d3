"""Global options, --version and -h, credits in --json, and the one exit-code table."""

from __future__ import annotations

import os
from decimal import Decimal

import pytest

import keyplane
from keyplane.cli.remote import Exit
from tests.cli.conftest import Run, invoke
from tests.conftest import ROOT_KEY, SERVER_SECRET
from tests.e2e.conftest import Server, free_port


def test_version_and_short_help() -> None:
    assert invoke("--version").stdout.strip() == keyplane.__version__
    assert invoke("version").stdout.strip() == keyplane.__version__
    for args in (["-h"], ["keys", "-h"], ["keys", "list", "-h"]):
        result = invoke(*args)
        assert result.code == 0, args
        assert "Usage:" in result.stdout, args


def test_help_shows_the_defaults_and_completion() -> None:
    wide = {"COLUMNS": "250"}  # one option a line, however the terminal is
    top = invoke("--help", env=wide).stdout
    assert "http://127.0.0.1:8400" in top  # --url's default, as text: it comes from the SDK
    assert "Default: 10" in top
    assert "--install-completion" in top
    assert "default: 10.0" in invoke("keys", "list", "--help", env=wide).stdout  # Typer's own


@pytest.mark.parametrize("before", [True, False])
def test_global_options_work_before_or_after_the_command(live_server: Server, before: bool) -> None:
    options = ["--json", "--url", live_server.base_url, "--key", ROOT_KEY, "--timeout", "30"]
    args = [*options, "plans", "list"] if before else ["plans", "list", *options]
    # The environment points elsewhere: an option given, wherever it is, beats it.
    env = {"KEYPLANE_URL": f"http://127.0.0.1:{free_port()}", "KEYPLANE_MANAGEMENT_KEY": "nope"}
    result = invoke(*args, env=env)
    assert result.code == 0, result
    assert isinstance(result.json()["data"], list)
    # The options went into this invocation's environment only.
    assert os.environ.get("KEYPLANE_MANAGEMENT_KEY") != ROOT_KEY


def test_an_option_after_the_command_wins_over_one_before(live_server: Server) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    result = invoke(
        "--url", down, "plans", "list", "--url", live_server.base_url, "--key", ROOT_KEY
    )
    assert result.code == 0, result
    assert invoke("--url", down, "--timeout", "1", "plans", "list").code == Exit.UNREACHABLE


def test_credits_inside_policies_are_decimal_strings_in_json(cli: Run) -> None:
    policy = '{"budget": {"credit_limit": 50.25, "per_model": {"gpt-4o": 10}}}'
    created = cli("keys", "create", "credits", "--policy", policy, "--json")
    assert created.code == 0, created
    data = created.json()["data"]
    for shown in (data["policy"], data["effective_policy"]):
        assert shown["budget"]["credit_limit"] == "50.25"
        per_model = shown["budget"]["per_model"]["gpt-4o"]
        assert isinstance(per_model, str) and Decimal(per_model) == 10
    assert data["limit"] == "50.25"
    listed = cli("keys", "show", data["id"], "--json").json()
    assert listed["effective_policy"]["budget"]["credit_limit"] == "50.25"


# -- exit codes: docs/cli.md and docs/configuration.md, one table (keyplane.cli.remote.Exit) --


def test_the_exit_code_table_is_the_documented_one() -> None:
    assert {code.name: int(code) for code in Exit} == {
        "OK": 0,
        "REFUSED": 1,
        "USAGE": 2,
        "UNREACHABLE": 3,
        "AUTH": 4,
    }


def test_an_unsupported_database_scheme_is_a_usage_error() -> None:
    for command in ("migrate", "serve"):
        result = invoke(command, "--database-url", "mysql://db/keyplane")
        assert result.code == Exit.USAGE, (command, result)
        assert "unsupported database URL scheme 'mysql'" in result.stderr


def test_serve_exits_3_when_postgresql_cannot_be_reached() -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/test"
    result = invoke("serve", "--database-url", url, env={"KEYPLANE_SECRET": SERVER_SECRET})
    assert result.code == Exit.UNREACHABLE, result
    assert "cannot reach the database" in result.stderr


def test_migrate_exits_1_when_it_fails() -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/test"
    result = invoke("migrate", "--database-url", url)
    assert result.code == Exit.REFUSED, result
