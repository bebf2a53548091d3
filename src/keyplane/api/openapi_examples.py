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
        {"key": "kp_live_3vghVLMOo0DyKOhtLgEXj9lqH3r6VU0fAEqZ", "data": KEY},
    ),
    "disable_key_v1_keys__id_or_hash__disable_post": (
        {"reason": "late payment", "auto_enable_after": 86400},
        {"data": _DISABLED},
    ),
    "enable_key_v1_keys__id_or_hash__enable_post": (None, {"data": KEY}),
    "verify_v1_verify_post": (
        {"key": _SECRET, "model": "gpt-4o", "cost": 0.25},
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
}

METRICS = """\
# HELP keyplane_background_loop_up 1 while a background loop runs.
# TYPE keyplane_background_loop_up gauge
keyplane_background_loop_up{loop="ledger_writer"} 1
"""


def for_operation(operation_id: str) -> tuple[Any, Any]:
    """The (request, response) examples of an operation; (None, None) for an unknown one."""
    return EXAMPLES.get(operation_id, (None, None))


def compat_error(path: str, status: int, code: str, message: str) -> dict[str, Any]:
    """A compatibility surface's error body, in its vendor's format."""
    if path.startswith("/prod/"):
        return {"error": {"message": message, "type": "invalid_request_error", "code": code}}
    return {"error": {"code": status, "message": message, "metadata": {"code": code}}}
