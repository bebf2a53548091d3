"""Key policies evaluated: the frozen :class:`Policy` verify reads, and the pure checks.

The stored document is read and written only by ``domain.policy_spec`` (:class:`PolicySpec`),
which also merges a key's overrides over its plan's policy; :func:`compile_policy` turns the
merged spec into the :class:`Policy` that verify evaluates.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from keyplane.domain import globs, safe_regex
from keyplane.domain import policy_spec as spec
from keyplane.domain.admission import cost_scope
from keyplane.domain.decisions import Code
from keyplane.domain.frozen import fast_init
from keyplane.domain.network import IpRules, parse_ip, parse_network
from keyplane.domain.periods import Reset
from keyplane.domain.request_signing import DEFAULT_MAX_AGE, SignedRequest, SigningRule

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
    #: The most unused allowance that carries into the next period (micro-credits), or None
    #: without rollover (``domain/rollover.py``). Never set for a budget that never resets.
    max_carry: int | None = None

    def model_limit(self, model: str | None) -> tuple[str, int] | None:
        """The per-model budget that applies to ``model`` (the first matching pattern)."""
        if model is None:
            return None
        for pattern, limit in self.per_model:
            if globs.model_matches(pattern, model):
                return pattern, limit
        return None


@dataclass(frozen=True, slots=True)
class CostWindow:
    """A calendar-window budget of ``costs``: micro-credits per hour, day or month."""

    #: The policy field it comes from ("per_hour_max", ...).
    name: str
    reset: Reset
    limit: int
    #: Its budget counter's scope (``admission.cost_scope``), worked out once.
    scope: str = ""

    @property
    def label(self) -> str:
        """Its name in a verdict's limits: ``costs.per_hour_max``."""
        return f"costs.{self.name}"


@dataclass(frozen=True, slots=True)
class Costs:
    #: The most one request's cost estimate may be, in micro-credits.
    per_request_max: int | None = None
    windows: tuple[CostWindow, ...] = ()
    #: The alert threshold in basis points of each window's limit (0.8 -> 8000).
    alert_threshold_bp: int | None = None


@dataclass(frozen=True, slots=True)
class ModelCostLimit:
    pattern: str
    max_requests_per_day: int | None = None
    max_tokens_per_request: int | None = None
    #: Micro-credits per calendar day (UTC).
    max_cost_per_day: int | None = None


@dataclass(frozen=True, slots=True)
class NetworkRules:
    ip: IpRules = field(default_factory=IpRules)
    origins: tuple[str, ...] = ()
    referrers: tuple[str, ...] = ()
    user_agent: safe_regex.UserAgentRule | None = None
    require_https: bool = False
    countries_allow: frozenset[str] = frozenset()
    countries_deny: frozenset[str] = frozenset()
    user_agents: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()

    @property
    def has_countries(self) -> bool:
        return bool(self.countries_allow or self.countries_deny)


@dataclass(frozen=True, slots=True)
class Permissions:
    """Feature, operation and provider rules: enforced for what verify is told, else no rule.

    Unlike models, these do not fail closed on a request that does not name its feature,
    operation or provider: a gateway that cannot tell gets them as directives instead.
    """

    features_allow: frozenset[str] = frozenset()
    features_deny: frozenset[str] = frozenset()
    #: ``advanced_features`` switched on (an addition to ``features_allow``) and off.
    advanced_on: frozenset[str] = frozenset()
    advanced_off: frozenset[str] = frozenset()
    #: ``None``: any operation.
    operations: frozenset[str] | None = None
    #: ``data_access`` flags that are set: an operation of that name is admitted or refused.
    data_access: tuple[tuple[str, bool], ...] = ()
    allowed_providers: frozenset[str] | None = None
    force_provider: str | None = None
    allow_auto_routing: bool | None = None
    fallback_allowed: bool | None = None

    @property
    def active(self) -> bool:
        # compile_policy hands out the one empty instance: an identity test on the hot path.
        return self is not _NO_PERMISSIONS


