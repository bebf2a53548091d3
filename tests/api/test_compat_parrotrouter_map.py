"""ParrotRouter (seed 004) documents in, native ``/v1`` documents out: the pure mapping."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from keyplane.api.compat import parrotrouter_map as mapping
from keyplane.errors import ValidationError


def native(body: dict[str, Any], retention: int | None = None) -> dict[str, Any]:
    return mapping.key_document(body, audit_retention_days=retention)


def test_the_flat_permissions_of_the_first_example() -> None:
    body = {
        "name": "Production App Key",
        "description": "Key for production application",
        "permissions": {
            "models": ["gpt-4-turbo-preview", "gpt-3.5-turbo", "claude-3-opus"],
            "features": ["chat_completion", "embeddings", "structured_outputs"],
            "operations": ["read", "write"],
            "max_requests_per_minute": 100,
            "max_requests_per_day": 10000,
            "max_cost_per_day": 50.00,
        },
        "restrictions": {
            "ip_whitelist": ["203.0.113.0/24"],
            "domains": ["app.yourcompany.com", "*.yourcompany.com"],
            "referrers": ["https://app.yourcompany.com/*"],
            "user_agents": ["YourApp/1.0"],
        },
        "metadata": {"environment": "production", "team": "backend"},
        "expires_at": "2024-12-31T23:59:59Z",
    }
    assert native(body) == {
        "name": "Production App Key",
        "description": "Key for production application",
        "expires_at": "2024-12-31T23:59:59Z",
        "metadata": {"environment": "production", "team": "backend"},
        "policy": {
            "models": {"allow": ["gpt-4-turbo-preview", "gpt-3.5-turbo", "claude-3-opus"]},
            "features": {"allow": ["chat_completion", "embeddings", "structured_outputs"]},
            "operations": ["read", "write"],
            "rate_limits": [
                {"name": "per_minute", "limit": 100, "period": "1m"},
                {"name": "per_day", "limit": 10000, "period": "1d"},
            ],
            "budget": {"credit_limit": 50.00, "reset": "daily"},
            "network": {
                "ip_allow": ["203.0.113.0/24"],
                "domains": ["app.yourcompany.com", "*.yourcompany.com"],
                "referrers": ["https://app.yourcompany.com/*"],
                "user_agents": ["YourApp/1.0"],
            },
        },
    }


def test_fine_grained_models_and_routing() -> None:
    permissions = {
        "models": {
            "allowed": ["gpt-4-turbo-preview"],
            "denied": ["dall-e-*"],
            "cost_limits": {
                "gpt-4-turbo-preview": {"max_requests_per_day": 100, "max_cost_per_day": 10.0},
                "gpt-3.5-turbo": {"max_tokens_per_request": 2000, "max_cost_per_day": None},
            },
        },
        "routing": {
            "allow_auto_routing": True,
            "allowed_providers": ["openai", "anthropic"],
            "force_provider": None,
            "fallback_allowed": True,
        },
    }
    assert native({"name": "k", "permissions": permissions})["policy"] == {
        "models": {
            "allow": ["gpt-4-turbo-preview"],
            "deny": ["dall-e-*"],
            "cost_limits": {
                "gpt-4-turbo-preview": {"max_requests_per_day": 100, "max_cost_per_day": 10.0},
                "gpt-3.5-turbo": {"max_tokens_per_request": 2000},
            },
        },
        # force_provider None is "no forced provider": no rule.
        "routing": {
            "allow_auto_routing": True,
            "allowed_providers": ["openai", "anthropic"],
            "fallback_allowed": True,
        },
    }


def test_features_as_a_map_of_booleans_become_allow_and_deny() -> None:
    permissions = {
        "features": {"chat_completion": True, "vision": False, "streaming": True},
        "advanced_features": {"custom_presets": True, "priority_queue": False},
        "data_access": {"log_requests": True, "log_responses": False},
    }
    assert native({"name": "k", "permissions": permissions})["policy"] == {
        "features": {"allow": ["chat_completion", "streaming"], "deny": ["vision"]},
        "advanced_features": {"custom_presets": True, "priority_queue": False},
        "data_access": {"log_requests": True, "log_responses": False},
    }


def test_rate_limits_windows_burst_tokens_costs_concurrency() -> None:
    rate_limits = {
        "requests": {"per_second": 10, "per_hour": 1000, "burst_size": 20},
        "tokens": {"input_per_minute": 100000, "total_per_day": 10000000},
        "costs": {"per_request_max": 1.0, "per_month_max": 1000.0, "alert_threshold": 0.8},
        "concurrency": {"max_parallel_requests": 5, "max_queued_requests": 20},
    }
    assert native({"name": "k", "rate_limits": rate_limits})["policy"] == {
        # burst_size goes on the shortest window: 20 at once, refilled at 10 a second.
        "rate_limits": [
            {"name": "per_second", "limit": 10, "period": "1s", "burst": 20},
            {"name": "per_hour", "limit": 1000, "period": "1h"},
        ],
        "token_limits": {"input_per_minute": 100000, "total_per_day": 10000000},
        "costs": {"per_request_max": 1.0, "per_month_max": 1000.0, "alert_threshold": 0.8},
        "concurrency": {"max_parallel": 5, "max_queued": 20},
    }


def test_a_burst_without_a_window_is_refused() -> None:
    with pytest.raises(ValidationError, match="burst_size"):
        native({"name": "k", "rate_limits": {"requests": {"burst_size": 5}}})


def test_the_security_config() -> None:
    security = {
        "network_restrictions": {
            "ip_whitelist": ["203.0.113.0/24", "2001:db8::/32"],
            "ip_blacklist": ["192.0.2.0/24"],
            "require_https": True,
            "allowed_origins": ["https://app.company.com"],
            "blocked_countries": ["XX", "YY"],
        },
        "authentication": {
            "require_signature": True,
            "signature_algorithm": "HMAC-SHA256",
            "require_timestamp": True,
            "max_timestamp_age": 300,
            "require_nonce": True,
        },
        "domain_restrictions": {
            "allowed_domains": ["*.company.com"],
            "allowed_referrers": ["https://app.company.com/*"],
            "user_agent_pattern": r"^YourApp/\d+\.\d+",
        },
        "audit": {
            "log_all_requests": True,
            "log_failures": True,
            "alert_on_suspicious": True,
            "retention_days": 90,
        },
    }
    assert native({"name": "k", "security": security}, retention=365)["policy"] == {
        "network": {
            "ip_allow": ["203.0.113.0/24", "2001:db8::/32"],
            "ip_deny": ["192.0.2.0/24"],
            "require_https": True,
            "origins": ["https://app.company.com"],
            "countries_deny": ["XX", "YY"],
            "domains": ["*.company.com"],
            "referrers": ["https://app.company.com/*"],
            "user_agent": r"^YourApp/\d+\.\d+",
        },
        "signing": {
            "required": True,
            "algorithm": "HMAC-SHA256",
            "require_timestamp": True,
            "max_timestamp_age": 300,
            "require_nonce": True,
        },
        "data_access": {"log_requests": True},
    }


@pytest.mark.parametrize("flag", ["log_failures", "alert_on_suspicious"])
def test_audit_switches_keyplane_cannot_turn_off_are_refused(flag: str) -> None:
    with pytest.raises(ValidationError, match=flag) as refused:
        native({"name": "k", "security": {"audit": {flag: False}}})
    assert refused.value.code == "UNSUPPORTED_FIELD"


def test_a_retention_longer_than_the_deployments_is_refused_not_promised() -> None:
    body = {"name": "k", "security": {"audit": {"retention_days": 90}}}
    with pytest.raises(ValidationError, match="30 days"):
        native(body, retention=30)
    assert "policy" not in native(body, retention=90)
    assert "policy" not in native(body, retention=None)  # kept for ever


def test_the_same_rule_from_two_places_is_refused() -> None:
    body = {
        "name": "k",
        "restrictions": {"ip_whitelist": ["203.0.113.0/24"]},
        "security": {"network_restrictions": {"ip_whitelist": ["198.51.100.0/24"]}},
    }
    with pytest.raises(ValidationError, match="ip_whitelist") as refused:
        native(body)
    assert refused.value.code == "CONFLICTING_FIELDS"
    twice = {
        "name": "k",
        "permissions": {"max_requests_per_minute": 100},
        "rate_limits": {"requests": {"per_minute": 60}},
    }
    with pytest.raises(ValidationError, match="per_minute"):
        native(twice)


def test_per_environment_permissions() -> None:
    development = native(
        {
            "name": "Development Environment Key",
            "environment": "development",
            "permissions": {"all_models": True, "all_features": True, "max_cost_per_day": 10.0},
        }
    )
    assert development == {
        "name": "Development Environment Key",
        "environment": "test",
        "tags": ["environment:development"],
        "policy": {"budget": {"credit_limit": 10.0, "reset": "daily"}},
    }
    production = native(
        {
            "name": "Production Environment Key",
            "environment": "production",
            "permissions": {"models": ["gpt-4-turbo-preview"], "require_approval": True},
        }
    )
    assert production["environment"] == "live"
    assert production["policy"] == {
        "models": {"allow": ["gpt-4-turbo-preview"]},
        "require_approval": True,
    }
    with pytest.raises(ValidationError, match="all_models"):
        native({"name": "k", "permissions": {"all_models": True, "models": ["a"]}})


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"type": "team"}, "type"),
        ({"scope": {"team_id": "team_frontend"}}, "scope"),
        ({"members": [{"user_id": "user_123"}]}, "members"),
        ({"permissions": {"inherit_from": "team_default"}}, "permissions.inherit_from"),
        ({"permissions": {"overrides": {"models": ["a"]}}}, "permissions.overrides"),
    ],
)
def test_team_keys_are_refused_naming_teams(body: dict[str, Any], named: str) -> None:
    with pytest.raises(ValidationError, match="teams") as refused:
        native({"name": "Frontend Team Key", **body})
    assert refused.value.code == "TEAMS_NOT_AVAILABLE"
    assert named in refused.value.message


def test_an_update_changes_only_the_rules_it_names() -> None:
    current = {
        "models": {"allow": ["gpt-4"], "deny": ["dall-e-*"]},
        "rate_limits": [
            {"name": "per_minute", "limit": 100, "period": "1m"},
            {"name": "per_day", "limit": 10000, "period": "1d"},
        ],
        "budget": {"credit_limit": 50, "reset": "daily"},
    }
    body = {
        "permissions": {"max_requests_per_day": 5000, "models": ["gpt-3.5-turbo"]},
        "expires_at": "2024-06-30T23:59:59Z",
    }
    assert mapping.update_document(body, current, audit_retention_days=None) == {
        "expires_at": "2024-06-30T23:59:59Z",
        "policy": {
            "models": {"allow": ["gpt-3.5-turbo"], "deny": ["dall-e-*"]},
            "rate_limits": [
                {"name": "per_minute", "limit": 100, "period": "1m"},
                {"name": "per_day", "limit": 5000, "period": "1d"},
            ],
            "budget": {"credit_limit": 50, "reset": "daily"},
        },
    }
    assert mapping.update_document({"name": "n"}, current, audit_retention_days=None) == {
        "name": "n"
    }


def test_rotation_config_is_the_policy_rotation_section() -> None:
    config = {
        "enabled": True,
        "schedule": "0 0 1 * *",
        "strategy": "gradual",
        "notification_channels": ["email:security@company.com"],
        "grace_period_hours": 24,
        "auto_update_apps": True,
    }
    assert mapping.rotation_document(config) == {"rotation": config}


@pytest.mark.parametrize(
    ("invalidate_old", "hours", "grace"),
    [
        (False, 48, timedelta(hours=48)),
        (False, None, timedelta(hours=24)),
        (True, None, timedelta(0)),
        (True, 0, timedelta(0)),
        (None, None, timedelta(0)),
        (None, 2, timedelta(hours=2)),
    ],
)
def test_rotation_grace(invalidate_old: bool | None, hours: int | None, grace: timedelta) -> None:
    assert mapping.rotation_grace(invalidate_old, hours) == grace


def test_invalidating_the_old_key_with_a_grace_period_is_a_contradiction() -> None:
    with pytest.raises(ValidationError, match="invalidate_old"):
        mapping.rotation_grace(True, 48)


@pytest.mark.parametrize(
    ("text", "seconds"), [("1h", 3600), ("30m", 1800), ("2d", 172800), (90, 90)]
)
def test_auto_enable_after(text: str | int, seconds: int) -> None:
    assert mapping.auto_enable_after(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "1w", "31d", "-1h", "1e9", "1h " * 5, "\u0661h"])
def test_auto_enable_after_refuses_what_is_no_duration(text: str) -> None:
    with pytest.raises(ValidationError, match="auto_enable_after"):
        mapping.auto_enable_after(text)


def test_seed_event_types_map_to_audit_actions_and_back() -> None:
    assert mapping.audit_actions(["usage", "permission_change", "security_alert"]) == (
        "budget.*",
        "rate_limit.*",
        "costs.*",
        "key.updated",
        "verify.refused",
        "key.disabled",
        "key.revoked",
    )
    assert mapping.audit_actions(["key.rotated", "key.rotated"]) == ("key.rotated",)
    assert mapping.event_category("budget.exhausted") == "usage"
    assert mapping.event_category("key.updated") == "permission_change"
    assert mapping.event_category("verify.refused") == "security_alert"
    assert mapping.event_category("key.created") is None
