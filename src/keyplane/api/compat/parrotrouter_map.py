"""ParrotRouter keys (seed 004) -> Keyplane's native API documents (pure functions).

A ParrotRouter request body, once its shape is checked (``parrotrouter.py``), is translated
here into the body the native ``/v1/keys`` API takes: the key's fields and its ``policy`` in
the API form of ``api/policy.py`` (credits as numbers, periods as ``"1m"``). The native model
then validates it like any ``/v1`` request, so every rule is checked in one place and a field
this Keyplane does not enforce is a 422 naming it, never silently dropped.

The field by field table is in docs/compatibility.md (ParrotRouter). In short:

- ``permissions.models`` (a list, or ``allowed``/``denied``/``cost_limits``) -> ``policy.models``
- ``permissions.features`` (a list, or a map of booleans) -> ``policy.features.allow/deny``;
  ``advanced_features``, ``data_access``, ``operations``, ``routing``, ``require_approval``
  -> the policy sections of the same names
- ``max_requests_per_minute`` / ``_per_day`` and ``rate_limits.requests.per_*`` -> rate
  windows named ``per_second`` .. ``per_day``; ``burst_size`` -> the shortest window's ``burst``
- ``max_cost_per_day`` -> ``policy.budget`` (credits, reset daily); ``rate_limits.costs`` ->
  ``policy.costs``; ``rate_limits.tokens`` -> ``policy.token_limits``;
  ``rate_limits.concurrency`` -> ``policy.concurrency.max_parallel`` / ``max_queued``
- ``restrictions`` and ``security.network_restrictions`` / ``domain_restrictions`` ->
  ``policy.network``; ``security.authentication`` -> ``policy.signing``
- ``environment`` -> ``live`` (production) or ``test`` (any other), plus a tag
  ``environment:<name>``; ``type``, ``scope``, ``members``, ``inherit_from``, ``overrides``
  need teams, which Keyplane does not have: refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from keyplane.domain.periods import parse_duration
from keyplane.errors import ValidationError

#: ParrotRouter environments that are Keyplane's ``live``; every other one is ``test``.
LIVE_ENVIRONMENTS = frozenset({"production", "prod", "live"})
ENVIRONMENT_TAG = "environment:"
#: The rate windows the seed's request limits become, shortest first.
WINDOWS = (
    ("per_second", "1s"),
    ("per_minute", "1m"),
    ("per_hour", "1h"),
    ("per_day", "1d"),
)
#: Fields that describe team keys; Keyplane has no teams (the teams issue), so they are refused.
TEAM_FIELDS = ("type", "scope", "members")
#: The request sections that carry rules (the key's policy).
RULE_SECTIONS = ("permissions", "restrictions", "security", "rate_limits")
TEAM_PERMISSION_FIELDS = ("inherit_from", "overrides")
#: Seed 004's audit event types -> Keyplane's dotted audit actions (exact names or prefixes).
EVENT_TYPES: Mapping[str, tuple[str, ...]] = {
    "usage": ("budget.*", "rate_limit.*", "costs.*"),
    "permission_change": ("key.updated",),
    "security_alert": ("verify.refused", "key.disabled", "key.revoked"),
}
DEFAULT_ROTATION_GRACE = timedelta(hours=24)


def refuse_teams(body: Mapping[str, Any]) -> None:
    """A 422 naming the teams feature when a request describes a team key."""
    given = [name for name in TEAM_FIELDS if body.get(name) is not None]
    permissions = body.get("permissions") or {}
    given += [
        f"permissions.{name}"
        for name in TEAM_PERMISSION_FIELDS
        if permissions.get(name) is not None
    ]
    if given:
        raise ValidationError(
            f"{', '.join(given)}: team keys need teams and members, which Keyplane does not "
            "have yet; create a key per application or environment instead",
            code="TEAMS_NOT_AVAILABLE",
            errors=[{"loc": f"body.{name}", "msg": "needs teams"} for name in given],
        )


class _Native:
    """A native document being built; remembers which seed field set each native field, so
    that the same rule given twice (``restrictions.ip_whitelist`` and
    ``security.network_restrictions.ip_whitelist``) is refused rather than one silently winning."""

    def __init__(self) -> None:
        self.policy: dict[str, Any] = {}
        self._sources: dict[tuple[str, ...], str] = {}

    def put(self, path: tuple[str, ...], value: Any, source: str) -> None:
        if value is None:
            return
        earlier = self._sources.get(path)
        if earlier is not None:
            raise ValidationError(
                f"{source} and {earlier} set the same rule (policy.{'.'.join(path)}); give one",
                code="CONFLICTING_FIELDS",
            )
        self._sources[path] = source
        section = self.policy
        for part in path[:-1]:
            section = section.setdefault(part, {})
        section[path[-1]] = value

    def window(self, name: str, limit: int | None, source: str) -> None:
        if limit is None:
            return
        period = dict(WINDOWS)[name]
        self.put(("rate_limits", name), {"name": name, "limit": limit, "period": period}, source)

    def rate_limits(self) -> list[dict[str, Any]] | None:
        windows = self.policy.get("rate_limits")
        if windows is None:
            return None
        return [windows[name] for name, _ in WINDOWS if name in windows]


def key_document(body: Mapping[str, Any], *, audit_retention_days: int | None) -> dict[str, Any]:
    """The native ``POST /v1/keys`` body of a ParrotRouter create request.

    ``audit_retention_days`` is the deployment's (``KEYPLANE_AUDIT_RETENTION_DAYS``, ``None``
    keeps entries for ever): a key asking for a longer retention is refused, not promised.
    """
    refuse_teams(body)
    native: dict[str, Any] = {"name": body["name"]}
    for name in ("description", "expires_at"):
        if body.get(name) is not None:
            native[name] = body[name]
    metadata = body.get("metadata")
    if metadata is not None:
        native["metadata"] = dict(metadata)
    environment = body.get("environment")
    if environment is not None:
        native["environment"] = "live" if environment in LIVE_ENVIRONMENTS else "test"
        native["tags"] = [ENVIRONMENT_TAG + environment]
    policy = policy_document(body, audit_retention_days=audit_retention_days)
    if policy:
        native["policy"] = policy
    return native


def update_document(
    body: Mapping[str, Any], current_policy: Mapping[str, Any], *, audit_retention_days: int | None
) -> dict[str, Any]:
    """The native ``PATCH /v1/keys/{id}`` body of a ParrotRouter update.

    ParrotRouter's PATCH changes only the rules it names (``{"permissions":
    {"max_requests_per_day": 5000}}`` leaves the other limits alone), where the native PATCH
    replaces the key's policy: the rules given are merged over ``current_policy`` (the key's
    own overrides, in API form).
    """
    refuse_teams(body)
    native: dict[str, Any] = {}
    for name in ("name", "description", "expires_at", "metadata"):
        if name in body:
            native[name] = body[name]
    changes = policy_document(body, audit_retention_days=audit_retention_days)
    if changes:
        native["policy"] = merge_policy(current_policy, changes)
    return native


def merge_policy(current: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """``changes`` over ``current`` (API forms): a section's fields replace the current ones,
    rate windows replace the window of the same name, other windows stay."""
    merged = {name: value for name, value in current.items()}
    for name, value in changes.items():
        if name == "rate_limits":
            replaced = {window["name"] for window in value}
            kept = [w for w in current.get("rate_limits") or () if w["name"] not in replaced]
            merged[name] = kept + list(value)
        elif isinstance(value, dict) and isinstance(current.get(name), dict):
            merged[name] = {**current[name], **value}
        else:
            merged[name] = value
    return merged


def policy_document(body: Mapping[str, Any], *, audit_retention_days: int | None) -> dict[str, Any]:
    """The native policy (API form) of a request's ``permissions``, ``restrictions``,
    ``security`` and ``rate_limits``; empty when it gives none."""
    native = _Native()
    _permissions(native, body.get("permissions") or {})
    _restrictions(native, body.get("restrictions") or {})
    _security(native, body.get("security") or {}, audit_retention_days)
    _rate_limits(native, body.get("rate_limits") or {})
    policy = native.policy
    windows = native.rate_limits()
    if windows is not None:
        policy["rate_limits"] = windows
    return policy


def _permissions(native: _Native, permissions: Mapping[str, Any]) -> None:
    models = permissions.get("models")
    all_models = permissions.get("all_models")
    if all_models and models is not None:
        raise ValidationError(
            "permissions: all_models and models contradict each other; give one",
            code="CONFLICTING_FIELDS",
        )
    if isinstance(models, list):
        native.put(("models", "allow"), list(models), "permissions.models")
    elif isinstance(models, Mapping):
        native.put(("models", "allow"), _list(models.get("allowed")), "permissions.models.allowed")
        native.put(("models", "deny"), _list(models.get("denied")), "permissions.models.denied")
        limits = models.get("cost_limits")
        if limits is not None:
            native.put(
                ("models", "cost_limits"),
                {pattern: _given(rule) for pattern, rule in limits.items()},
                "permissions.models.cost_limits",
            )
    # all_models / all_features true: no rule, every model or feature is allowed (false
    # changes nothing either: the list given, if any, is the rule).
    features = permissions.get("features")
    if permissions.get("all_features") and features is not None:
        raise ValidationError(
            "permissions: all_features and features contradict each other; give one",
            code="CONFLICTING_FIELDS",
        )
    if isinstance(features, list):
        native.put(("features", "allow"), list(features), "permissions.features")
    elif isinstance(features, Mapping):
        allow = [name for name, on in features.items() if on]
        deny = [name for name, on in features.items() if not on]
        native.put(("features", "allow"), allow or None, "permissions.features")
        native.put(("features", "deny"), deny or None, "permissions.features")
    for section in ("advanced_features", "data_access"):
        if permissions.get(section) is not None:
            for name, value in permissions[section].items():
                native.put((section, name), value, f"permissions.{section}.{name}")
    native.put(("operations",), _list(permissions.get("operations")), "permissions.operations")
    routing = permissions.get("routing")
    if routing is not None:
        for name, value in routing.items():
            native.put(("routing", name), value, f"permissions.routing.{name}")
    native.put(
        ("require_approval",), permissions.get("require_approval"), "permissions.require_approval"
    )
    for window in ("per_minute", "per_day"):
        field = f"max_requests_{window}"
        native.window(window, permissions.get(field), f"permissions.{field}")
    daily = permissions.get("max_cost_per_day")
    if daily is not None:
        native.put(("budget", "credit_limit"), daily, "permissions.max_cost_per_day")
        native.put(("budget", "reset"), "daily", "permissions.max_cost_per_day")


_RESTRICTIONS = {
    "ip_whitelist": "ip_allow",
    "ip_blacklist": "ip_deny",
    "domains": "domains",
    "referrers": "referrers",
    "user_agents": "user_agents",
    "allowed_origins": "origins",
}
_NETWORK_RESTRICTIONS = {
    "ip_whitelist": "ip_allow",
    "ip_blacklist": "ip_deny",
    "require_https": "require_https",
    "allowed_origins": "origins",
    "allowed_countries": "countries_allow",
    "blocked_countries": "countries_deny",
}
_DOMAIN_RESTRICTIONS = {
    "allowed_domains": "domains",
    "allowed_referrers": "referrers",
    "user_agent_pattern": "user_agent",
}
_AUTHENTICATION = {
    "require_signature": "required",
    "signature_algorithm": "algorithm",
    "require_timestamp": "require_timestamp",
    "max_timestamp_age": "max_timestamp_age",
    "require_nonce": "require_nonce",
}


def _restrictions(native: _Native, restrictions: Mapping[str, Any]) -> None:
    _renamed(native, "network", restrictions, _RESTRICTIONS, "restrictions")


def _security(
    native: _Native, security: Mapping[str, Any], audit_retention_days: int | None
) -> None:
    _renamed(
        native,
        "network",
        security.get("network_restrictions") or {},
        _NETWORK_RESTRICTIONS,
        "security.network_restrictions",
    )
    _renamed(
        native,
        "network",
        security.get("domain_restrictions") or {},
        _DOMAIN_RESTRICTIONS,
        "security.domain_restrictions",
    )
    _renamed(
        native,
        "signing",
        security.get("authentication") or {},
        _AUTHENTICATION,
        "security.authentication",
    )
    _audit(native, security.get("audit") or {}, audit_retention_days)


def _audit(native: _Native, audit: Mapping[str, Any], retention_days: int | None) -> None:
    """``security.audit``: what Keyplane does for every key is accepted as asked, the rest
    maps to a gateway directive or is refused (never promised and not kept)."""
    native.put(
        ("data_access", "log_requests"),
        audit.get("log_all_requests"),
        "security.audit.log_all_requests",
    )
    # Every refused verify is counted in the analytics and aggregated into the audit log
    # (verify.refused, docs/audit.md), and suspicious refusals raise security events, for
    # every key: true asks for what is always done; false cannot be honoured.
    for name in ("log_failures", "alert_on_suspicious"):
        if audit.get(name) is False:
            raise ValidationError(
                f"security.audit.{name}: Keyplane records refused requests and security events "
                "for every key; it cannot be turned off for one",
                code="UNSUPPORTED_FIELD",
            )
    wanted = audit.get("retention_days")
    if wanted is not None and retention_days is not None and wanted > retention_days:
        raise ValidationError(
            f"security.audit.retention_days: this deployment keeps audit entries "
            f"{retention_days} days (KEYPLANE_AUDIT_RETENTION_DAYS), fewer than asked",
            code="UNSUPPORTED_FIELD",
        )


def _rate_limits(native: _Native, limits: Mapping[str, Any]) -> None:
    requests = limits.get("requests") or {}
    for name, _ in WINDOWS:
        native.window(name, requests.get(name), f"rate_limits.requests.{name}")
    burst = requests.get("burst_size")
    if burst is not None:
        windows = native.policy.get("rate_limits") or {}
        shortest = next((name for name, _ in WINDOWS if name in windows), None)
        if shortest is None:
            raise ValidationError(
                "rate_limits.requests.burst_size: give a per_second .. per_day limit for it "
                "to apply to",
                code="VALIDATION_FAILED",
            )
        windows[shortest]["burst"] = burst
    for name, value in (limits.get("tokens") or {}).items():
        native.put(("token_limits", name), value, f"rate_limits.tokens.{name}")
    for name, value in (limits.get("costs") or {}).items():
        native.put(("costs", name), value, f"rate_limits.costs.{name}")
    concurrency = limits.get("concurrency") or {}
    native.put(
        ("concurrency", "max_parallel"),
        concurrency.get("max_parallel_requests"),
        "rate_limits.concurrency.max_parallel_requests",
    )
    native.put(
        ("concurrency", "max_queued"),
        concurrency.get("max_queued_requests"),
        "rate_limits.concurrency.max_queued_requests",
    )


def _renamed(
    native: _Native,
    section: str,
    given: Mapping[str, Any],
    names: Mapping[str, str],
    where: str,
) -> None:
    for name, value in given.items():
        native.put((section, names[name]), _plain(value), f"{where}.{name}")


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _list(value: Iterable[Any] | None) -> list[Any] | None:
    return None if value is None else list(value)


def _given(rule: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in rule.items() if value is not None}


def rotation_document(body: Mapping[str, Any]) -> dict[str, Any]:
    """``POST .../rotation``: the key's rotation policy, as the native rotation service takes it."""
    return {"rotation": {name: _plain(value) for name, value in body.items() if value is not None}}


