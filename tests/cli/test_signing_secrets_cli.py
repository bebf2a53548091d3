"""``keyplane signing-secrets ...`` against a real server."""

from __future__ import annotations

from pathlib import Path

from keyplane.webhooks import verify
from tests.cli.conftest import Run


def test_signing_secrets(cli: Run, tmp_path: Path) -> None:
    made = cli("signing-secrets", "create", "cust_cli", "--description", "d", "--json")
    assert made.code == 0, made.stderr
    secret, secret_id = made.json()["secret"], made.json()["data"]["id"]
    shown = cli("signing-secrets", "create", "cust_cli")
    assert "shown only this once" in shown.stderr and "whsec_" in shown.stdout

    listed = cli("signing-secrets", "list", "--owner", "cust_cli", "--json").json()["data"]
    assert secret_id in [item["id"] for item in listed]
    assert "cust_cli" in cli("signing-secrets", "list").stdout
    assert cli("signing-secrets", "show", secret_id, "--json").json()["owner"] == "cust_cli"

    signed = cli("signing-secrets", "sign", secret_id, '{"a":1}', "--json").json()
    verify('{"a":1}', signed["headers"], secret, now=signed["timestamp"])
    as_headers = cli("signing-secrets", "sign", secret_id, "x", "--msg-id", "evt_1").stdout
    assert "webhook-id: evt_1" in as_headers and "webhook-signature: v1," in as_headers
    payload = tmp_path / "body.json"
    payload.write_text('{"from":"file"}', encoding="utf-8")
    from_file = cli("signing-secrets", "sign", secret_id, "--file", str(payload), "--json").json()
    verify('{"from":"file"}', from_file["headers"], secret, now=from_file["timestamp"])
    piped = cli("signing-secrets", "sign", secret_id, "--file", "-", "--json", input="stdin")
    verify("stdin", piped.json()["headers"], secret, now=piped.json()["timestamp"])

    assert cli("signing-secrets", "sign", secret_id).code == 2  # no payload
    too_big = tmp_path / "big"
    too_big.write_bytes(b"x" * (48 * 1024 + 1))
    assert cli("signing-secrets", "sign", secret_id, "--file", str(too_big)).code == 2

    rotated = cli("signing-secrets", "rotate", secret_id, "--overlap", "60", "--json").json()
    both = cli("signing-secrets", "sign", secret_id, "y", "--json").json()
    verify("y", both["headers"], secret, now=both["timestamp"])
    verify("y", both["headers"], rotated["secret"], now=both["timestamp"])
    assert cli("signing-secrets", "rotate", secret_id, "--overlap", "-5").code == 2

    assert cli("signing-secrets", "delete", secret_id).stdout.strip() == f"{secret_id}: deleted"
    missing = cli("signing-secrets", "show", secret_id)
    assert missing.code == 1 and "SIGNING_SECRET_NOT_FOUND" in missing.stderr
