"""``keyplane audit verify`` against a real server."""

from __future__ import annotations

import json

from tests.cli.conftest import Run


def test_audit_verify_reports_a_whole_chain(cli: Run) -> None:
    assert cli("keys", "create", "audited").code == 0
    result = cli("audit", "verify", "--json")
    assert result.code == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["ok"] is True and body["checked"] >= 3 and body["first_broken"] is None
    table = cli("audit", "verify")
    assert table.code == 0 and "yes" in table.stdout


def test_audit_verify_without_the_scope_is_exit_4(cli: Run) -> None:
    made = cli("management-keys", "create", "reader", "--scope", "keys:read", "--json")
    assert made.code == 0, made.stderr
    key = json.loads(made.stdout)["key"]
    assert cli("audit", "verify", key=key).code == 4
