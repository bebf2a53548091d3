"""``keyplane vault add | list | show | update | delete | stats | import`` against a real server
(with a vault key), through the SDK: secrets go in through stdin or an environment variable
and never come out; bad input is one line and the documented exit code."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import httpx
import pytest

from tests.cli.conftest import Result, Run, invoke
from tests.client.conftest import vault_server  # noqa: F401 - a fixture, used here
from tests.conftest import ROOT_KEY, free_port
from tests.e2e.conftest import Server

pytestmark = pytest.mark.e2e

SECRET = "sk-proj-cli-0123456789abcdefghijklmnop"


@pytest.fixture
def vault(vault_server: Server) -> Run:  # noqa: F811
    """``keyplane vault <args>`` against the module's vault server."""

    def run(
        *args: str,
        key: str = ROOT_KEY,
        input: str | None = None,
        env: dict[str, str] | None = None,
    ) -> Result:
        full = {
            "KEYPLANE_URL": vault_server.base_url,
            "KEYPLANE_MANAGEMENT_KEY": key,
            **(env or {}),
        }
        result = invoke("vault", *args, env=full, input=input)
        assert SECRET not in result.stdout + result.stderr
        return result

    return run


def _env() -> str:
    # The server is shared by the module: each test works in an environment of its own.
    return f"env-{secrets.token_hex(4)}"


def _ok(result: Result) -> Result:
    assert result.code == 0, (result.stdout, result.stderr)
    return result


def test_credential_lifecycle_from_the_command_line(vault: Run) -> None:
    env = _env()
    added = _ok(
        vault(
            "add",
            "OpenAI",
            "prod-1",
            "--environment",
            env,
            "--tag",
            "premium",
            "--metadata",
            '{"billing": {"tier": "enterprise"}}',
            "--daily-limit",
            "100",
            "--max-concurrent",
            "2",
            "--json",
            input=SECRET + "\n",
        )
    ).json()
    assert (added["provider"], added["secret_hint"]) == ("openai", "sk-p...mnop")
    assert (added["daily_limit"], added["monthly_limit"], added["max_concurrent"]) == (100, None, 2)
    other = _ok(
        vault(
            "add",
            "anthropic",
            "backup",
            "--secret-env",
            "MY_SECRET",
            "--environment",
            env,
            env={"MY_SECRET": SECRET},
        )
    )
    assert other.stdout.startswith("added cred_")

    listed = _ok(
        vault("list", "--environment", env, "--metadata", "billing.tier=enterprise", "--json")
    ).json()
    assert [c["id"] for c in listed["data"]] == [added["id"]]
    shown = _ok(vault("list", "--environment", env, "--provider", "openai"))
    assert added["id"] in shown.stdout and "1 credential(s)" in shown.stdout

    details = _ok(vault("show", added["id"]))
    assert "enterprise" in details.stdout and "sk-p...mnop" in details.stdout

    updated = _ok(
        vault(
            "update",
            added["id"],
            "--daily-limit",
            "none",
            "--alias",
            "prod-one",
            "--disable",
            "--json",
        )
    ).json()
    assert (updated["alias"], updated["daily_limit"], updated["status"]) == (
        "prod-one",
        None,
        "disabled",
    )
    rotated = _ok(
        vault("update", added["id"], "--new-secret", "--enable", input="sk-new-000000000000\n")
    )
    assert rotated.stdout.startswith(f"updated {added['id']} (active)")

    one = _ok(vault("stats", "--credential", added["id"], "--json")).json()
    assert one["id"] == added["id"] and one["usage"]["live_leases"] == 0
    totals = _ok(vault("stats", "openai"))
    assert "openai:" in totals.stdout and "credential(s)" in totals.stdout
    assert _ok(vault("stats", "openai", "--json")).json()["provider"] == "openai"

    assert _ok(vault("delete", added["id"])).stdout.startswith(f"revoked {added['id']}")
    assert _ok(vault("show", added["id"], "--json")).json()["status"] == "revoked"
    assert _ok(vault("delete", added["id"], "--hard", "--json")).json()["id"] == added["id"]
    gone = vault("show", added["id"])
    assert gone.code == 1 and "CREDENTIAL_NOT_FOUND" in gone.stderr


