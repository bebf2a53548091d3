"""Seed 000's AnyAPI client code, unchanged but for its base URL and key, against a real server.

It uses ``requests`` (as the seed does), against ``/api/v1/keys``; usage is reported and keys
verified through the native ``/v1`` API, as an operator's gateway would.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests
import tenacity

from tests.conftest import ROOT_KEY, free_port
from tests.e2e import seed_anyapi_client as seed
from tests.e2e.conftest import Backend, Server, ServerFactory

pytestmark = pytest.mark.e2e


@pytest.fixture
def server(start_server: ServerFactory, backend: Backend) -> Iterator[Server]:
    running = start_server({**backend.env, "KEYPLANE_LAST_USED_FLUSH_SECONDS": "0.1"})
    seed.configure(f"{running.base_url}/api/v1/keys", ROOT_KEY)
    yield running


def calls(name: str) -> list[tuple[Any, ...]]:
    return [args for hook, args in seed.CALLS if hook == name]


def report(client: httpx.Client, key_hash: str, credits: float, request_id: str) -> None:
    key_id = client.get(f"/v1/keys/{key_hash}").json()["data"]["id"]
    response = client.post(
        "/v1/usage", json={"key_id": key_id, "cost": credits, "request_id": request_id}
    )
    assert response.status_code == 201, response.text


def verify(client: httpx.Client, key: str) -> str:
    code: str = client.post("/v1/verify", json={"key": key}).json()["code"]
    return code


def test_the_seed_client_runs_the_whole_customer_lifecycle(server: Server) -> None:
    # Quick start: "Create a customer key in 3 lines".
    new_customer = seed.create_customer_key("cust_12345", 50)
    assert new_customer["key"].startswith("kp_live_")
    assert new_customer["data"]["limit"] == 5000  # $50 as AnyAPI credits (x 100)

    # The onboarding pipeline, exactly as the seed runs it.
    new_signup = {"id": "cust_67890", "email": "founder@startup.com", "plan": "pro"}
    result = seed.complete_customer_onboarding(new_signup)
    assert result["success"] is True, result
    key_hash = result["key_hash"]
    [(customer_id, key_info)] = calls("save_customer_key_to_db")
    assert customer_id == "cust_67890" and key_info["hash"] == key_hash
    assert (key_info["monthly_limit"], key_info["plan"]) == (100, "pro")
    [(email, api_key)] = calls("send_welcome_email")
    assert email == "founder@startup.com" and api_key == key_info["api_key"]
    assert calls("schedule_usage_monitoring") == [("cust_67890", key_hash)]

    with server.client() as client:
        assert verify(client, api_key) == "VALID"
        usage = seed.key_manager.check_customer_usage(key_hash)
        assert usage is not None
        assert (usage["spent"], usage["limit"], usage["usage_percentage"]) == (0, 100, 0)
        assert usage["status"] == "healthy"

        # The customer spends 9,000 of their 10,000 credits; last_used is flushed shortly.
        report(client, key_hash, 9000, "req-1")
        deadline = time.monotonic() + 10
        while (usage := seed.key_manager.check_customer_usage(key_hash))["last_used"] is None:
            assert time.monotonic() < deadline, "last_used never appeared"
            time.sleep(0.1)
        assert (usage["spent"], usage["usage_percentage"]) == (90, 90)
        assert usage["status"] == "warning"

        # The scheduled monitoring job reads the same figures.
        seed.CUSTOMERS.append(
            {"id": "cust_67890", "email": email, "plan": "pro", "key_hash": key_hash}
        )
        seed.monitor_customer_usage()
        assert calls("update_customer_usage_in_db")[0][1]["spent"] == 90
        assert calls("send_usage_warning_email") == [(email, usage)]
        assert calls("suggest_plan_upgrade") == [(email, "pro")]
        assert calls("handle_customer_overage") == []

        # Upgrade, suspend and reactivate reach the key that verify sees.
        assert seed.key_manager.upgrade_customer_plan(key_hash, "enterprise") is True
        upgraded = seed.key_manager.check_customer_usage(key_hash)
        assert (upgraded["limit"], upgraded["usage_percentage"]) == (500, 18)
        assert seed.key_manager.suspend_customer(key_hash) is True
        assert verify(client, api_key) == "DISABLED"
        assert seed.key_manager.reactivate_customer(key_hash) is True
        assert verify(client, api_key) == "VALID"
        assert client.get(f"/v1/keys/{key_hash}").json()["data"]["name"] == ("Enterprise Plan Key")

    insights = seed.generate_usage_insights()
    assert insights["upgrade_candidates"] == []  # 18% of the enterprise limit
    assert insights["at_risk_customers"] == []
    # The plaintext key went to the customer, never into the server's output.
    assert api_key not in server.output


def test_the_multi_tenant_manager_and_failures_as_the_seed_handles_them(server: Server) -> None:
    manager = seed.MultiTenantKeyManager(ROOT_KEY)
    org_keys = manager.create_organization_keys("acme", [{"id": "u1"}, {"id": "u2"}])
    assert set(org_keys) == {"admin", "member_u1", "member_u2"}
    seed.CUSTOMERS.extend(
        {"id": f"acme-{name}", "key_hash": info["hash"]}
        for name, info in (("admin", org_keys["admin"]), ("u1", org_keys["member_u1"]))
    )
    summary = manager.get_org_usage_summary("acme")
    assert summary == {
        "total_spent": 0,
        "total_limit": 600,
        "utilization": 0,
        "member_count": 2,
    }

    # A wrong provisioning key: the seed's onboarding reports the failure, with our message.
    seed.configure(f"{server.base_url}/api/v1/keys", "kp_mgmt_wrong")
    result = seed.complete_customer_onboarding({"id": "c1", "email": "e@x", "plan": "pro"})
    assert result["success"] is False
    assert "Onboarding failed" in result["error"] and '"code":401' in result["error"]
    assert seed.key_manager.check_customer_usage("0" * 64) is None
    assert seed.key_manager.suspend_customer("0" * 64) is False


def test_the_rotation_audit_and_retry_examples(server: Server) -> None:
    # Key rotation (python-dateutil): a customer whose key is over 90 days old gets a new one.
    old = seed.key_manager.onboard_customer("c-old", "starter")
    fresh = seed.key_manager.onboard_customer("c-new", "pro")
    now = datetime.datetime.now()
    seed.CUSTOMERS.extend(
        [
            {
                "id": "c-old",
                "email": "old@x",
                "plan": "starter",
                "key_hash": old["hash"],
                "created": now - datetime.timedelta(days=120),
            },
            {
                "id": "c-new",
                "email": "new@x",
                "plan": "pro",
                "key_hash": fresh["hash"],
                "created": now - datetime.timedelta(days=3),
            },
        ]
    )
    seed.rotate_customer_keys()
    assert calls("alert_security_team") == []
    [(email, new_key, deadline)] = calls("send_key_rotation_notification")
    assert email == "old@x" and new_key.startswith("kp_live_")
    assert datetime.timedelta(hours=23) < deadline - now < datetime.timedelta(hours=25)
    [(task, payload)] = calls("schedule_task")
    assert task == "deactivate_old_key" and payload["key_hash"] == old["hash"]
    assert verify_with(server, new_key) == "VALID"

    # The security audit lists the keys, then compares their aware created_at with the naive
    # datetime.now(): that comparison is the seed's own bug (AnyAPI's timestamps carry a "Z"
    # too), so it raises TypeError there as here, after its first checks ran.
    assert len(seed.key_manager.list_all_keys()) == 3
    with pytest.raises(TypeError, match="offset-naive and offset-aware"):
        seed.security_audit()

    # Retries (tenacity): a good call goes through at once.
    robust = seed.RobustKeyManager(ROOT_KEY)
    created = robust.create_key_with_retry("c-robust", "enterprise")
    assert created["monthly_limit"] == 500
    # A refused call is tried three times, then tenacity gives up (the seed's waits of 4-10 s
    # replaced by none, so the test does not sleep).
    seed.configure(f"{server.base_url}/api/v1/keys", "kp_mgmt_wrong")
    refused = seed.RobustKeyManager("kp_mgmt_wrong")
    quick = seed.RobustKeyManager.create_key_with_retry.retry_with(wait=tenacity.wait_none())
    with pytest.raises(tenacity.RetryError) as gave_up:
        quick(refused, "c-refused", "pro")
    assert gave_up.value.last_attempt.attempt_number == 3
    assert "Onboarding failed" in str(gave_up.value.last_attempt.exception())

    # safe_key_operation turns failures into the seed's answers.
    def fetch_with_wrong_key() -> None:
        url = f"{server.base_url}/api/v1/keys/"
        requests.get(url, headers=seed.headers, timeout=10).raise_for_status()

    assert refused.safe_key_operation(fetch_with_wrong_key) == {
        "error": "Invalid provisioning key",
        "retry": False,
    }

    def unreachable() -> None:
        requests.get(f"http://127.0.0.1:{free_port()}/api/v1/keys/", timeout=5)

    assert refused.safe_key_operation(unreachable) == {"error": "Connection failed", "retry": True}


def verify_with(server: Server, key: str) -> str:
    with httpx.Client(
        base_url=server.base_url, headers={"Authorization": f"Bearer {ROOT_KEY}"}
    ) as client:
        return verify(client, key)
