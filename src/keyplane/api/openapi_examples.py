"""One request and one response example per operation of the OpenAPI document.

Shaped after real answers of a fresh server (a key on plan ``pro``, a vault credential), so the
examples of one object agree across operations. ``tests/api/test_openapi_document.py`` validates
each against the schema it sits beside, so an example that drifts from the models fails there.
"""

from __future__ import annotations

from typing import Any

_AT = "2026-03-01T12:00:00Z"
_ORG = "org_01m8yzy9g53q6tm7n43a7k5k54"
_PROJECT = "proj_01m8yzy9g80bxdxqm2jr45e50p"
_KEY_ID = "key_01m8yzy9jneaeqfvbks33zz3cy"
_HASH = "42c8eafe33b634995b3cdba66f872cb73a5aa08b481a974de8f7bdd333792e9b"
# From a throwaway server: an example of the format, valid nowhere.
_SECRET = "kp_live_FOlULxrnjEoibU4dwsdhEXgrYeu8Ve3kxTBU"  # noqa: S105
_CREDENTIAL_ID = "cred_01m8yzy9vd8sf31hr72ts9thf7"
_LEASE_ID = "lease_01m8yzy9wjc5xsgrkbx28dxq51"

_POLICY = {
    "rate_limits": [{"name": "per-minute", "limit": 60, "period": "1m"}],
    "budget": {"credit_limit": 50, "reset": "monthly"},
}

KEY = {
    "id": _KEY_ID,
    "hash": _HASH,
    "start": "kp_live_FOlU",
    "end": "xTBU",
    "org_id": _ORG,
    "project_id": _PROJECT,
    "name": "Acme production",
    "label": None,
    "description": None,
    "owner": "cus_123",
    "environment": "live",
    "tags": ["prod"],
    "metadata": {"tier": "pro"},
    "scopes": ["chat:write"],
    "status": "active",
    "disabled_reason": None,
    "auto_enable_at": None,
    "revoked_reason": None,
    "revoked_at": None,
    "expires_at": None,
    "created_at": _AT,
    "updated_at": _AT,
    "last_used_at": None,
    "plan": "pro",
    "policy": {},
    "effective_policy": _POLICY,
    "usage": {"total": 0.25, "daily": 0.25, "weekly": 0.25, "monthly": 0.25},
    "limit": 50,
    "limit_remaining": 49.75,
    "limit_reset": "monthly",
}
_ROTATION_IN = {
    "enabled": True,
    "schedule": "0 0 1 * *",
    "strategy": "gradual",
    "notification_channels": [
        "email:security@company.com",
        "webhook:https://api.company.com/key-rotation",
    ],
    "grace_period_hours": 24,
    "auto_update_apps": True,
}
_ROTATION = {
    "key_id": _KEY_ID,
    "max_age_days": None,
    **_ROTATION_IN,
    "next_rotation_at": "2026-04-01T00:00:00Z",
    "last_rotated_at": None,
    "pending": None,
}
_PLAN_ROTATION = {
    "plan_id": "plan_01jf0000000000000000000000",
    "plan": "pro",
    "enabled": True,
    "schedule": None,
    "max_age_days": 90,
    "strategy": "gradual",
    "grace_period_hours": 24,
    "notification_channels": [],
    "auto_update_apps": False,
    "keys_following": None,
}
_CLAIMED = {
    "key": "kp_live_3vghVLMOo0DyKOhtLgEXj9lqH3r6VU0fAEqZ",
    "key_id": _KEY_ID,
    "old_key_expires_at": "2026-03-02T00:00:00Z",
}
_REVOKED = KEY | {"status": "revoked", "revoked_reason": "leaked", "revoked_at": _AT}
_DISABLED = KEY | {"status": "disabled", "disabled_reason": "late payment"}