_NO_PERMISSIONS = Permissions()


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
    costs: Costs | None = None
    #: ``models.cost_limits`` in order: the first pattern matching the model applies.
    model_cost_limits: tuple[ModelCostLimit, ...] = ()

    def model_cost_limit(self, model: str | None) -> ModelCostLimit | None:
        """The ``models.cost_limits`` entry that applies to ``model`` (the first match)."""
        if model is None:
            return None
        for limits in self.model_cost_limits:
            if globs.model_matches(limits.pattern, model):
                return limits
        return None

    #: ``None`` unless the policy requires signed requests.
    signing: SigningRule | None = None
    permissions: Permissions = _NO_PERMISSIONS
    #: What the gateway must do for this key's requests (``data_access``, ``routing``,
    #: ``advanced_features``), as the verdict's ``directives`` shows it; compiled once.
    directives: Mapping[str, Any] = field(default_factory=dict, compare=False)
    require_approval: bool = False
    max_queued: int = 0
    #: No request rule, cost cap or limit of any kind (:func:`without_rules`): verify skips the
    #: request checks and the admission, which could only pass and build nothing. Worked out
    #: whenever a policy is made, ``dataclasses.replace`` included, never given.
    unrestricted: bool = field(default=False, init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "unrestricted", without_rules(self))


#: What only describes a key, checks nothing and limits nothing.
_DESCRIPTIVE = frozenset({"scopes", "directives", "require_approval", "unrestricted"})


def without_rules(policy: Policy) -> bool:
    """Whether ``policy`` has no rule verify checks and no limit it admits against: every
    field at its default but those that only describe the key (scopes, directives, approval).
    Field by field, so a field added to :class:`Policy` counts as a rule until said otherwise."""
    for item in dataclasses.fields(policy):
        if item.name in _DESCRIPTIVE:
            continue
        default = (
            item.default_factory()
            if item.default is dataclasses.MISSING
            and item.default_factory is not dataclasses.MISSING
            else item.default
        )
        if getattr(policy, item.name) != default:
            return False
    return True


EMPTY = Policy()


@fast_init
@dataclass(frozen=True, slots=True)
class RequestContext:
    """What the gateway tells verify about the request it is about to serve."""

    model: str | None = None
    ip: str | None = None
    origin: str | None = None
    referrer: str | None = None
    user_agent: str | None = None
    #: "http" or "https", as the gateway saw the client's request.
    scheme: str | None = None
    #: ISO 3166-1 alpha-2 code (upper case) from a trusted header or the GeoIP database.
    country: str | None = None
    #: The request's signing parts, when it came with a signature (see request_signing).
    signed: SignedRequest | None = None
    #: Features the request uses (``chat_completion``, ``vision``, ...).
    features: tuple[str, ...] = ()
    #: ``read``, ``write``, or a ``data_access`` flag's name such as ``export_data``.
    operation: str | None = None
    #: The upstream provider the gateway is about to call.
    provider: str | None = None
    #: Whether the gateway chose the provider by automatic routing / as a fallback.
    auto_routing: bool = False
    fallback: bool = False


