"""Every server-facing ``keyplane`` command, its output and its exit codes."""

from __future__ import annotations

import secrets
from decimal import Decimal

import pytest

from tests.cli.conftest import Run, invoke
from tests.conftest import free_port
from tests.e2e.conftest import Server

pytestmark = pytest.mark.e2e


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def test_health(cli: Run, live_server: Server) -> None:
    result = cli("health", "--json")
    assert result.code == 0
    assert result.json() == {"url": live_server.base_url, "health": "ok", "ready": "ready"}
    assert "ready" in cli("health").stdout


def test_a_server_that_is_down_is_exit_3_with_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for args in (["health"], ["keys", "list"], ["plans", "show", "x"]):
        result = invoke(*args, "--url", url, "--timeout", "1")
        assert result.code == 3, result
        assert "cannot reach" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_key_lifecycle(cli: Run) -> None:
    owner = unique("owner")
    made = cli(
        "keys", "create", "acme", "--owner", owner, "--tag", "a", "--tag", "b",
        "--scope", "chat", "--metadata", '{"tier": "pro"}',
        "--policy", '{"budget": {"credit_limit": 5}}', "--json",
    )  # fmt: skip
    assert made.code == 0, made
    created = made.json()
    secret, key_id = created["key"], created["data"]["id"]
    assert secret.startswith("kp_live_") and created["data"]["tags"] == ["a", "b"]
    assert Decimal(created["data"]["limit"]) == 5  # credits are exact decimal text in JSON

    shown = cli("keys", "show", key_id, "--json").json()
    assert shown["owner"] == owner and "key" not in shown
    table = cli("keys", "show", key_id)
    assert table.code == 0 and "acme" in table.stdout and secret not in table.stdout

    listed = cli("keys", "list", "--owner", owner, "--json").json()
    assert [k["id"] for k in listed["data"]] == [key_id] and listed["has_more"] is False
    assert cli("keys", "list", "--meta", "tier=pro", "--all", "--json").json()["data"]
    assert "acme" in cli("keys", "list", "--owner", owner).stdout

    updated = cli("keys", "update", key_id, "--label", "L", "--tag", "c", "--json").json()
    assert (updated["label"], updated["tags"]) == ("L", ["c"])

    disabled = cli("keys", "disable", key_id, "--reason", "unpaid", "--for", "2d", "--json")
    assert disabled.json()["status"] == "disabled"
    assert disabled.json()["auto_enable_at"] is not None
    assert cli("keys", "disable", key_id, "--for", "1w").code == 2
    assert cli("keys", "enable", key_id).stdout.strip() == f"{key_id}: active"
    charged = cli("keys", "credits", key_id, "--amount", "-2.5", "--reason", "refund", "--json")
    assert Decimal(str(charged.json()["amount"])) == Decimal("-2.5")
    assert Decimal(str(cli("keys", "show", key_id, "--json").json()["limit_remaining"])) == 2.5
    undone = cli("keys", "credits", key_id, "--amount", "2.5", "--reason", "undo")
    assert undone.code == 0 and "+2.5 credits" in undone.stdout
    reset = cli("keys", "reset-limits", key_id)
    assert reset.code == 0 and f"{key_id}: reset" in reset.stdout

    rotated = cli("keys", "rotate", key_id, "--grace", "0")
    assert rotated.code == 0 and "shown only this once" in rotated.stderr
    new_secret = rotated.stdout.strip().splitlines()[-1]
    assert new_secret.startswith("kp_live_") and new_secret != secret

    usage = cli("usage", key_id, "--json").json()
    assert Decimal(usage["usage"]["total"]) == 0 and Decimal(usage["limit_remaining"]) == 5
    assert "budget limit" in cli("usage", key_id).stdout
    analytics = cli("usage", key_id, "--period", "24h", "--json").json()["analytics"]
    assert analytics["period"] == "24h" and len(analytics["series"]) == 24
    shown = cli("usage", key_id, "--period", "6h")
    assert shown.code == 0 and "analytics" in shown.stdout and "▁▁▁▁▁▁" in shown.stdout
    bad = cli("usage", key_id, "--period", "soon")
    assert bad.code == 1 and "period" in bad.stderr

    assert cli("keys", "revoke", key_id, "--reason", "done", "--json").json()["status"] == "revoked"


def test_refusals_have_their_exit_codes(cli: Run) -> None:
    missing = cli("keys", "show", "key_" + "0" * 26)
    assert missing.code == 1 and "404 KEY_NOT_FOUND" in missing.stderr
    invalid = cli("keys", "create", "x", "--environment", "staging")
    assert invalid.code == 1 and "VALIDATION_FAILED" in invalid.stderr
    bad_auth = cli("keys", "list", key="kp_mgmt_" + "x" * 40)
    assert bad_auth.code == 4 and "401" in bad_auth.stderr and "--key" in bad_auth.stderr
    assert cli("keys", "list", "--limit", "0").code == 2
    assert cli("keys", "create", "x", "--metadata", "{nope").code == 2
    assert cli("keys", "create", "x", "--policy", "[1]").code == 2
    assert cli("keys", "create", "x", "--policy", "@/no/such/file").code == 2
    assert cli("keys", "list", "--meta", "no-equals").code == 2
    assert cli("keys", "update", "key_" + "0" * 26).code == 2  # nothing to change
    assert cli("keys", "show").code == 2
    assert invoke("keys", "list", "--url", "ftp://nope").code == 2
    mangled = invoke("keys", "list", env={"KEYPLANE_MANAGEMENT_KEY": "kp_mgmt_secret\x01tail"})
    assert mangled.code == 2 and "header" in mangled.stderr and "secret" not in mangled.stderr


