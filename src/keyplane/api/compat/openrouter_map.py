"""OpenRouter / AnyAPI key objects and limits <-> Keyplane keys and budgets (pure functions).

- ``limit`` is the key budget's credit limit (``policy.budget.credit_limit``) in credits, as
  a decimal; ``null`` means no limit. ``limit_reset`` is the budget's reset (``daily``,
  ``weekly``, ``monthly``); ``null`` means ``never``.
- ``usage*`` are the credits spent in the all-time, daily, weekly and monthly buckets (UTC,
  weeks start on Monday); ``byok_usage*`` are always 0: Keyplane meters no BYOK traffic.
- ``include_byok_in_limit`` has no native home; it is kept in the key's metadata under the
  reserved key ``_compat`` (``{"_compat": {"include_byok_in_limit": true}}``) and changes
  nothing in enforcement.
- ``workspace_id`` is the key's project; ``creator_user_id`` is ``null`` (not recorded).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from keyplane.api import exact
from keyplane.domain import policy_spec as spec
from keyplane.domain.keys import KeyStatus, effective_status
from keyplane.domain.periods import Reset
from keyplane.services.keys import KeyView

#: The metadata key holding fields that only compatibility surfaces know.
COMPAT_METADATA_KEY = "_compat"
BYOK_FIELD = "include_byok_in_limit"

LIMIT_RESETS = ("daily", "weekly", "monthly")


def reset_of(limit_reset: str | None) -> Reset:
    """Keyplane's budget reset for OpenRouter's ``limit_reset`` (``None`` is never)."""
    return Reset.NEVER if limit_reset is None else Reset(limit_reset)


def limit_reset_of(reset: Reset | None) -> str | None:
    """OpenRouter's ``limit_reset`` for a budget reset: ``null`` for none or never."""
    return None if reset in (None, Reset.NEVER) else str(reset)


def with_budget(
    policy: dict[str, Any],
    *,
    limit_micros: int | None,
    set_limit: bool,
    reset: Reset | None,
) -> dict[str, Any]:
    """The key's policy overrides with its budget's limit and/or reset changed.

    ``set_limit`` says whether ``limit_micros`` was given (``None`` then removes the limit,
    also over a plan's); ``reset`` ``None`` leaves the reset as it is.
    """
    current = spec.PolicySpec.from_document(policy)
    budget = spec.value_or(current.budget, spec.Budget())
    if set_limit:
        budget = replace(budget, credit_limit_micros=limit_micros)
    if reset is not None:
        budget = replace(budget, reset=reset)
    if budget == spec.Budget():
        return current.to_document()
    return replace(current, budget=budget).to_document()


def include_byok(metadata: dict[str, Any]) -> bool:
    compat = metadata.get(COMPAT_METADATA_KEY)
    return isinstance(compat, dict) and compat.get(BYOK_FIELD) is True


def with_include_byok(metadata: dict[str, Any], value: bool) -> dict[str, Any]:
    """Metadata with the reserved ``_compat.include_byok_in_limit`` set (dropped when false)."""
    compat = metadata.get(COMPAT_METADATA_KEY)
    compat = dict(compat) if isinstance(compat, dict) else {}
    if value:
        compat[BYOK_FIELD] = True
    else:
        compat.pop(BYOK_FIELD, None)
    result = {k: v for k, v in metadata.items() if k != COMPAT_METADATA_KEY}
    if compat:
        result[COMPAT_METADATA_KEY] = compat
    return result


def timestamp(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a ``Z``, as OpenRouter writes them."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _credits(micros: int | None) -> Any:
    return exact.optional_credits(micros)


def masked(view: KeyView) -> str:
    """The key's visible start and end, as OpenRouter's default ``label``."""
    return f"{view.record.start}...{view.record.end}"


def key_object(view: KeyView, now: datetime) -> dict[str, Any]:
    """A key as OpenRouter's provisioning API shows it, plus AnyAPI's ``description`` and
    ``last_used``."""
    record = view.record
    usage = view.usage
    return {
        "hash": record.hash,
        "name": record.name,
        "label": record.label if record.label is not None else masked(view),
        "description": record.description,
        "disabled": effective_status(record, now) is KeyStatus.DISABLED,
        "limit": _credits(view.budget_limit),
        "limit_remaining": _credits(view.budget_remaining),
        "limit_reset": limit_reset_of(view.budget_reset) if view.budget_limit is not None else None,
        "include_byok_in_limit": include_byok(record.metadata),
        "usage": exact.credits(usage["total"]),
        "usage_daily": exact.credits(usage["day"]),
        "usage_weekly": exact.credits(usage["week"]),
        "usage_monthly": exact.credits(usage["month"]),
        "byok_usage": 0,
        "byok_usage_daily": 0,
        "byok_usage_weekly": 0,
        "byok_usage_monthly": 0,
        "created_at": timestamp(record.created_at),
        "updated_at": timestamp(record.updated_at),
        "expires_at": timestamp(record.expires_at),
        "last_used": timestamp(record.last_used_at),
        "creator_user_id": None,
        "workspace_id": record.project_id,
    }


def current_key_info(view: KeyView, now: datetime) -> dict[str, Any]:
    """``GET /key`` for an API key presenting itself."""
    return {
        **key_object(view, now),
        "is_free_tier": False,
        "is_provisioning_key": False,
        "is_management_key": False,
    }


def management_key_info(label: str) -> dict[str, Any]:
    """``GET /key`` for a management key: it spends nothing and has no limit."""
    return {
        "label": label,
        "limit": None,
        "limit_remaining": None,
        "limit_reset": None,
        "include_byok_in_limit": False,
        "usage": 0,
        "usage_daily": 0,
        "usage_weekly": 0,
        "usage_monthly": 0,
        "byok_usage": 0,
        "byok_usage_daily": 0,
        "byok_usage_weekly": 0,
        "byok_usage_monthly": 0,
        "expires_at": None,
        "creator_user_id": None,
        "is_free_tier": False,
        "is_provisioning_key": True,
        "is_management_key": True,
    }
