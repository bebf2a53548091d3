"""The pure mappings behind the compatibility surfaces: no server, no database."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.exceptions import RequestValidationError

from keyplane.api.compat import fastrouter_map as fr
from keyplane.api.compat import openrouter_map as orm
from keyplane.api.compat.errors import failure_of
from keyplane.domain.keys import Environment, KeyRecord, KeyStatus
from keyplane.domain.periods import Reset
from keyplane.domain.policy import parse_policy
from keyplane.services.keys import KeyView

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NO_USAGE = {"total": 0, "day": 0, "week": 0, "month": 0}


def view(**overrides: Any) -> KeyView:
    record_fields: dict[str, Any] = {
        "id": "key_01m80v9n1gkgmtnvzc1sdq35n5",
        "org_id": "org_1",
        "project_id": "proj_1",
        "hash": "ab" * 32,
        "start": "kp_live_AbCd",
        "end": "wxyz",
        "name": "n",
        "environment": Environment.LIVE,
        "created_at": NOW,
        "updated_at": NOW,
    }
    view_fields: dict[str, Any] = {"plan": None, "effective_policy": {}, "usage": NO_USAGE}
    for name, value in overrides.items():
        (view_fields if name in KeyView.__slots__ else record_fields)[name] = value
    return KeyView(KeyRecord(**record_fields), **view_fields)


# -- OpenRouter -------------------------------------------------------------------------------


def test_a_key_without_budget_has_null_limits_and_zero_byok() -> None:
    shown = orm.key_object(view(), NOW)
    assert (shown["limit"], shown["limit_remaining"], shown["limit_reset"]) == (None, None, None)
    assert shown["byok_usage"] == shown["byok_usage_monthly"] == 0
    assert shown["label"] == "kp_live_AbCd...wxyz"
    assert shown["creator_user_id"] is None and shown["workspace_id"] == "proj_1"
    assert shown["created_at"] == "2026-03-01T12:00:00Z"


def test_limits_and_usage_are_credits_from_micro_credits() -> None:
    shown = orm.key_object(
        view(
            usage={"total": 12_500_000, "day": 1, "week": 2, "month": 3_000_000},
            budget_limit=50_000_000,
            budget_remaining=37_500_000,
            budget_reset=Reset.MONTHLY,
        ),
        NOW,
    )
    assert (shown["limit"], shown["limit_remaining"], shown["limit_reset"]) == (
        50,
        37.5,
        "monthly",
    )
    assert (shown["usage"], shown["usage_daily"], shown["usage_monthly"]) == (12.5, 1e-06, 3)


def test_disabled_reflects_the_status_that_applies_now() -> None:
    later = datetime(2026, 3, 2, tzinfo=UTC)
    paused = view(status=KeyStatus.DISABLED, auto_enable_at=later)
    assert orm.key_object(paused, NOW)["disabled"] is True
    assert orm.key_object(paused, later)["disabled"] is False
    expired = view(expires_at=NOW)
    assert orm.key_object(expired, NOW)["disabled"] is False


def test_budget_changes_keep_the_rest_of_the_policy() -> None:
    policy = {"models": {"allow": ["gpt-*"]}, "budget": {"alert_thresholds": [0.8]}}
    changed = orm.with_budget(policy, limit_micros=5, set_limit=True, reset=Reset.WEEKLY)
    assert changed == {
        "models": {"allow": ["gpt-*"]},
        "budget": {"alert_thresholds": [0.8], "credit_limit_micros": 5, "reset": "weekly"},
    }
    removed = orm.with_budget(changed, limit_micros=None, set_limit=True, reset=None)
    assert removed["budget"]["credit_limit_micros"] is None
    assert parse_policy(removed).budget is not None
    assert orm.with_budget({}, limit_micros=None, set_limit=False, reset=None) == {}
    assert orm.reset_of(None) is Reset.NEVER and orm.limit_reset_of(Reset.NEVER) is None


def test_the_byok_flag_lives_in_reserved_metadata_only_while_true() -> None:
    metadata = orm.with_include_byok({"tier": "gold"}, True)
    assert metadata == {"tier": "gold", "_compat": {"include_byok_in_limit": True}}
    assert orm.include_byok(metadata) is True
    assert orm.with_include_byok(metadata, False) == {"tier": "gold"}
    assert orm.include_byok({"_compat": "not an object"}) is False


# -- FastRouter -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-03-28 17:30:00.123", datetime(2025, 3, 28, 17, 30, 0, 123000, tzinfo=UTC)),
        ("2025-03-28 17:30", datetime(2025, 3, 28, 17, 30, tzinfo=UTC)),
        ("2025-03-28T17:30:00Z", datetime(2025, 3, 28, 17, 30, tzinfo=UTC)),
        ("2025-03-28T12:30:00-05:00", datetime(2025, 3, 28, 17, 30, tzinfo=UTC)),
        ("2024-02-29", datetime(2024, 2, 29, tzinfo=UTC)),
    ],
)
def test_expire_key_forms(text: str, expected: datetime) -> None:
    assert fr.parse_expire_key(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "tomorrow",
        "2025-02-29",
        "2025-13-01 00:00:00",
        "2025-03-28 25:00:00",
        "2025-03-28 17:30:00.1234567",
        "١٢٣٤-01-01",
        "2025-03-28 17:30:00 UTC",
        "1743183000",
        "2025-03-28" + " " * 100,
    ],
)
def test_bad_expire_keys_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="expire_key"):
        fr.parse_expire_key(text)


def test_expire_key_round_trips_in_fastrouter_form() -> None:
    moment = fr.parse_expire_key("2025-03-28 17:30:00.250")
    assert fr.format_expire_key(moment) == "2025-03-28 17:30:00.250"
    assert fr.format_expire_key(None) is None


def test_fields_map_to_policy_rules_and_null_removes_them() -> None:
    policy = fr.policy_with(
        {"rate_limits": [{"name": "per_day", "limit": 5, "period": 86400}]},
        {
            "models": ["openai/*"],
            "rpm_limit": 10,
            "tpm_limit": 1000,
            "credit_limit": 150_000_000,
            "reset_budget_interval": "daily",
        },
    )
    assert policy == {
        "rate_limits": [
            {"name": "per_day", "limit": 5, "period": 86400},
            {"name": "rpm", "limit": 10, "period": 60},
        ],
        "models": {"allow": ["openai/*"]},
        "token_limits": {"total_per_minute": 1000},
        "budget": {"credit_limit_micros": 150_000_000, "reset": "daily"},
    }
    parsed = parse_policy(policy)
    assert parsed.token_limits is not None and parsed.token_limits.total_per_minute == 1000
    cleared = fr.policy_with(
        policy,
        {"models": None, "rpm_limit": None, "tpm_limit": None, "reset_budget_interval": None},
    )
    assert cleared == {
        "rate_limits": [{"name": "per_day", "limit": 5, "period": 86400}],
        "budget": {"credit_limit_micros": 150_000_000, "reset": "never"},
    }
    assert fr.policy_with(policy, {}) == policy


def test_metadata_replacement_keeps_other_surfaces_reserved_entry() -> None:
    current = {"team": "a", "_compat": {"include_byok_in_limit": True}}
    assert fr.with_metadata(current, {"team": "b", "_compat": "spoofed"}) == {
        "team": "b",
        "_compat": {"include_byok_in_limit": True},
    }
    assert fr.visible_metadata(current) == {"team": "a"}


def test_a_service_key_shows_the_effective_policy_and_period_spending() -> None:
    shown = fr.service_key(
        view(
            effective_policy={
                "models": {"allow": ["a/*"]},
                "rate_limits": [{"name": "rpm", "limit": 7, "period": 60}],
                "token_limits": {"total_per_minute": 99},
            },
            usage={"total": 9_000_000, "day": 2_000_000, "week": 0, "month": 0},
            budget_limit=5_000_000,
            budget_remaining=3_000_000,
            budget_reset=Reset.DAILY,
            metadata={"x": 1, "_compat": {}},
        ),
        "org_1",
        "Production",
        NOW,
    )
    assert (shown["models"], shown["rpm_limit"], shown["tpm_limit"]) == (["a/*"], 7, 99)
    assert (shown["credit_limit"], shown["credit_used"], shown["credit_remaining"]) == (5, 2, 3)
    assert shown["reset_budget_interval"] == "daily" and shown["metadata"] == {"x": 1}
    assert shown["status"] == "active" and shown["project_name"] == "Production"
    assert shown["api_key_preview"] == "kp_live_AbCd...wxyz"


def test_validation_messages_never_carry_raw_control_characters() -> None:
    error = RequestValidationError(
        [{"type": "extra_forbidden", "loc": ("body", "\x1b[31m" + "x" * 500), "msg": "Extra"}]
    )
    failure = failure_of(error)
    assert failure.status == 400 and failure.code == "VALIDATION_FAILED"
    assert "\x1b" not in failure.message and len(failure.message) < 200