def test_plans(cli: Run) -> None:
    name = unique("plan")
    made = cli("plans", "create", name, "--description", "d", "--policy", '{"scopes": ["chat"]}')
    assert made.code == 0 and name in made.stdout
    assert name in [p["name"] for p in cli("plans", "list", "--json").json()["data"]]
    assert name in cli("plans", "list").stdout
    assert cli("plans", "show", name, "--json").json()["description"] == "d"
    updated = cli("plans", "update", name, "--description", "e", "--json").json()
    assert updated["description"] == "e"
    assert cli("plans", "update", name).code == 2
    key_id = cli("keys", "create", "on-plan", "--plan", name, "--json").json()["data"]["id"]
    in_use = cli("plans", "delete", name)
    assert in_use.code == 1 and "PLAN_IN_USE" in in_use.stderr
    assert cli("keys", "update", key_id, "--no-plan", "--json").json()["plan"] is None
    assert cli("plans", "delete", name, "--json").json()["name"] == name
    assert cli("plans", "show", name).code == 1


def test_management_keys(cli: Run) -> None:
    made = cli("management-keys", "create", "reader", "--scope", "keys:read", "--json")
    assert made.code == 0
    secret, key_id = made.json()["key"], made.json()["data"]["id"]
    assert key_id in [k["id"] for k in cli("management-keys", "list", "--json").json()["data"]]
    assert "reader" in cli("management-keys", "list").stdout
    assert cli("management-keys", "show", key_id, "--json").json()["scopes"] == ["keys:read"]
    assert cli("keys", "list", key=secret).code == 0
    denied = cli("keys", "create", "x", key=secret)
    assert denied.code == 4 and "403" in denied.stderr
    assert cli("management-keys", "revoke", key_id).stdout.strip() == f"{key_id}: revoked"
    assert cli("keys", "list", key=secret).code == 4
    assert cli("management-keys", "create", "no-scope").code == 2


def test_projects(cli: Run) -> None:
    made = cli("projects", "create", unique("proj"), "--key-prefix", "eu", "--json")
    assert made.code == 0, made
    project = made.json()
    assert project["key_prefix"] == "eu"
    assert project["id"] in [p["id"] for p in cli("projects", "list", "--json").json()["data"]]
    assert project["name"] in cli("projects", "show", project["id"]).stdout
    assert cli("projects", "list").code == 0
    assert cli("projects", "create", "x", "--key-prefix", "NOT VALID").code == 1
    assert cli("projects", "show", "proj_nope").code == 1
    made_key = cli("keys", "create", "in-eu", "--project", project["id"], "--json").json()
    assert made_key["key"].startswith("eu_live_")


def test_sparkline_scales_to_the_largest_value() -> None:
    from keyplane.cli.status import sparkline

    assert sparkline([]) == ""
    assert sparkline([0, 0]) == "▁▁"
    assert sparkline([0, 1, 2, 4, 8]) == "▁▁▂▄█"


def test_security_report_as_table_json_and_csv(cli: Run) -> None:
    name = unique("=unlimited")  # a name a spreadsheet would read as a formula
    made = cli("keys", "create", name, "--json")
    assert made.code == 0, made.stderr
    key_id = made.json()["data"]["id"]
    as_json = cli("report", "security", "--type", "unlimited_key", "--limit", "1000", "--json")
    assert as_json.code == 0, as_json.stderr
    body = as_json.json()
    assert body["counts"]["unlimited_key"] >= 1
    assert key_id in {issue["target_id"] for issue in body["issues"]}
    assert {issue["type"] for issue in body["issues"]} == {"unlimited_key"}
    as_csv = cli("report", "security", "--csv", "--limit", "1000", "--stale-days", "3650")
    assert as_csv.code == 0, as_csv.stderr
    lines = as_csv.stdout.splitlines()
    assert lines[0] == "type,severity,target_type,target_id,project_id,name"
    assert any(key_id in line and f",'{name}" in line for line in lines)
    shown = cli("report", "security")
    assert shown.code == 0 and "unlimited_key" in shown.stdout and "keys scanned" in shown.stdout
    assert cli("report", "security", "--type", "nope").code == 2
    assert cli("report", "security", "--stale-days", "0").code == 2
    assert cli("report", "security", "--csv", "--json").code == 2
    reader = cli("management-keys", "create", unique("kr"), "--scope", "keys:read", "--json")
    denied = cli("report", "security", key=reader.json()["key"])
    assert denied.code == 4