def test_import_reports_bad_rows_by_line_and_skips_existing_aliases(
    vault: Run, tmp_path: Path
) -> None:
    env = _env()
    rows = [
        {"provider": "openai", "alias": "imp-1", "secret": SECRET, "environment": env},
        {
            "provider": "openai",
            "alias": "imp-2",
            "secret": "sk-imp-2-00000000000",
            "environment": env,
            "daily_limit": 5,
            "tags": ["bulk"],
        },
        {"provider": "no-such-provider", "alias": "bad", "secret": SECRET, "environment": env},
        {"provider": "openai", "alias": "imp-3", "environment": env},
    ]
    lines = [json.dumps(row) for row in rows] + ["{not json " + SECRET]
    jsonl = tmp_path / "creds.jsonl"
    jsonl.write_text("\n".join(lines) + "\n", encoding="utf-8")

    first = vault("import", str(jsonl))
    assert first.code == 1, first.stderr
    assert "created 2, already existed 0, rejected 3" in first.stderr
    # Line numbers, with why; the server's reason for line 3, the file's for 4 and 5.
    assert "UNKNOWN_PROVIDER" in first.stderr and "secret is required" in first.stderr
    assert "not valid JSON" in first.stderr
    for line in ("3", "4", "5"):
        assert f"│ {line}" in first.stderr

    again = vault("import", str(jsonl))
    assert "created 0, already existed 2, rejected 3" in again.stderr
    listed = _ok(vault("list", "--environment", env, "--json")).json()["data"]
    assert sorted(c["alias"] for c in listed) == ["imp-1", "imp-2"]

    csv_file = tmp_path / "creds.csv"
    csv_file.write_text(
        "provider,alias,secret,environment,tags,daily_limit\n"
        f"anthropic,csv-1,{SECRET},{env},a;b,none\n"
        f"anthropic,csv-2,{SECRET},{env},,7\n"
        f"anthropic,csv-2,{SECRET},{env},,7\n",
        encoding="utf-8",
    )
    done = _ok(vault("import", str(csv_file)))
    assert "created 2, already existed 1, rejected 0" in done.stderr
    piped = json.dumps(
        {"provider": "anthropic", "alias": "piped", "secret": SECRET, "environment": env}
    )
    assert "created 1," in _ok(vault("import", "-", input=piped + "\n")).stderr
    by_alias = {
        c["alias"]: c
        for c in _ok(
            vault("list", "--environment", env, "--provider", "anthropic", "--json")
        ).json()["data"]
    }
    assert by_alias["csv-1"]["tags"] == ["a", "b"] and by_alias["csv-2"]["daily_limit"] == 7


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("add", "openai", "x", "--secret-env", "KP_TEST_UNSET_VARIABLE"), "is not set"),
        (("add", "openai", "x", "--daily-limit", "lots"), "--daily-limit must be a whole number"),
        (("add", "openai", "x", "--max-concurrent", "-1"), "must not be negative"),
        (("add", "openai", "x", "--metadata", "[1]"), "--metadata must be a JSON object"),
        (("add", "openai", "x", "--metadata", "{nope"), "--metadata is not valid JSON"),
        (("update", "cred_x"), "nothing to change"),
        (("stats",), "give a provider, or --credential"),
        (("list", "--status", "sleepy"), "--status must be one of"),
        (("list", "--metadata", "no-equals-sign"), "path=value"),
        (("import", "/no/such/file.jsonl"), "cannot read"),
    ],
)
def test_bad_arguments_exit_2_before_any_request(args: tuple[str, ...], message: str) -> None:
    # Nothing listens there: a request would be exit 3, not 2.
    env = {"KEYPLANE_URL": f"http://127.0.0.1:{free_port()}", "KEYPLANE_MANAGEMENT_KEY": ROOT_KEY}
    result = invoke("vault", *args, env=env, input=SECRET + "\n")
    assert result.code == 2, (result.stdout, result.stderr)
    assert message in result.stderr and result.stdout == ""


