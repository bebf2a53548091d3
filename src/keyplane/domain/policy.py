"""Key policies: what a key may do, as data, and the pure checks that read it.

A policy is stored as a JSON document (the *storage form*: amounts in micro-credits, periods
in seconds). A plan holds a complete document; a key holds overrides. The effective policy is
the plan's document with the key's merged over it (objects merge field by field, lists and
values replace), parsed into the frozen :class:`Policy` that verify evaluates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from keyplane.domain import globs, safe_regex
from keyplane.domain.decisions import Code
from keyplane.domain.network import IpRules, parse_ip, parse_network
from keyplane.domain.periods import Reset

MINUTE = 60
DAY = 86_400


@dataclass(frozen=True, slots=True)
class RateLimit:
    name: str
    limit: int
    period_seconds: int
    burst: int


@dataclass(frozen=True, slots=True)
class TokenLimits:
    input_per_minute: int | None = None
    output_per_minute: int | None = None
    total_per_minute: int | None = None
    total_per_day: int | None = None


@dataclass(frozen=True, slots=True)
class Budget:
    #: Micro-credits per period; ``None`` meters spending without a limit.
    credit_limit: int | None
    reset: Reset = Reset.NEVER
    #: Fractions of the limit, in basis points (0.8 -> 8000), so crossings are integer maths.
    alert_thresholds_bp: tuple[int, ...] = ()
    #: (model glob, micro-credits) pairs: a separate limit for matching models.
    per_model: tuple[tuple[str, int], ...] = ()

    def model_limit(self, model: str | None) -> tuple[str, int] | None:
        """The per-model budget that applies to ``model`` (the first matching pattern)."""
        if model is None:
            return None
        for pattern, limit in self.per_model:
            if globs.model_matches(pattern, model):
                return pattern, limit
        return None


@dataclass(frozen=True, slots=True)
class NetworkRules:
    ip: IpRules = field(default_factory=IpRules)
    origins: tuple[str, ...] = ()
    referrers: tuple[str, ...] = ()
    user_agent: safe_regex.UserAgentRule | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    models_allow: tuple[str, ...] = ()
    models_deny: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()
    rate_limits: tuple[RateLimit, ...] = ()
    token_limits: TokenLimits | None = None
    max_parallel: int | None = None
    budget: Budget | None = None
    network: NetworkRules = field(default_factory=NetworkRules)


EMPTY = Policy()


@dataclass(frozen=True, slots=True)
class RequestContext:
    """What the gateway tells verify about the request it is about to serve."""

    model: str | None = None
    ip: str | None = None
    origin: str | None = None
    referrer: str | None = None
    user_agent: str | None = None


def merge_documents(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` over ``base``: nested objects merge, everything else replaces.

    A key that sets ``{"budget": {"credit_limit_micros": 10}}`` on a plan with a monthly
    budget keeps the plan's reset and thresholds; a key that sets ``rate_limits`` replaces the
    plan's list of windows.
    """
    merged = dict(base)
    for name, value in override.items():
        current = merged.get(name)
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            merged[name] = merge_documents(current, value)
        else:
            merged[name] = value
    return merged


def parse_policy(document: Mapping[str, Any]) -> Policy:
    """The policy a storage-form document describes. Raises ValueError on a bad document.

    Fields that are absent or ``null`` mean "no rule".
    """
    models = document.get("models") or {}
    network = document.get("network") or {}
    concurrency = document.get("concurrency") or {}
    return Policy(
        models_allow=tuple(models.get("allow") or ()),
        models_deny=tuple(models.get("deny") or ()),
        scopes=tuple(document.get("scopes") or ()),
        rate_limits=tuple(
            RateLimit(
                name=window["name"],
                limit=window["limit"],
                period_seconds=window["period"],
                burst=window.get("burst") or window["limit"],
            )
            for window in document.get("rate_limits") or ()
        ),
        token_limits=_token_limits(document.get("token_limits")),
        max_parallel=concurrency.get("max_parallel"),
        budget=_budget(document.get("budget")),
        network=NetworkRules(
            ip=IpRules(
                allow=tuple(parse_network(n) for n in network.get("ip_allow") or ()),
                deny=tuple(parse_network(n) for n in network.get("ip_deny") or ()),
            ),
            origins=tuple(network.get("origins") or ()),
            referrers=tuple(network.get("referrers") or ()),
            user_agent=(
                safe_regex.compile_stored(network["user_agent"])
                if network.get("user_agent")
                else None
            ),
        ),
    )


def _token_limits(document: Mapping[str, Any] | None) -> TokenLimits | None:
    if not document:
        return None
    limits = TokenLimits(
        input_per_minute=document.get("input_per_minute"),
        output_per_minute=document.get("output_per_minute"),
        total_per_minute=document.get("total_per_minute"),
        total_per_day=document.get("total_per_day"),
    )
    return None if limits == TokenLimits() else limits


def _budget(document: Mapping[str, Any] | None) -> Budget | None:
    if not document:
        return None
    return Budget(
        credit_limit=document.get("credit_limit_micros"),
        reset=Reset(document.get("reset") or Reset.NEVER),
        alert_thresholds_bp=tuple(
            sorted({round(t * 10_000) for t in document.get("alert_thresholds") or ()})
        ),
        per_model=tuple(
            (item["model"], item["credit_limit_micros"]) for item in document.get("per_model") or ()
        ),
    )


def check_request(policy: Policy, context: RequestContext) -> Code | None:
    """The first rule the request breaks, in the documented order, or ``None``.

    Order: model, IP, origin and referrer, user agent. Rules fail closed: a key limited to
    some models, networks, origins or agents refuses a request that does not say which.
    """
    model = context.model
    if model is not None and globs.any_model_matches(policy.models_deny, model):
        return Code.FORBIDDEN_MODEL
    if policy.models_allow and (
        model is None or not globs.any_model_matches(policy.models_allow, model)
    ):
        return Code.FORBIDDEN_MODEL
    rules = policy.network
    if (rules.ip.allow or rules.ip.deny) and not rules.ip.permits(
        None if context.ip is None else parse_ip(context.ip)
    ):
        return Code.IP_NOT_ALLOWED
    if rules.origins and (
        context.origin is None or not globs.any_url_matches(rules.origins, context.origin)
    ):
        return Code.ORIGIN_NOT_ALLOWED
    if rules.referrers and (
        context.referrer is None or not globs.any_url_matches(rules.referrers, context.referrer)
    ):
        return Code.ORIGIN_NOT_ALLOWED
    if rules.user_agent is not None and not safe_regex.ua_matches(
        rules.user_agent, context.user_agent
    ):
        return Code.USER_AGENT_NOT_ALLOWED
    return None


def effective_scopes(key_scopes: tuple[str, ...], policy: Policy) -> tuple[str, ...]:
    """A key's own scopes when it has any, else its plan's."""
    return key_scopes or policy.scopes


def token_windows(limits: TokenLimits) -> list[tuple[str, int, int, str]]:
    """(name, limit, period seconds, which tokens it counts) for each token limit set."""
    windows = []
    if limits.input_per_minute is not None:
        windows.append(("input_per_minute", limits.input_per_minute, MINUTE, "input"))
    if limits.output_per_minute is not None:
        windows.append(("output_per_minute", limits.output_per_minute, MINUTE, "output"))
    if limits.total_per_minute is not None:
        windows.append(("total_per_minute", limits.total_per_minute, MINUTE, "total"))
    if limits.total_per_day is not None:
        windows.append(("total_per_day", limits.total_per_day, DAY, "total"))
    return windows