PLAN = {
    "id": "plan_01m8yzy9j48xfdmty73zb01772",
    "name": "pro",
    "description": "Pro tier",
    "policy": _POLICY,
    "created_at": _AT,
    "updated_at": _AT,
}
MANAGEMENT_KEY = {
    "id": "mk_01m8yzy9tcdgej2ygfw5a9e4nb",
    "org_id": _ORG,
    "project_id": None,
    "name": "billing",
    "start": "kp_mgmt_rsCr",
    "end": "4RKW",
    "scopes": ["keys:read", "usage:write"],
    "created_by": "root",
    "created_at": _AT,
    "revoked_at": None,
    "last_used_at": None,
}
PROJECT = {
    "id": "proj_01m8yzy9tp96v2ara24cv7m1ax",
    "org_id": _ORG,
    "name": "staging",
    "key_prefix": "stg",
    "created_at": _AT,
}
_CREDENTIAL_USAGE = {
    "daily_used": 12,
    "daily_limit": 1000,
    "daily_remaining": 988,
    "monthly_used": 12,
    "monthly_limit": None,
    "monthly_remaining": None,
    "total": 12,
    "live_leases": 1,
    "max_concurrent": None,
}
CREDENTIAL = {
    "id": _CREDENTIAL_ID,
    "provider": "openai",
    "alias": "team-a",
    "secret_hint": "sk-e...6789",
    "environment": None,
    "tags": ["team-a"],
    "metadata": {},
    "weight": 1,
    "daily_limit": 1000,
    "monthly_limit": None,
    "max_concurrent": None,
    "project_id": None,
    "shared_with_projects": False,
    "status": "active",
    "status_reason": None,
    "cooldown_until": None,
    "has_capacity": True,
    "usage": _CREDENTIAL_USAGE,
    "master_key_id": "c3a3bf933e7edf1f",
    "created_at": _AT,
    "updated_at": _AT,
    "last_used_at": _AT,
    "revoked_at": None,
}
_CREDENTIAL_STATS = {
    "id": _CREDENTIAL_ID,
    "alias": "team-a",
    "provider": "openai",
    "status": "active",
    "has_capacity": True,
    "usage": _CREDENTIAL_USAGE,
    "last_used_at": _AT,
}
_CREDENTIAL_IN = {
    "provider": "openai",
    "alias": "team-a",
    "secret": "sk-example-0123456789",
    "tags": ["team-a"],
    "daily_limit": 1000,
}

_OPENROUTER_KEY = {
    "hash": _HASH,
    "name": "Customer 42",
    "label": "kp_live_FOlU...xTBU",
    "description": None,
    "disabled": False,
    "limit": 25,
    "limit_remaining": 25,
    "limit_reset": "monthly",
    "include_byok_in_limit": False,
    "usage": 0,
    "usage_daily": 0,
    "usage_weekly": 0,
    "usage_monthly": 0,
    "byok_usage": 0,
    "byok_usage_daily": 0,
    "byok_usage_weekly": 0,
    "byok_usage_monthly": 0,
    "created_at": _AT,
    "updated_at": _AT,
    "expires_at": None,
    "last_used": None,
    "creator_user_id": None,
    "workspace_id": _PROJECT,
}
_SERVICE_KEY = {
    "api_key_id_hash": _HASH,
    "api_key_name": "customer-7",
    "api_key_preview": "kp_live_FOlU...xTBU",
    "org_id": _ORG,
    "project_id": _PROJECT,
    "project_name": "default",
    "status": "active",
    "credit_limit": 10,
    "credit_used": 0,
    "credit_remaining": 10,
    "reset_budget_interval": "monthly",
    "expire_key": None,
    "models": ["gpt-4o"],
    "tpm_limit": None,
    "rpm_limit": None,
    "metadata": {},
    "tags": ["trial"],
    "created_at": "2026-03-01 12:00:00.000",
    "updated_at": "2026-03-01 12:00:00.000",
    "last_used_at": None,
}

