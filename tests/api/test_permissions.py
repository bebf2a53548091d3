"""Permissions beyond scopes on verify: features, operations, data access, routing, directives."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.test_auth import as_gateway
from tests.conftest import Api

PERMISSIONS: dict[str, Any] = {
    "features": {"allow": ["chat_completion", "embeddings", "streaming"], "deny": ["vision"]},
    "advanced_features": {"batch_processing": True, "priority_queue": False},
    "data_access": {"log_requests": True, "log_responses": False, "export_data": False},
    "operations": ["read", "write"],
    "routing": {
        "allow_auto_routing": False,
        "allowed_providers": ["openai", "anthropic"],
        "force_provider": None,
        "fallback_allowed": False,
    },
}

DIRECTIVES = {
    "data_access": {"log_requests": True, "log_responses": False, "export_data": False},
    "routing": {
        "allow_auto_routing": False,
        "allowed_providers": ["openai", "anthropic"],
        "force_provider": None,
        "fallback_allowed": False,
    },
    "advanced_features": {"batch_processing": True, "priority_queue": False},
}


async def test_the_policy_round_trips_and_valid_verdicts_carry_directives(api: Api) -> None:
    key, data = await api.create_key(policy=PERMISSIONS)
    assert data["policy"] == PERMISSIONS
    verdict = await api.verify(key, features=["chat_completion"], operation="read")
    assert verdict["code"] == "VALID", verdict
    assert verdict["directives"] == DIRECTIVES
    plain, _ = await api.create_key()
    assert (await api.verify(plain, feature="vision", provider="x"))["directives"] == {}


RULE_CASES: list[tuple[dict[str, Any], str]] = [
    ({"feature": "chat_completion"}, "VALID"),
    ({"features": ["embeddings", "streaming"]}, "VALID"),
    ({"feature": "batch_processing"}, "VALID"),  # advanced_features on adds to allow
    ({"feature": "vision"}, "FEATURE_NOT_ALLOWED"),  # denied
    ({"feature": "web_search"}, "FEATURE_NOT_ALLOWED"),  # not in allow
    ({"features": ["chat_completion", "priority_queue"]}, "FEATURE_NOT_ALLOWED"),
    ({"operation": "write"}, "VALID"),
    ({"operation": "admin"}, "OPERATION_NOT_ALLOWED"),
    ({"operation": "export_data"}, "OPERATION_NOT_ALLOWED"),  # data_access false
    ({"operation": "log_requests"}, "VALID"),  # data_access true, though not listed
    ({"provider": "openai"}, "VALID"),
    ({"provider": "mistral"}, "PROVIDER_NOT_ALLOWED"),
    ({"provider": "openai", "auto_routing": True}, "PROVIDER_NOT_ALLOWED"),
    ({"provider": "anthropic", "fallback": True}, "PROVIDER_NOT_ALLOWED"),
    ({}, "VALID"),  # nothing named: nothing to enforce, directives tell the gateway
]


async def test_each_rule_is_enforced_when_verify_is_told(api: Api) -> None:
    key, _ = await api.create_key(policy=PERMISSIONS)
    for context, code in RULE_CASES:
        verdict = await api.verify(key, **context)
        assert verdict["code"] == code, (context, verdict)
        assert verdict["valid"] is (code == "VALID")
        if code != "VALID":
            assert verdict["directives"] == {}


async def test_force_provider_and_plan_merge(api: Api) -> None:
    plan = {"routing": {"allowed_providers": ["openai", "anthropic"]}, "operations": ["read"]}
    response = await api.client.post("/v1/plans", json={"name": "p", "policy": plan})
    assert response.status_code == 201, response.text
    key, data = await api.create_key(plan="p", policy={"routing": {"force_provider": "anthropic"}})
    assert data["effective_policy"]["routing"] == {  # type: ignore[index]
        "allowed_providers": ["openai", "anthropic"],
        "force_provider": "anthropic",
    }
    assert (await api.verify(key, provider="openai"))["code"] == "PROVIDER_NOT_ALLOWED"
    assert (await api.verify(key, provider="anthropic"))["code"] == "VALID"
    assert (await api.verify(key, operation="write"))["code"] == "OPERATION_NOT_ALLOWED"


HOSTILE_POLICIES: list[dict[str, Any]] = [
    {"features": {"allow": ["x" * 65]}},
    {"features": {"allow": ["Chat Completion"]}},
    {"features": {"deny": [f"f{i}" for i in range(101)]}},
    {"advanced_features": {f"f{i}": True for i in range(101)}},
    {"advanced_features": {"batch_processing": "yes"}},
    {"data_access": {"log_responses": 0}},
    {"data_access": {"read_minds": True}},
    {"operations": ["read"] * 101},
    {"routing": {"allowed_providers": "openai"}},
    {"routing": {"force_provider": "x" * 100}},
    {"require_approval": "true"},
    {"concurrency": {"max_parallel": 1, "max_queued": 10_001}},
    {"concurrency": {"max_parallel": 1, "max_queued": -1}},
]

HOSTILE_CONTEXTS: list[dict[str, Any]] = [
    {"features": ["a"] * 33},
    {"feature": "y" * 65},
    {"feature": "DROP TABLE"},
    {"operation": 5},
    {"provider": ""},
    {"auto_routing": "yes"},
    {"wait_ms": 30_001},
    {"wait_ms": -1},
    {"wait_ms": 1.5},
]


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)  # validation only
async def test_hostile_policies_and_verify_context_are_422(api: Api) -> None:
    for policy in HOSTILE_POLICIES:
        response = await api.client.post("/v1/keys", json={"name": "k", "policy": policy})
        assert response.status_code == 422, (policy, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    key, _ = await api.create_key(policy=PERMISSIONS)
    for fields in HOSTILE_CONTEXTS:
        response = await api.client.post("/v1/verify", json={"key": key, **fields})
        assert response.status_code == 422, (fields, response.text)
        assert response.headers["content-type"] == "application/problem+json"


async def test_forward_auth_reads_the_context_and_answers_directives(api: Api) -> None:
    key, _ = await api.create_key(policy=PERMISSIONS)
    allowed = await api.client.get(
        "/v1/auth",
        headers=as_gateway(
            key,
            **{
                "X-Keyplane-Features": "chat_completion, streaming",
                "X-Keyplane-Operation": "read",
                "X-Keyplane-Provider": "openai",
            },
        ),
    )
    assert allowed.status_code == 200, allowed.text
    assert allowed.headers["X-Keyplane-Log-Requests"] == "true"
    assert allowed.headers["X-Keyplane-Log-Responses"] == "false"
    assert allowed.headers["X-Keyplane-Export-Data"] == "false"
    assert allowed.headers["X-Keyplane-Allowed-Providers"] == "openai, anthropic"
    assert allowed.headers["X-Keyplane-Allow-Auto-Routing"] == "false"
    assert allowed.headers["X-Keyplane-Fallback-Allowed"] == "false"
    assert "X-Keyplane-Force-Provider" not in allowed.headers
    assert (
        allowed.headers["X-Keyplane-Advanced-Features"]
        == "batch_processing=true, priority_queue=false"
    )
    for header, value, code in (
        ("X-Keyplane-Features", "vision", "FEATURE_NOT_ALLOWED"),
        # delete_data has no data_access flag here: the operations list decides.
        ("X-Keyplane-Operation", "delete_data", "OPERATION_NOT_ALLOWED"),
        ("X-Keyplane-Operation", "export_data", "OPERATION_NOT_ALLOWED"),
        ("X-Keyplane-Provider", "mistral", "PROVIDER_NOT_ALLOWED"),
        ("X-Keyplane-Auto-Routing", "true", "PROVIDER_NOT_ALLOWED"),
    ):
        response = await api.client.get("/v1/auth", headers=as_gateway(key, **{header: value}))
        assert response.status_code == 403, (header, value, response.text)
        assert response.headers["X-Keyplane-Code"] == code
        assert "X-Keyplane-Log-Responses" not in response.headers
    for header, value in (
        ("X-Keyplane-Features", ",".join(["f"] * 33)),
        ("X-Keyplane-Features", "x" * 5000),
        ("X-Keyplane-Operation", "Read Write"),
        ("X-Keyplane-Provider", "p" * 65),
        ("X-Keyplane-Fallback", "maybe"),
    ):
        response = await api.client.get("/v1/auth", headers=as_gateway(key, **{header: value}))
        assert response.status_code == 400, (header, response.text)
        assert value not in response.text
