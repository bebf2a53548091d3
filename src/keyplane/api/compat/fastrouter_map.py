"""FastRouter service keys <-> Keyplane keys and policies (pure functions).

- ``credit_limit`` (credits) and ``reset_budget_interval`` -> ``policy.budget``
- ``models`` -> ``policy.models.allow``
- ``rpm_limit`` -> a rate window named ``rpm``: that many requests per 60 s, burst = limit
- ``tpm_limit`` -> ``policy.token_limits.total_per_minute`` (input plus output tokens)
- ``expire_key`` -> ``expires_at``; ``api_key_name`` -> ``name``; ``tags``, ``metadata``
  (or ``meta_data``) -> the key's own; ``api_key_id_hash`` is the key's ``hash``.
"""

from __future__ import annotations

import re
from dataclasses import fields, replace
from datetime import UTC, datetime
from typing import Any

from keyplane.api import exact
from keyplane.domain import policy_spec as spec
from keyplane.domain.keys import effective_status
from keyplane.domain.periods import Reset
from keyplane.domain.usage import BUCKET_OF_RESET
from keyplane.services.keys import KeyView

RPM_WINDOW = "rpm"
MINUTE = 60
#: Reserved metadata key of the OpenRouter surface; not shown as FastRouter metadata.
HIDDEN_METADATA = ("_compat",)

# FastRouter's own form ("2025-03-28 17:30:00.000", UTC), ISO 8601 ("2025-03-28T17:30:00Z",
# any offset) and a bare date (midnight UTC). ASCII digits only, and bounded, before
# datetime parses it.
_EXPIRY = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"(?:[ T][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,6})?)?)?"
    r"(?:Z|[+-][0-9]{2}:[0-9]{2})?",
    re.ASCII,
)


def parse_expire_key(text: str) -> datetime:
    """The UTC instant an ``expire_key`` value names; ValueError when it names none.

    Without an offset the time is UTC, as FastRouter's ``YYYY-MM-DD HH:MM:SS.fff`` is.
    """
    if len(text) > 40 or not _EXPIRY.fullmatch(text):
        raise ValueError(
            'expire_key is "YYYY-MM-DD HH:MM:SS.fff" (UTC) or ISO 8601, e.g. 2030-01-31T00:00:00Z'
        )
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("expire_key is not a real date and time") from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def format_expire_key(moment: datetime | None) -> str | None:
    """``expires_at`` in FastRouter's form: ``YYYY-MM-DD HH:MM:SS.fff``, UTC."""
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def policy_with(policy: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """The key's policy overrides (stored form) with the given FastRouter fields applied.

    ``changes`` holds only fields the request gave, by their FastRouter names, with
    ``credit_limit`` already in micro-credits. ``None`` removes a rule.
    """
    current = spec.PolicySpec.from_document(policy)
    updates: dict[str, Any] = {}
    if "models" in changes:
        allow = tuple(changes["models"] or ()) or spec.UNSET
        models = replace(spec.value_or(current.models, spec.ModelRules()), allow=allow)
        updates["models"] = _unless_empty(models, spec.ModelRules())
    if "rpm_limit" in changes:
        windows = tuple(w for w in spec.value_or(current.rate_limits, ()) if w.name != RPM_WINDOW)
        limit = changes["rpm_limit"]
        if limit is not None:
            windows += (spec.RateWindow(RPM_WINDOW, limit, MINUTE),)
        updates["rate_limits"] = windows or spec.UNSET
    if "tpm_limit" in changes:
        tokens = replace(
            spec.value_or(current.token_limits, spec.TokenLimits()),
            total_per_minute=changes["tpm_limit"],
        )
        # Nulls are dropped: FastRouter has no way to say "unlimited over the plan".
        tokens = replace(
            tokens,
            **{f.name: spec.UNSET for f in fields(tokens) if getattr(tokens, f.name) is None},
        )
        updates["token_limits"] = _unless_empty(tokens, spec.TokenLimits())
    if "credit_limit" in changes or "reset_budget_interval" in changes:
        budget = spec.value_or(current.budget, spec.Budget())
        if "credit_limit" in changes:
            budget = replace(budget, credit_limit_micros=changes["credit_limit"])
        if "reset_budget_interval" in changes:
            budget = replace(budget, reset=Reset(changes["reset_budget_interval"] or Reset.NEVER))
        updates["budget"] = _unless_empty(budget, spec.Budget())
    return replace(current, **updates).to_document()


def _unless_empty(section: Any, empty: Any) -> Any:
    return spec.UNSET if section == empty else section


def visible_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metadata.items() if k not in HIDDEN_METADATA}


def with_metadata(current: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``new`` replaces the visible metadata; reserved entries of other surfaces stay."""
    kept = {k: v for k, v in current.items() if k in HIDDEN_METADATA}
    return {**visible_metadata(new), **kept}


def _rpm(policy: spec.PolicySpec) -> int | None:
    for window in spec.value_or(policy.rate_limits, ()):
        if window.name == RPM_WINDOW:
            return window.limit
    return None


def service_key(
    view: KeyView, org_id: str, project_name: str | None, now: datetime
) -> dict[str, Any]:
    """A key as the FastRouter surface shows it, from its effective (plan + own) policy."""
    record = view.record
    policy = spec.PolicySpec.from_document(view.effective_policy)
    models = spec.value_or(policy.models, spec.ModelRules())
    tokens = spec.value_or(policy.token_limits, spec.TokenLimits())
    reset = view.budget_reset or Reset.NEVER
    used = view.usage[BUCKET_OF_RESET[reset]]
    limit = view.budget_limit
    return {
        "api_key_id_hash": record.hash,
        "api_key_name": record.name,
        "api_key_preview": f"{record.start}...{record.end}",
        "org_id": org_id,
        "project_id": record.project_id,
        "project_name": project_name,
        "status": effective_status(record, now).value,
        "credit_limit": exact.optional_credits(limit),
        "credit_used": exact.credits(used),
        "credit_remaining": exact.optional_credits(view.budget_remaining),
        "reset_budget_interval": None if limit is None or reset is Reset.NEVER else reset.value,
        "expire_key": format_expire_key(record.expires_at),
        "models": list(spec.value_or(models.allow, ())),
        "tpm_limit": spec.value_or(tokens.total_per_minute, None),
        "rpm_limit": _rpm(policy),
        "metadata": visible_metadata(record.metadata),
        "tags": list(record.tags),
        "created_at": format_expire_key(record.created_at),
        "updated_at": format_expire_key(record.updated_at),
        "last_used_at": format_expire_key(record.last_used_at),
    }