_WEBHOOK = {
    "id": "whe_01m8yzy9xq4hb3r2v0d9c6k7tz",
    "kind": "webhook",
    "url": "https://billing.example.com/keyplane",
    "events": ["key.*", "budget.exhausted"],
    "description": "billing sync",
    "enabled": True,
    "project": None,
    "disabled_reason": None,
    "failing_since": None,
    "previous_secret_valid_until": None,
    "created_at": _AT,
    "updated_at": _AT,
}
# From a throwaway server: an example of the format, valid nowhere.
_WEBHOOK_SECRET = "whsec_oY7pgJOAJXjpaA10cvy/DZOezxXJd6kVc5+vCg2CCnM="  # noqa: S105
_DELIVERY = {
    "id": "whd_01m8yzya0c2m7w5s3k9n4p8r6q",
    "event_id": "evt_01m8yzy9kwf235y8p54nek2kv2",
    "event_type": "budget.exhausted",
    "status": "delivered",
    "attempts": 1,
    "created_at": _AT,
    "next_attempt_at": None,
    "delivered_at": "2026-03-01T12:00:01Z",
    "last_status_code": 200,
    "last_error": None,
    "history": [
        {
            "number": 1,
            "at": "2026-03-01T12:00:01Z",
            "status_code": 200,
            "latency_ms": 182,
            "error": None,
            "next_attempt_at": None,
        }
    ],
}
_SIGNING_SECRET = {
    "id": "sigsec_01m8yzya1f6e2d9x4b7c3v5n8m",
    "owner": "cus_123",
    "description": "outbound webhooks of cus_123",
    "project_id": _PROJECT,
    "created_at": _AT,
    "rotated_at": None,
    "previous_expires_at": None,
}
_AUDIT_ENTRY = {
    "id": "aud_01m8yzya2h3k5m7p9r1t3v5x7z",
    "seq": 42,
    "occurred_at": _AT,
    "org_id": _ORG,
    "project_id": _PROJECT,
    "actor": {
        "type": "management_key",
        "id": "mk_01m8yzy9tcdgej2ygfw5a9e4nb",
        "name": "billing",
        "ip": "203.0.113.7",
        "user_agent": "keyplane-cli/0.1.0",
    },
    "request_id": "req_01m8yzy9kh7wtthgt30ak5jrep",
    "action": "key.revoked",
    "target": {"type": "key", "id": _KEY_ID},
    "outcome": "success",
    "count": 1,
    "details": {"reason": "leaked"},
    "prev_hash": "9f1c0e7a2b4d6f8a1c3e5a7b9d1f3a5c7e9b1d3f5a7c9e1b3d5f7a9c1e3b5d7f",
    "hash": "0d2f4a6c8e1b3d5f7a9c1e3b5d7f9a1c3e5b7d9f1a3c5e7b9d1f3a5c7e9b1d3f",
}
_LEAK_REPORT = {
    "token": _SECRET,
    "type": "keyplane_api_key",
    "url": "https://github.com/octocat/hello/blob/12345600b9cbe38a219f39a9941c9319b600c002/app.py",
    "source": "content",
}
_LEAK_LABEL = {
    "token_hash": "9a3f1b0e6d0c4f6b8e2a7d5c3b1a09f8e7d6c5b4a3928170f6e5d4c3b2a19080",
    "token_type": "keyplane_api_key",
    "label": "true_positive",
}
_SECURITY_REPORT = {
    "org_id": _ORG,
    "project_id": None,
    "generated_at": _AT,
    "thresholds": {
        "dormant_days": 90,
        "stale_days": 180,
        "expiring_days": 14,
        "management_unused_days": 90,
    },
    "keys_scanned": 1200,
    "counts": {
        "dormant_key": 31,
        "unlimited_key": 1,
        "stale_key": 0,
        "wildcard_scope_key": 0,
        "unrestricted_network_key": 0,
        "expiring_key": 2,
        "dormant_management_key": 0,
        "wildcard_management_key": 1,
    },
    "issues": [
        {
            "type": "unlimited_key",
            "severity": "high",
            "target_type": "key",
            "target_id": _KEY_ID,
            "project_id": _PROJECT,
            "name": "acme production",
        }
    ],
    "truncated": True,
}
_AUDIT_PAGE = {"data": [_AUDIT_ENTRY], "next_cursor": None, "has_more": False}
_LATENCY = {"p50": 412.0, "p95": 1210.0, "p99": 1980.0}
_MEASURES = {
    "requests": 120,
    "errors": 3,
    "error_rate": 0.025,
    "cost": 4.5,
    "input_tokens": 14400,
    "output_tokens": 36000,
    "avg_latency_ms": 530.25,
    **_LATENCY,
}