def test_refusals_and_failures_have_their_exit_codes(vault: Run, tmp_path: Path) -> None:
    unknown = vault("show", "cred_doesnotexist0000000000")
    assert unknown.code == 1 and "CREDENTIAL_NOT_FOUND" in unknown.stderr
    invalid = vault("add", "no-such-provider", "x", input=SECRET + "\n")
    assert invalid.code == 1 and "UNKNOWN_PROVIDER" in invalid.stderr
    empty = vault("add", "openai", "x", input="\n")
    assert empty.code == 2 and "the secret is empty" in empty.stderr
    wrong_key = vault("list", key="kp_mgmt_" + "z" * 40)
    assert wrong_key.code == 4 and "KEYPLANE_MANAGEMENT_KEY" in wrong_key.stderr
    header = tmp_path / "bad.csv"
    header.write_text("name,secret\nx,y\n", encoding="utf-8")
    assert "provider, alias, secret" in vault("import", str(header)).stderr


def test_a_server_that_is_down_is_exit_3(tmp_path: Path) -> None:
    env = {"KEYPLANE_URL": f"http://127.0.0.1:{free_port()}", "KEYPLANE_MANAGEMENT_KEY": ROOT_KEY}
    down = invoke("vault", "add", "openai", "x", "--timeout", "2", env=env, input=SECRET + "\n")
    assert down.code == 3 and "is the server running?" in down.stderr
    assert len(down.stderr.strip().splitlines()) == 1
    assert SECRET not in down.stderr
    assert invoke("vault", "list", "--timeout", "2", env=env).code == 3


def test_a_server_without_a_vault_key_says_so(cli: Run) -> None:
    refused = cli("vault", "add", "openai", "x", input=SECRET + "\n")
    assert refused.code == 3 and "VAULT_NOT_CONFIGURED" in refused.stderr
    assert SECRET not in refused.stderr + refused.stdout


def test_project_and_sharing_options(vault: Run, vault_server: Server) -> None:  # noqa: F811
    created = httpx.post(
        f"{vault_server.base_url}/v1/projects",
        json={"name": f"cli-{secrets.token_hex(4)}"},
        headers={"Authorization": f"Bearer {ROOT_KEY}"},
    )
    assert created.status_code == 201, created.text
    project_id = created.json()["data"]["id"]
    env = _env()
    added = _ok(
        vault(
            "add",
            "openai",
            "team",
            "--environment",
            env,
            "--project",
            project_id,
            "--json",
            input=SECRET + "\n",
        )
    ).json()
    assert (added["project_id"], added["shared_with_projects"]) == (project_id, False)
    moved = _ok(
        vault("update", added["id"], "--project", "org", "--share-with-projects", "--json")
    ).json()
    assert (moved["project_id"], moved["shared_with_projects"]) == (None, True)
    assert "shared with projects" in _ok(vault("show", added["id"])).stdout
    unshared = _ok(vault("update", added["id"], "--unshare", "--json")).json()
    assert unshared["shared_with_projects"] is False


def test_import_sets_the_project_and_sharing(
    vault: Run,
    vault_server: Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    created = httpx.post(
        f"{vault_server.base_url}/v1/projects",
        json={"name": f"imp-{secrets.token_hex(4)}"},
        headers={"Authorization": f"Bearer {ROOT_KEY}"},
    )
    project_id = created.json()["data"]["id"]
    env = _env()
    csv_file = tmp_path / "creds.csv"
    csv_file.write_text(
        "provider,alias,secret,environment,project_id,shared_with_projects\n"
        f"openai,imp-team,{SECRET},{env},{project_id},false\n"
        f"openai,imp-shared,{SECRET},{env},,true\n"
        f"openai,imp-bad,{SECRET},{env},,maybe\n",
        encoding="utf-8",
    )
    done = vault("import", str(csv_file))
    assert "created 2, already existed 0, rejected 1" in done.stderr
    assert "shared_with_projects must be true or false" in done.stderr
    listed = _ok(vault("list", "--environment", env, "--json")).json()["data"]
    by_alias = {c["alias"]: (c["project_id"], c["shared_with_projects"]) for c in listed}
    assert by_alias == {"imp-team": (project_id, False), "imp-shared": (None, True)}