def rotation_grace(invalidate_old: bool | None, grace_period_hours: int | None) -> timedelta:
    """How long the old secret keeps verifying after ``POST .../rotate``.

    ``invalidate_old: true`` ends it at once; ``false`` (or absent with a grace period) keeps
    it for ``grace_period_hours``, 24 when not given.
    """
    if invalidate_old:
        if grace_period_hours:
            raise ValidationError(
                "invalidate_old: true ends the old key at once; grace_period_hours contradicts it",
                code="CONFLICTING_FIELDS",
            )
        return timedelta(0)
    if grace_period_hours is None:
        return timedelta(0) if invalidate_old is None else DEFAULT_ROTATION_GRACE
    return timedelta(hours=grace_period_hours)


def old_key_expires_at(rotated_at: datetime, grace: timedelta) -> datetime:
    return rotated_at + grace


def auto_enable_after(text: str | int) -> timedelta:
    """``"30m"``, ``"1h"``, ``"2d"`` or seconds, at most 30 days (``parse_duration``)."""
    try:
        return timedelta(seconds=parse_duration(text))
    except ValueError:
        raise ValidationError(
            'auto_enable_after: a duration such as "30m", "1h" or "2d", up to 30 days',
            code="VALIDATION_FAILED",
            errors=[{"loc": "body.auto_enable_after", "msg": "not a duration"}],
        ) from None


def audit_actions(event_types: Iterable[str]) -> tuple[str, ...]:
    """Seed 004's event types as Keyplane's audit action filters; dotted names pass through."""
    actions: list[str] = []
    for event_type in event_types:
        for action in EVENT_TYPES.get(event_type, (event_type,)):
            if action not in actions:
                actions.append(action)
    return tuple(actions)


def event_category(action: str) -> str | None:
    """The seed 004 event type an audit action falls under, if any."""
    for category, actions in EVENT_TYPES.items():
        for pattern in actions:
            if action == pattern or (pattern.endswith(".*") and action.startswith(pattern[:-1])):
                return category
    return None