#: (request body, response body) by operation id; ``None`` where the operation has no body.
EXAMPLES: dict[str, tuple[Any, Any]] = {
    "healthz_healthz_get": (None, {"status": "ok", "version": "0.1.0"}),
    "readyz_readyz_get": (None, {"status": "ready"}),
    "metrics_metrics_get": (None, None),
    "create_key_v1_keys_post": (
        {
            "name": "Acme production",
            "owner": "cus_123",
            "tags": ["prod"],
            "scopes": ["chat:write"],
            "metadata": {"tier": "pro"},
            "plan": "pro",
        },
        {"key": _SECRET, "data": KEY},
    ),
    "list_keys_v1_keys_get": (None, {"data": [KEY], "next_cursor": None, "has_more": False}),
    "get_key_v1_keys__id_or_hash__get": (None, {"data": KEY}),
    "update_key_v1_keys__id_or_hash__patch": (
        {"tags": ["prod", "eu"], "policy": {"budget": {"credit_limit": 100}}},
        {"data": KEY},
    ),
    "revoke_key_v1_keys__id_or_hash__delete": ({"reason": "leaked"}, {"data": _REVOKED}),
    "rotate_key_v1_keys__id_or_hash__rotate_post": (
        {"grace_period_seconds": 3600},
        {
            "key": "kp_live_3vghVLMOo0DyKOhtLgEXj9lqH3r6VU0fAEqZ",
            "data": KEY,
            "old_key_expires_at": "2026-03-01T13:00:00Z",
        },
    ),
    "set_key_rotation_v1_keys__id_or_hash__rotation_post": (
        _ROTATION_IN,
        {"data": _ROTATION},
    ),
    "get_key_rotation_v1_keys__id_or_hash__rotation_get": (
        None,
        {
            "data": _ROTATION
            | {
                "last_rotated_at": "2026-03-01T00:00:00Z",
                "pending": {
                    "state": "pending",
                    "reason": "scheduled",
                    "rotated_at": "2026-03-01T00:00:00Z",
                    "old_key_expires_at": "2026-03-02T00:00:00Z",
                    "claim_until": "2026-03-02T00:00:00Z",
                    "self_claim": True,
                },
            }
        },
    ),
    "claim_key_rotation_v1_keys__id_or_hash__rotation_claim_post": (None, _CLAIMED),
    "set_plan_rotation_v1_plans__plan__rotation_post": (
        {"max_age_days": 90, "strategy": "gradual", "grace_period_hours": 24},
        {"data": _PLAN_ROTATION | {"keys_following": 12}},
    ),
    "get_plan_rotation_v1_plans__plan__rotation_get": (None, {"data": _PLAN_ROTATION}),
    "claim_own_rotation_v1_self_rotation_claim_post": (None, _CLAIMED),
    "list_jobs_v1_jobs_get": (
        None,
        {
            "data": [
                {
                    "name": "rotation.sweep",
                    "kind": "rotation.sweep",
                    "schedule": "every 60 s",
                    "next_run_at": "2026-03-01T12:01:00Z",
                    "last_run_at": _AT,
                    "last_finished_at": _AT,
                    "last_outcome": "success",
                    "last_error": None,
                    "attempts": 0,
                    "running": False,
                }
            ]
        },
    ),
    "disable_key_v1_keys__id_or_hash__disable_post": (
        {"reason": "late payment", "auto_enable_after": 86400},
        {"data": _DISABLED},
    ),
    "enable_key_v1_keys__id_or_hash__enable_post": (None, {"data": KEY}),
    "reset_key_limits_v1_keys__id_or_hash__limits_reset_post": (
        {"windows": ["per-minute"], "concurrency": True},
        {
            "data": {
                "key_id": _KEY_ID,
                "windows": ["per-minute"],
                "concurrency": True,
                "slots_released": 2,
            }
        },
    ),
    "adjust_key_credits_v1_keys__id_or_hash__credits_post": (
        {"amount": 25, "reason": "goodwill credit for the outage of 2026-02-28"},
        {
            "data": {
                "id": "adj_01m8yzy9kh7wtthgt30ak5jrfq",
                "key_id": _KEY_ID,
                "amount": 25,
                "reason": "goodwill credit for the outage of 2026-02-28",
                "created_at": _AT,
            }
        },
    ),
    "approve_key_v1_keys__id_or_hash__approve_post": (None, {"data": KEY}),
    "reject_key_v1_keys__id_or_hash__reject_post": (
        {"reason": "not needed"},
        {"data": KEY | {"status": "revoked", "revoked_reason": "not needed", "revoked_at": _AT}},
    ),
    "verify_v1_verify_post": (
        {
            "key": _SECRET,
            "model": "gpt-4o",
            "cost": 0.25,
            "features": ["chat_completion", "streaming"],
            "operation": "write",
            "provider": "openai",
        },
        {
            "valid": True,
            "code": "VALID",
            "key_id": _KEY_ID,
            "owner": "cus_123",
            "name": "Acme production",
            "environment": "live",
            "tags": ["prod"],
            "metadata": {"tier": "pro"},
            "scopes": ["chat:write"],
            "expires_at": None,
            "plan": "pro",
            "request_id": "req_01m8yzy9kh7wtthgt30ak5jrep",
            "limits": [
                {
                    "name": "per-minute",
                    "kind": "rate",
                    "limit": 60,
                    "remaining": 59,
                    "reset_at": "2026-03-01T12:00:01Z",
                },
                {
                    "name": "budget",
                    "kind": "budget",
                    "limit": 50,
                    "remaining": 49.75,
                    "reset_at": "2026-04-01T00:00:00Z",
                },
            ],
            "retry_after": None,
            "directives": {
                "data_access": {"log_requests": True, "log_responses": False},
                "routing": {"allowed_providers": ["openai", "anthropic"], "fallback_allowed": True},
            },
        },
    ),
    "forward_auth_v1_auth_get": (None, None),
    "report_usage_v1_usage_post": (
        {
            "key_id": _KEY_ID,
            "request_id": "req_42",
            "cost": 0.25,
            "input_tokens": 120,
            "output_tokens": 300,
            "model": "gpt-4o",
        },
        {
            "id": "use_01m8yzy9kwf235y8p54nek2kv1",
            "key_id": _KEY_ID,
            "duplicate": False,
            "recorded_at": _AT,
        },
    ),
    "list_events_v1_events_get": (
        None,
        {
            "data": [
                {
                    "id": "evt_01m8yzy9kwf235y8p54nek2kv2",
                    "type": "budget.threshold_crossed",
                    "subject_id": _KEY_ID,
                    "payload": {
                        "key_id": _KEY_ID,
                        "threshold": 0.8,
                        "reset": "monthly",
                        "period_start": "2026-03-01T00:00:00Z",
                        "credit_limit": 50,
                        "spent": 40.25,
                    },
                    "created_at": _AT,
                }
            ],
            "next_cursor": None,
            "has_more": False,
        },
    ),
    "list_plans_v1_plans_get": (None, {"data": [PLAN]}),
    "create_plan_v1_plans_post": (
        {"name": "pro", "description": "Pro tier", "policy": _POLICY},
        {"data": PLAN},
    ),
    "get_plan_v1_plans__plan__get": (None, {"data": PLAN}),
    "update_plan_v1_plans__plan__patch": (
        {"description": "Pro tier, 2026 prices"},
        {"data": PLAN | {"description": "Pro tier, 2026 prices"}},
    ),
    "delete_plan_v1_plans__plan__delete": (None, {"data": PLAN}),
    "create_management_key_v1_management_keys_post": (
        {"name": "billing", "scopes": ["keys:read", "usage:write"]},
        {"key": "kp_mgmt_rsCr5Pj5QtA6c1V9D9YQ5XqP2KBiEs1t4RKW", "data": MANAGEMENT_KEY},
    ),
    "list_management_keys_v1_management_keys_get": (
        None,
        {"data": [MANAGEMENT_KEY], "next_cursor": None, "has_more": False},
    ),
    "get_management_key_v1_management_keys__key_id__get": (None, {"data": MANAGEMENT_KEY}),
    "revoke_management_key_v1_management_keys__key_id__delete": (
        None,
        {"data": MANAGEMENT_KEY | {"revoked_at": _AT}},
    ),
    "list_projects_v1_projects_get": (None, {"data": [PROJECT]}),
    "create_project_v1_projects_post": (
        {"name": "staging", "key_prefix": "stg"},
        {"data": PROJECT},
    ),
    "get_project_v1_projects__project_id__get": (None, {"data": PROJECT}),
    "add_credential_v1_vault_credentials_post": (_CREDENTIAL_IN, {"data": CREDENTIAL}),
    "list_credentials_v1_vault_credentials_get": (
        None,
        {"data": [CREDENTIAL], "next_cursor": None, "has_more": False},
    ),
    "add_credentials_v1_vault_credentials_bulk_post": (
        {"credentials": [_CREDENTIAL_IN]},
        {"data": [CREDENTIAL]},
    ),
    "get_credential_v1_vault_credentials__credential_id__get": (None, {"data": CREDENTIAL}),
    "update_credential_v1_vault_credentials__credential_id__patch": (
        {"daily_limit": 2000},
        {"data": CREDENTIAL | {"daily_limit": 2000}},
    ),
    "delete_credential_v1_vault_credentials__credential_id__delete": (
        None,
        {"data": CREDENTIAL | {"status": "revoked", "revoked_at": _AT}},
    ),
    "credential_stats_v1_vault_credentials__credential_id__stats_get": (None, _CREDENTIAL_STATS),
    "provider_stats_v1_vault_stats_get": (
        None,
        {
            "provider": "openai",
            "credentials": 1,
            "with_capacity": 1,
            "live_leases": 1,
            "daily_used": 12,
            "daily_remaining": 988,
            "monthly_used": 12,
            "monthly_remaining": None,
            "items": [_CREDENTIAL_STATS],
        },
    ),
    "lease_v1_vault_leases_post": (
        {"provider": "openai", "strategy": "least_used"},
        {
            "lease_id": _LEASE_ID,
            "credential_id": _CREDENTIAL_ID,
            "provider": "openai",
            "alias": "team-a",
            "secret": "sk-example-0123456789",
            "environment": None,
            "expires_at": "2026-03-01T12:01:00Z",
        },
    ),
    "release_v1_vault_leases__lease_id__delete": (
        {"outcome": "ok"},
        {
            "lease_id": _LEASE_ID,
            "credential_id": _CREDENTIAL_ID,
            "outcome": "ok",
            "credential_status": "active",
        },
    ),
    "list_keys_api_v1_keys_get": (None, {"data": [_OPENROUTER_KEY]}),
    "create_key_api_v1_keys_post": (
        {"name": "Customer 42", "limit": 25, "limit_reset": "monthly"},
        {"data": _OPENROUTER_KEY, "key": _SECRET, "hash": _HASH},
    ),
    "get_key_api_v1_keys__key_hash__get": (None, _OPENROUTER_KEY),
    "update_key_api_v1_keys__key_hash__patch": (
        {"disabled": True},
        {"data": _OPENROUTER_KEY | {"disabled": True}},
    ),
    "delete_key_api_v1_keys__key_hash__delete": (None, {"deleted": True}),
    "current_key_api_v1_key_get": (None, {"data": _OPENROUTER_KEY}),
    "create_service_key_prod_createServiceKey_post": (
        {
            "api_key_name": "customer-7",
            "credit_limit": 10,
            "reset_budget_interval": "monthly",
            "models": ["gpt-4o"],
            "tags": ["trial"],
        },
        {"api_key": _SECRET, **_SERVICE_KEY},
    ),
    "get_service_keys_prod_getServiceKeys_get": (
        None,
        {"service_keys": [_SERVICE_KEY], "has_more": False},
    ),
    "update_service_key_prod_updateServiceKey_post": (
        {"api_key_id_hash": _HASH, "credit_limit": 20},
        _SERVICE_KEY | {"credit_limit": 20, "credit_remaining": 20},
    ),
    "delete_service_key_prod_deleteServiceKey_post": (
        {"api_key_id_hash": _HASH},
        {"deleted": True, "api_key_id_hash": _HASH},
    ),
    "list_aliases_v1_organization_aliases_get": (
        None,
        {"data": {"org_id": _ORG, "aliases": ["acme-fastrouter"]}},
    ),
    "add_alias_v1_organization_aliases__alias__put": (
        None,
        {"data": {"org_id": _ORG, "aliases": ["acme-fastrouter"]}},
    ),
    "create_webhook_v1_webhooks_post": (
        {
            "url": "https://billing.example.com/keyplane",
            "events": ["key.*", "budget.exhausted"],
            "description": "billing sync",
        },
        {"data": _WEBHOOK | {"secret": _WEBHOOK_SECRET}},
    ),
    "list_webhooks_v1_webhooks_get": (None, {"data": [_WEBHOOK]}),
    "get_webhook_v1_webhooks__endpoint_id__get": (None, {"data": _WEBHOOK}),
    "update_webhook_v1_webhooks__endpoint_id__patch": (
        {"enabled": False},
        {"data": _WEBHOOK | {"enabled": False}},
    ),
    "delete_webhook_v1_webhooks__endpoint_id__delete": (None, {"data": _WEBHOOK}),
    "rotate_webhook_secret_v1_webhooks__endpoint_id__rotate_secret_post": (
        None,
        {
            "data": _WEBHOOK
            | {"secret": _WEBHOOK_SECRET, "previous_secret_valid_until": "2026-03-02T12:00:00Z"}
        },
    ),
    "list_deliveries_v1_webhooks__endpoint_id__deliveries_get": (
        None,
        {"data": [_DELIVERY], "next_cursor": None},
    ),
    "replay_delivery_v1_webhooks__endpoint_id__deliveries__delivery_id__replay_post": (
        None,
        {"data": {"id": "whd_01m8yzya3n5q7s9u1w3y5a7c9e"}},
    ),
    "test_webhook_v1_webhooks__endpoint_id__test_post": (
        None,
        {"data": {"id": "whd_01m8yzya4p6r8t0v2x4z6b8d0f"}},
    ),
    "security_report_v1_reports_security_get": (None, {"data": _SECURITY_REPORT}),
    "github_secret_scanning_v1_secret_scanning_github_post": (
        [_LEAK_REPORT],
        [_LEAK_LABEL],
    ),
    "report_leaked_keys_v1_leaked_keys_post": (
        [_LEAK_REPORT | {"type": "keyplane_api_key", "source": "pastebin"}],
        {"data": [_LEAK_LABEL | {"token_type": "keyplane_api_key"}]},
    ),
    "get_leak_response_v1_projects__project_id__leak_response_get": (
        None,
        {"data": {"project_id": _PROJECT, "action": "revoke"}},
    ),
    "set_leak_response_v1_projects__project_id__leak_response_put": (
        {"action": "disable"},
        {"data": {"project_id": _PROJECT, "action": "disable"}},
    ),
    "create_signing_secret_v1_signing_secrets_post": (
        {"owner": "cus_123", "description": "outbound webhooks of cus_123"},
        {"secret": _WEBHOOK_SECRET, "data": _SIGNING_SECRET},
    ),
    "list_signing_secrets_v1_signing_secrets_get": (
        None,
        {"data": [_SIGNING_SECRET], "next_cursor": None, "has_more": False},
    ),
    "get_signing_secret_v1_signing_secrets__secret_id__get": (None, {"data": _SIGNING_SECRET}),
    "rotate_signing_secret_v1_signing_secrets__secret_id__rotate_post": (
        {"overlap_seconds": 86400},
        {
            "secret": _WEBHOOK_SECRET,
            "data": _SIGNING_SECRET
            | {"rotated_at": _AT, "previous_expires_at": "2026-03-02T12:00:00Z"},
        },
    ),
    "delete_signing_secret_v1_signing_secrets__secret_id__delete": (
        None,
        {"data": _SIGNING_SECRET},
    ),
    "sign_payload_v1_signing_secrets__secret_id__sign_post": (
        {"payload": '{"type": "key.created"}', "msg_id": "msg_42", "timestamp": 1772366400},
        {
            "data": {
                "msg_id": "msg_42",
                "timestamp": 1772366400,
                "headers": {
                    "webhook-id": "msg_42",
                    "webhook-timestamp": "1772366400",
                    "webhook-signature": "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=",
                },
            }
        },
    ),
    "list_audit_v1_audit_get": (None, _AUDIT_PAGE),
    "get_audit_entry_v1_audit_entries__entry_id__get": (None, {"data": _AUDIT_ENTRY}),
    "key_audit_v1_keys__id_or_hash__audit_get": (None, _AUDIT_PAGE),
    "export_audit_v1_audit_export_post": (
        {"format": "csv", "period": "last_30_days", "event_types": ["key.revoked"]},
        None,
    ),
    "export_key_audit_v1_keys__id_or_hash__audit_export_post": (
        {"format": "json", "period": "this_month"},
        None,
    ),
    "verify_audit_v1_audit_verify_get": (
        None,
        {
            "ok": True,
            "checked": 42,
            "first_broken": None,
            "checkpoint": {"seq": 0, "hash": _AUDIT_ENTRY["prev_hash"]},
        },
    ),
    "key_analytics_v1_keys__key_id__analytics_get": (
        None,
        {
            "key_id": _KEY_ID,
            "period": "24h",
            "granularity": "hour",
            "start": "2026-02-28T12:00:00Z",
            "end": "2026-03-01T12:00:00Z",
            "total_requests": 120,
            "total_cost": 4.5,
            "total_errors": 3,
            "avg_latency_ms": 530.25,
            "error_rate": 0.025,
            "input_tokens": 14400,
            "output_tokens": 36000,
            "latency": _LATENCY,
            "verifications": {"VALID": 124, "RATE_LIMITED": 2},
            "models": [{"name": "gpt-4o", **_MEASURES}],
            "features": [{"name": "chat", "usage_count": 120, **_MEASURES}],
            "series": [
                {
                    "start": "2026-03-01T11:00:00Z",
                    **_MEASURES,
                    "verifications": {"VALID": 124, "RATE_LIMITED": 2},
                }
            ],
        },
    ),
    "grouped_analytics_v1_analytics_get": (
        None,
        {
            "group_by": "key",
            "order_by": "cost",
            "period": "7d",
            "granularity": "day",
            "start": "2026-02-22T12:00:00Z",
            "end": "2026-03-01T12:00:00Z",
            "data": [
                {
                    "key": _KEY_ID,
                    **_MEASURES,
                    "verifications": 126,
                    "refused": 2,
                    "by_code": {"VALID": 124, "RATE_LIMITED": 2},
                }
            ],
        },
    ),
}

