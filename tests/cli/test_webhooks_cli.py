"""``keyplane webhooks ...`` against a real server."""

from __future__ import annotations

from tests.cli.conftest import Run


def test_webhooks(cli: Run) -> None:
    made = cli("webhooks", "create", "https://hooks.example.com/cli", "-e", "key.*", "--json")
    assert made.code == 0, made.stderr
    hook = made.json()
    assert hook["secret"].startswith("whsec_")
    shown = cli("webhooks", "create", "ops@example.com", "--email", "-e", "budget.*")
    assert "shown only this once" in shown.stderr and "whsec_" in shown.stdout
    assert cli("webhooks", "create", "https://hooks.example.com/x").code == 2  # no --event
    refused = cli("webhooks", "create", "https://hooks.example.com/x", "-e", "nope")
    assert refused.code != 0 and "Traceback" not in refused.stderr

    listed = cli("webhooks", "list", "--json").json()["data"]
    assert hook["id"] in [item["id"] for item in listed]
    assert all(item.get("secret") is None for item in listed)
    assert cli("webhooks", "show", hook["id"], "--json").json()["events"] == ["key.*"]
    changed = cli("webhooks", "update", hook["id"], "-e", "ping", "--disabled", "--json").json()
    assert changed["events"] == ["ping"] and changed["enabled"] is False
    rotated = cli("webhooks", "rotate-secret", hook["id"], "--json").json()
    assert rotated["secret"] not in (None, hook["secret"])
    assert cli("webhooks", "test", hook["id"]).code == 0
    deliveries = cli("webhooks", "deliveries", hook["id"], "--json").json()["data"]
    assert [d["event_type"] for d in deliveries] == ["ping"]
    assert cli("webhooks", "replay", hook["id"], deliveries[0]["id"]).code == 0
    assert cli("webhooks", "delete", hook["id"]).code == 0
    assert cli("webhooks", "show", hook["id"]).code != 0