def merge_documents(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` over ``base`` as stored documents (see :meth:`PolicySpec.merged_over`)."""
    return spec.effective(base, override).to_document()


def parse_policy(document: Mapping[str, Any]) -> Policy:
    """The policy a stored document describes. Raises ValueError on a bad document."""
    return compile_policy(spec.PolicySpec.from_document(document))


def compile_policy(policy: spec.PolicySpec) -> Policy:
    """What verify evaluates for a (merged) spec; ValueError when a rule does not compile.

    Fields that are absent or ``null`` mean "no rule".
    """
    models = spec.value_or(policy.models, spec.ModelRules())
    network = spec.value_or(policy.network, spec.NetworkRules())
    concurrency = spec.value_or(policy.concurrency, spec.Concurrency())
    user_agent = network.user_agent
    return Policy(
        models_allow=spec.value_or(models.allow, ()),
        models_deny=spec.value_or(models.deny, ()),
        scopes=spec.value_or(policy.scopes, ()),
        rate_limits=tuple(
            RateLimit(
                name=window.name,
                limit=window.limit,
                period_seconds=window.period_seconds,
                burst=spec.value_or(window.burst, 0) or window.limit,
            )
            for window in spec.value_or(policy.rate_limits, ())
        ),
        token_limits=_token_limits(policy.token_limits),
        max_parallel=spec.value_or(concurrency.max_parallel, None),
        budget=_budget(policy.budget),
        costs=_costs(policy.costs),
        model_cost_limits=tuple(
            ModelCostLimit(
                item.model,
                item.max_requests_per_day,
                item.max_tokens_per_request,
                item.max_cost_per_day_micros,
            )
            for item in spec.value_or(models.cost_limits, ())
        ),
        permissions=_permissions(policy),
        directives=_directives(policy),
        require_approval=spec.value_or(policy.require_approval, False),
        max_queued=spec.value_or(concurrency.max_queued, None) or 0,
        network=NetworkRules(
            ip=IpRules(
                allow=tuple(parse_network(n) for n in spec.value_or(network.ip_allow, ())),
                deny=tuple(parse_network(n) for n in spec.value_or(network.ip_deny, ())),
            ),
            origins=spec.value_or(network.origins, ()),
            referrers=spec.value_or(network.referrers, ()),
            user_agent=(
                safe_regex.compile_stored(user_agent)
                if isinstance(user_agent, str) and user_agent
                else None
            ),
            require_https=spec.value_or(network.require_https, False),
            countries_allow=frozenset(spec.value_or(network.countries_allow, ())),
            countries_deny=frozenset(spec.value_or(network.countries_deny, ())),
            user_agents=spec.value_or(network.user_agents, ()),
            domains=spec.value_or(network.domains, ()),
        ),
        signing=_signing(policy.signing),
    )


def _signing(section: spec.Field[spec.Signing]) -> SigningRule | None:
    if not isinstance(section, spec.Signing) or not spec.value_or(section.required, True):
        return None
    algorithm = spec.value_or(section.algorithm, "HMAC-SHA256")
    if algorithm != "HMAC-SHA256":
        raise ValueError(f"unknown signing algorithm {algorithm!r}")
    require_nonce = spec.value_or(section.require_nonce, True)
    return SigningRule(
        max_age=spec.value_or(section.max_timestamp_age, DEFAULT_MAX_AGE),
        # A nonce is forgotten once its timestamp is too old to pass: without a timestamp it
        # could come back after that, so requiring a nonce requires a timestamp too.
        require_timestamp=spec.value_or(section.require_timestamp, True) or require_nonce,
        require_nonce=require_nonce,
    )


def _permissions(policy: spec.PolicySpec) -> Permissions:
    features = spec.value_or(policy.features, spec.FeatureRules())
    flags = spec.value_or(policy.advanced_features, ())
    data = spec.value_or(policy.data_access, spec.DataAccess())
    routing = spec.value_or(policy.routing, spec.Routing())
    operations = spec.value_or(policy.operations, None)
    providers = spec.value_or(routing.allowed_providers, None)
    force = spec.value_or(routing.force_provider, None)
    permissions = Permissions(
        features_allow=frozenset(spec.value_or(features.allow, ())),
        features_deny=frozenset(spec.value_or(features.deny, ())),
        advanced_on=frozenset(name for name, on in flags if on),
        advanced_off=frozenset(name for name, on in flags if not on),
        operations=None if operations is None else frozenset(operations),
        data_access=tuple(
            (item.name, value)
            for item in dataclasses.fields(data)
            if isinstance(value := getattr(data, item.name), bool)
        ),
        allowed_providers=None if providers is None else frozenset(p.lower() for p in providers),
        force_provider=None if force is None else force.lower(),
        allow_auto_routing=spec.value_or(routing.allow_auto_routing, None),
        fallback_allowed=spec.value_or(routing.fallback_allowed, None),
    )
    return _NO_PERMISSIONS if permissions == _NO_PERMISSIONS else permissions


def _directives(policy: spec.PolicySpec) -> dict[str, Any]:
    """The rules a gateway acts on itself (it logs, routes, enables features), set ones only."""
    directives: dict[str, Any] = {}
    data = spec.value_or(policy.data_access, None)
    if data is not None:
        flags = {
            item.name: value
            for item in dataclasses.fields(data)
            if isinstance(value := getattr(data, item.name), bool)
        }
        if flags:
            directives["data_access"] = flags
    routing = spec.value_or(policy.routing, None)
    if routing is not None:
        rules: dict[str, Any] = {}
        for item in dataclasses.fields(routing):
            value = getattr(routing, item.name)
            if value is not spec.UNSET:
                rules[item.name] = list(value) if isinstance(value, tuple) else value
        if rules:
            directives["routing"] = rules
    flags_set = spec.value_or(policy.advanced_features, ())
    if flags_set:
        directives["advanced_features"] = dict(flags_set)
    return directives


def _token_limits(section: spec.Field[spec.TokenLimits]) -> TokenLimits | None:
    if not isinstance(section, spec.TokenLimits):
        return None
    limits = TokenLimits(
        input_per_minute=spec.value_or(section.input_per_minute, None),
        output_per_minute=spec.value_or(section.output_per_minute, None),
        total_per_minute=spec.value_or(section.total_per_minute, None),
        total_per_day=spec.value_or(section.total_per_day, None),
    )
    return None if limits == TokenLimits() else limits


def _budget(section: spec.Field[spec.Budget]) -> Budget | None:
    if not isinstance(section, spec.Budget) or section == spec.Budget():
        return None
    return Budget(
        credit_limit=spec.value_or(section.credit_limit_micros, None),
        reset=spec.value_or(section.reset, Reset.NEVER),
        alert_thresholds_bp=tuple(
            sorted({round(t * 10_000) for t in spec.value_or(section.alert_thresholds, ())})
        ),
        per_model=tuple(
            (item.model, item.credit_limit_micros) for item in spec.value_or(section.per_model, ())
        ),
        max_carry=_max_carry(section),
    )


#: The calendar windows of ``costs``: (policy field, stored field, reset).
COST_WINDOWS = (
    ("per_hour_max", "per_hour_max_micros", Reset.HOURLY),
    ("per_day_max", "per_day_max_micros", Reset.DAILY),
    ("per_month_max", "per_month_max_micros", Reset.MONTHLY),
)


def _costs(section: spec.Field[spec.Costs]) -> Costs | None:
    if not isinstance(section, spec.Costs):
        return None
    windows = tuple(
        CostWindow(name, reset, limit, cost_scope(reset))
        for name, stored, reset in COST_WINDOWS
        if (limit := spec.value_or(getattr(section, stored), None)) is not None
    )
    threshold = spec.value_or(section.alert_threshold, None)
    costs = Costs(
        per_request_max=spec.value_or(section.per_request_max_micros, None),
        windows=windows,
        alert_threshold_bp=None if threshold is None else round(threshold * 10_000),
    )
    return None if costs == Costs() else costs


def check_costs(policy: Policy, model: str | None, cost: int, tokens: int) -> Code | None:
    """The per-request caps a request's estimates break: ``costs.per_request_max`` (cost,
    ``COST_LIMITED``), then the model's ``max_tokens_per_request`` (tokens in + out,
    ``TOKEN_LIMITED``); ``None`` when neither does. Nothing is consumed by them."""
    costs = policy.costs
    if costs is not None and costs.per_request_max is not None and cost > costs.per_request_max:
        return Code.COST_LIMITED
    limits = policy.model_cost_limit(model)
    if (
        limits is not None
        and limits.max_tokens_per_request is not None
        and tokens > limits.max_tokens_per_request
    ):
        return Code.TOKEN_LIMITED
    return None


def _max_carry(section: spec.Budget) -> int | None:
    rollover = spec.value_or(section.rollover, None)
    limit = spec.value_or(section.credit_limit_micros, None)
    reset = spec.value_or(section.reset, Reset.NEVER)
    if rollover is None or not rollover.enabled or limit is None or reset is Reset.NEVER:
        return None
    return limit if rollover.max_carry_micros is None else rollover.max_carry_micros


def check_request(policy: Policy, context: RequestContext) -> Code | None:
    """The first rule the request breaks, in the documented order, or ``None``.

    Order: model, HTTPS, IP, country, origin and referrer, domain, user agent, then the
    permissions (features, operation, provider: see :func:`check_permissions`). Network rules
    fail closed: a key limited to some models, networks, countries, origins, domains or agents
    refuses a request that does not say which (signing is checked by the verifier, before).
    """
    model = context.model
    if model is not None and globs.any_model_matches(policy.models_deny, model):
        return Code.FORBIDDEN_MODEL
    if policy.models_allow and (
        model is None or not globs.any_model_matches(policy.models_allow, model)
    ):
        return Code.FORBIDDEN_MODEL
    rules = policy.network
    if rules.require_https and context.scheme != "https":
        return Code.HTTPS_REQUIRED
    if (rules.ip.allow or rules.ip.deny) and not rules.ip.permits(
        None if context.ip is None else parse_ip(context.ip)
    ):
        return Code.IP_NOT_ALLOWED
    if rules.has_countries and (
        context.country is None
        or context.country in rules.countries_deny
        or (rules.countries_allow and context.country not in rules.countries_allow)
    ):
        return Code.COUNTRY_NOT_ALLOWED
    if rules.origins and (
        context.origin is None or not globs.any_url_matches(rules.origins, context.origin)
    ):
        return Code.ORIGIN_NOT_ALLOWED
    if rules.referrers and (
        context.referrer is None or not globs.any_url_matches(rules.referrers, context.referrer)
    ):
        return Code.ORIGIN_NOT_ALLOWED
    if rules.domains and not _domain_allowed(rules.domains, context):
        return Code.DOMAIN_NOT_ALLOWED
    if rules.user_agent is not None and not safe_regex.ua_matches(
        rules.user_agent, context.user_agent
    ):
        return Code.USER_AGENT_NOT_ALLOWED
    if rules.user_agents and not globs.any_user_agent_matches(
        rules.user_agents, context.user_agent
    ):
        return Code.USER_AGENT_NOT_ALLOWED
    if policy.permissions.active:
        return check_permissions(policy.permissions, context)
    return None


def check_permissions(rules: Permissions, context: RequestContext) -> Code | None:
    """Features, then operation, then provider: only what the request names is checked."""
    for feature in context.features:
        if feature in rules.features_deny or feature in rules.advanced_off:
            return Code.FEATURE_NOT_ALLOWED
        if (
            rules.features_allow
            and feature not in rules.features_allow
            and feature not in rules.advanced_on
        ):
            return Code.FEATURE_NOT_ALLOWED
    operation = context.operation
    if operation is not None:
        flag = next((on for name, on in rules.data_access if name == operation), None)
        if flag is False or (
            flag is None and rules.operations is not None and operation not in rules.operations
        ):
            return Code.OPERATION_NOT_ALLOWED
    if context.auto_routing and rules.allow_auto_routing is False:
        return Code.PROVIDER_NOT_ALLOWED
    if context.fallback and rules.fallback_allowed is False:
        return Code.PROVIDER_NOT_ALLOWED
    provider = context.provider
    if provider is not None:
        provider = provider.lower()
        if rules.force_provider is not None and provider != rules.force_provider:
            return Code.PROVIDER_NOT_ALLOWED
        if rules.allowed_providers is not None and provider not in rules.allowed_providers:
            return Code.PROVIDER_NOT_ALLOWED
    return None


def _domain_allowed(domains: tuple[str, ...], context: RequestContext) -> bool:
    """The host of the Origin, or else of the Referer, fits one of the host globs."""
    host = globs.host_of(context.origin) if context.origin is not None else None
    if host is None:
        host = globs.host_of(context.referrer)
    return host is not None and globs.any_host_matches(domains, host)


def effective_scopes(key_scopes: tuple[str, ...], policy: Policy) -> tuple[str, ...]:
    """A key's own scopes when it has any, else its plan's."""
    return key_scopes or policy.scopes


def token_windows(limits: TokenLimits) -> list[tuple[str, int, int, spec.TokenKind]]:
    """(name, limit, period seconds, which tokens it counts) for each token limit set."""
    kind = spec.TokenKind
    windows = []
    if limits.input_per_minute is not None:
        windows.append(("input_per_minute", limits.input_per_minute, MINUTE, kind.INPUT))
    if limits.output_per_minute is not None:
        windows.append(("output_per_minute", limits.output_per_minute, MINUTE, kind.OUTPUT))
    if limits.total_per_minute is not None:
        windows.append(("total_per_minute", limits.total_per_minute, MINUTE, kind.TOTAL))
    if limits.total_per_day is not None:
        windows.append(("total_per_day", limits.total_per_day, DAY, kind.TOTAL))
    return windows