METRICS = """\
# HELP keyplane_background_loop_up 1 while a background loop runs.
# TYPE keyplane_background_loop_up gauge
keyplane_background_loop_up{loop="ledger_writer"} 1
"""

_AUDIT_CSV = (
    "id,seq,occurred_at,org_id,project_id,actor_type,actor_id,actor_name,actor_ip,"
    "actor_user_agent,request_id,action,target_type,target_id,outcome,count,details,"
    "prev_hash,hash\r\n"
    f"{_AUDIT_ENTRY['id']},42,2026-03-01T12:00:00+00:00,{_ORG},{_PROJECT},management_key,"
    "mk_01m8yzy9tcdgej2ygfw5a9e4nb,billing,203.0.113.0,,req_01m8yzy9kh7wtthgt30ak5jrep,"
    f'key.revoked,key,{_KEY_ID},success,1,"{{""reason"":""leaked""}}",'
    f"{_AUDIT_ENTRY['prev_hash']},{_AUDIT_ENTRY['hash']}\r\n"
)
_AUDIT_NDJSON = (
    '{"id":"aud_01m8yzya2h3k5m7p9r1t3v5x7z","seq":42,"occurred_at":"2026-03-01T12:00:00+00:00",'
    f'"org_id":"{_ORG}","project_id":"{_PROJECT}","actor_type":"management_key",'
    '"actor_id":"mk_01m8yzy9tcdgej2ygfw5a9e4nb","actor_name":"billing","actor_ip":"203.0.113.0",'
    '"actor_user_agent":null,"request_id":"req_01m8yzy9kh7wtthgt30ak5jrep",'
    f'"action":"key.revoked","target_type":"key","target_id":"{_KEY_ID}","outcome":"success",'
    '"count":1,"details":{"reason":"leaked"},'
    f'"prev_hash":"{_AUDIT_ENTRY["prev_hash"]}","hash":"{_AUDIT_ENTRY["hash"]}"}}\n'
)
_USAGE_CSV = (
    "bucket_start,key_id,project_id,owner,requests,errors,cost,input_tokens,output_tokens,"
    "latency_count,avg_latency_ms,p50,p95,p99\n"
    f"2026-03-01T11:00:00Z,{_KEY_ID},{_PROJECT},cus_123,120,3,4.5,14400,36000,120,530.25,"
    "412.0,1210.0,1980.0\n"
)
_USAGE_NDJSON = (
    f'{{"bucket_start": "2026-03-01T11:00:00Z", "key_id": "{_KEY_ID}", "project_id":'
    f' "{_PROJECT}", "owner": "cus_123", "requests": 120, "errors": 3, "cost": "4.5",'
    ' "input_tokens": 14400, "output_tokens": 36000, "latency_count": 120,'
    ' "avg_latency_ms": 530.25, "p50": 412.0, "p95": 1210.0, "p99": 1980.0}\n'
)
_USAGE_SSE = (
    ": keyplane usage stream\n\n"
    "event: usage\nid: use_01m8yzy9kwf235y8p54nek2kv1\n"
    'data: {"type": "usage", "id": "use_01m8yzy9kwf235y8p54nek2kv1",'
    f' "key_id": "{_KEY_ID}", "project_id": "{_PROJECT}", "owner": "cus_123",'
    ' "request_id": "req_42", "model": "gpt-4o", "input_tokens": 120, "output_tokens": 300,'
    f' "latency_ms": 412, "status": 200, "recorded_at": "{_AT}", "cost": 0.25}}\n\n'
    ": keep-alive\n\n"
)
_BINARY = "(a binary Parquet file: one row group per page of rows)"

#: Examples of the non-JSON answers, by operation id, then media type (without parameters).
MEDIA_EXAMPLES: dict[str, dict[str, str]] = {
    "metrics_metrics_get": {"text/plain": METRICS},
    "export_audit_v1_audit_export_post": {
        "text/csv": _AUDIT_CSV,
        "application/x-ndjson": _AUDIT_NDJSON,
        "application/vnd.apache.parquet": _BINARY,
    },
    "export_key_audit_v1_keys__id_or_hash__audit_export_post": {
        "text/csv": _AUDIT_CSV,
        "application/x-ndjson": _AUDIT_NDJSON,
        "application/vnd.apache.parquet": _BINARY,
    },
    "export_usage_v1_usage_export_get": {
        "text/csv": _USAGE_CSV,
        "application/x-ndjson": _USAGE_NDJSON,
        "application/vnd.apache.parquet": _BINARY,
    },
    "usage_stream_v1_usage_stream_get": {"text/event-stream": _USAGE_SSE},
    "key_usage_stream_v1_keys__key_id__usage_stream_get": {"text/event-stream": _USAGE_SSE},
}


def for_operation(operation_id: str) -> tuple[Any, Any]:
    """The (request, response) examples of an operation; (None, None) for an unknown one."""
    return EXAMPLES.get(operation_id, (None, None))


def compat_error(path: str, status: int, code: str, message: str) -> dict[str, Any]:
    """A compatibility surface's error body, in its vendor's format."""
    if path.startswith("/prod/"):
        return {"error": {"message": message, "type": "invalid_request_error", "code": code}}
    return {"error": {"code": status, "message": message, "metadata": {"code": code}}}


# The ParrotRouter surface (/parrotrouter/v1): seed 004's own requests as the examples.
_PARROT_CREATE = {
    "name": "Production App Key",
    "description": "Key for production application",
    "permissions": {
        "models": ["gpt-4-turbo-preview", "gpt-3.5-turbo"],
        "max_requests_per_minute": 100,
        "max_requests_per_day": 10000,
        "max_cost_per_day": 50.00,
    },
    "restrictions": {
        "ip_whitelist": ["203.0.113.0/24"],
        "referrers": ["https://app.yourcompany.com/*"],
    },
    "metadata": {"team": "backend", "cost_center": "engineering"},
    "environment": "production",
    "expires_at": "2027-12-31T23:59:59Z",
}
_PARROT_KEY = KEY | {"tags": ["environment:production"], "plan": None}
_PARROT_ROTATION = {
    "enabled": True,
    "schedule": "0 0 1 * *",
    "strategy": "gradual",
    "notification_channels": ["email:security@company.com"],
    "grace_period_hours": 24,
    "auto_update_apps": True,
}
EXAMPLES.update(
    {
        "parrot_create_key": (_PARROT_CREATE, _PARROT_KEY | {"key": _SECRET}),
        "parrot_get_key": (None, _PARROT_KEY),
        "parrot_update_key": (
            {"permissions": {"max_requests_per_day": 5000}, "expires_at": "2027-06-30T23:59:59Z"},
            _PARROT_KEY,
        ),
        "parrot_disable_key": (
            {"reason": "Suspicious activity detected", "auto_enable_after": "1h"},
            _DISABLED,
        ),
        "parrot_revoke_key": ({"reason": "Key compromised", "revoke_immediately": True}, _REVOKED),
        "parrot_rotate_key": (
            {"invalidate_old": False, "grace_period_hours": 48},
            _PARROT_KEY | {"key": _SECRET, "old_key_expires_at": "2026-03-03T12:00:00Z"},
        ),
        "parrot_set_rotation": (_PARROT_ROTATION, {"id": _KEY_ID, "rotation": _PARROT_ROTATION}),
        "parrot_key_analytics": (None, EXAMPLES["key_analytics_v1_keys__key_id__analytics_get"][1]),
        "parrot_key_audit": (
            None,
            {
                "events": [
                    {
                        "timestamp": _AT,
                        "event_type": "permission_change",
                        "action": "key.updated",
                        "user_id": "root",
                        "ip_address": "203.0.113.7",
                        "details": {"changes": {"policy": {"from": {}, "to": {}}}},
                        "outcome": "success",
                        "count": 1,
                    }
                ],
                "next_cursor": None,
                "has_more": False,
            },
        ),
        "parrot_export_key_audit": (
            {"format": "csv", "period": "last_quarter", "include_pii": False},
            None,
        ),
    }
)
MEDIA_EXAMPLES["parrot_export_key_audit"] = MEDIA_EXAMPLES[
    "export_key_audit_v1_keys__id_or_hash__audit_export_post"
]
