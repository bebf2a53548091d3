"""The policy as the API speaks it, and its translation to and from the domain spec.

The API takes credits as decimals and periods as ``"1m"`` or seconds; the domain's
:class:`~keyplane.domain.policy_spec.PolicySpec` holds micro-credits and seconds, and is the
only thing that reads or writes the stored document. Every rule is checked here, field by
field, so a bad policy is a 422 that names the field, and nothing is stored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)

from keyplane.api import exact
from keyplane.api.fields import Input, Integral, KeysByPattern, Scopes, documented
from keyplane.domain import globs, money, request_signing, safe_regex
from keyplane.domain import policy_spec as spec
from keyplane.domain.network import parse_network
from keyplane.domain.periods import (
    MAX_DURATION_SECONDS,
    MIN_DURATION_SECONDS,
    Reset,
    format_duration,
    parse_duration,
)

MAX_COUNT = 10**12
#: Waiters one key may queue for a concurrency slot (``concurrency.max_queued``).
MAX_QUEUED = 10_000
#: Names in one list of features, operations or providers.
MAX_NAMES = 100


def _credits(value: object) -> Decimal:
    """Credits arrive as JSON numbers (0.10) or decimal strings ("0.10"), never as booleans.

    Parsed here, by the bounded domain parser, before pydantic's own Decimal handling sees the
    value: a string such as "1e200000" is cheap to hold but costly to convert, so nothing else
    may touch it first. A number from a request body is read from its own text; another float
    through its shortest text, so 0.1 means one tenth.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ValueError("credits are a number, e.g. 12.5")
    # A number parsed by the API (exact.JsonNumber) is read from its text, digit for digit.
    micros = money.to_micros(exact.exact_text(value))  # type: ignore[arg-type]
    if micros < 0:
        raise ValueError("credits are not negative")
    return money.to_decimal(micros)


def _network(value: str) -> str:
    return str(parse_network(value))


def _user_agent(value: str) -> str:
    safe_regex.compile_safe(value)
    return value


def _country(value: str) -> str:
    # ISO 3166-1 alpha-2 by shape: two ASCII letters (user-assigned codes such as "XX" too),
    # normalised to upper case as GeoIP databases and CF-IPCountry write them.
    if len(value) != 2 or not (value.isascii() and value.isalpha()):
        raise ValueError("a country is an ISO 3166-1 alpha-2 code: two letters, e.g. DE")
    return value.upper()


def _up_to(limit: int, max_digits: int) -> str:
    """A regex for the decimal numbers 1..``limit``, with leading zeros up to ``max_digits``."""
    top = str(limit)
    # (length without leading zeros, regex): every shorter length whole, then the numbers of
    # the top's length that stay under it digit by digit, then the top itself.
    shapes = [(length, f"[1-9][0-9]{{{length - 1}}}") for length in range(1, len(top))]
    for index, digit in enumerate(top):
        low = 1 if index == 0 else 0
        if int(digit) > low:
            rest = len(top) - index - 1
            shapes.append((len(top), f"{top[:index]}[{low}-{int(digit) - 1}][0-9]{{{rest}}}"))
    shapes.append((len(top), top))
    return "|".join(f"0{{0,{max_digits - length}}}{regex}" for length, regex in shapes)


#: ``parse_duration``'s text form within its range, e.g. "30s", "15m", "1h", "7d", "60".
DURATION_PATTERN = (
    f"^(?:(?:{_up_to(MAX_DURATION_SECONDS, 12)})s?"
    + "".join(
        f"|(?:{_up_to(MAX_DURATION_SECONDS // seconds, 12)}){unit}"
        for unit, seconds in (("m", 60), ("h", 3600), ("d", 86400))
    )
    + ")$"
)


def duration_pattern(maximum: int) -> str:
    """``parse_duration``'s text form for 1..``maximum`` seconds, as an anchored regex."""
    return (
        f"^(?:(?:{_up_to(maximum, 12)})s?"
        + "".join(
            f"|(?:{_up_to(maximum // seconds, 12)}){unit}"
            for unit, seconds in (("m", 60), ("h", 3600), ("d", 86400))
        )
        + ")$"
    )


def _duration(value: object) -> int:
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        value = int(value)  # 60.0 is 60, as for every integer field (fields.Integral)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError('period is "30s", "1m", "1h", "1d", "7d" or a number of seconds')
    return parse_duration(value)


Credits = Annotated[Decimal, BeforeValidator(_credits), Field(ge=0)]
Count = Annotated[int, Strict(), Field(ge=1, le=MAX_COUNT), Integral]
ModelPattern = Annotated[
    str,
    AfterValidator(globs.check_model_pattern),
    # Printable ASCII without spaces: what check_model_pattern accepts.
    documented(
        minLength=1, maxLength=globs.MAX_MODEL_PATTERN_LENGTH, pattern=r"^[\u0021-\u007e]*$"
    ),
]
UrlPattern = Annotated[
    str,
    AfterValidator(globs.check_url_pattern),
    documented(minLength=1, maxLength=globs.MAX_URL_PATTERN_LENGTH),
]
Network = Annotated[str, StringConstraints(max_length=64), AfterValidator(_network)]
Country = Annotated[
    str,
    AfterValidator(_country),
    documented(minLength=2, maxLength=2, pattern=r"^[A-Za-z]{2}$"),
]
HostPattern = Annotated[
    str,
    AfterValidator(globs.check_host_pattern),
    documented(minLength=1, maxLength=globs.MAX_HOST_LENGTH + 2, pattern=r"^[\u0021-\u007e]*$"),
]
UserAgentGlob = Annotated[
    str,
    AfterValidator(globs.check_user_agent_glob),
    documented(
        minLength=1, maxLength=globs.MAX_USER_AGENT_GLOB_LENGTH, pattern=r"^[\u0020-\u007e]*$"
    ),
]
Period = Annotated[
    int,
    BeforeValidator(_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {
                    "type": "integer",
                    "minimum": MIN_DURATION_SECONDS,
                    "maximum": MAX_DURATION_SECONDS,
                },
                {"type": "string", "pattern": DURATION_PATTERN},
            ]
        }
    ),
]
Threshold = Annotated[float, Field(gt=0, le=10)]


def _budget_reset(value: Reset) -> Reset:
    if value is Reset.HOURLY:
        raise ValueError(
            "a budget resets daily, weekly, monthly or never (costs.per_hour_max is the hourly cap)"
        )
    return value


#: A budget's reset: every Reset but the hourly one, which only cost windows use.
BudgetReset = Annotated[
    Reset,
    AfterValidator(_budget_reset),
    WithJsonSchema({"type": "string", "enum": ["never", "daily", "weekly", "monthly"]}),
]


class ModelCostLimit(Input):
    max_requests_per_day: Count | None = Field(
        default=None, description="requests per UTC calendar day for these models (RATE_LIMITED)"
    )
    max_tokens_per_request: Count | None = Field(
        default=None, description="verify's tokens_in + tokens_out (TOKEN_LIMITED)"
    )
    max_cost_per_day: Credits | None = Field(
        default=None, description="credits per UTC day for these models (COST_LIMITED)"
    )


#: How many model patterns ``models.cost_limits`` may hold.
MAX_COST_LIMITS = 50


class ModelRules(Input):
    allow: Annotated[list[ModelPattern], Field(max_length=200)] = []
    deny: Annotated[list[ModelPattern], Field(max_length=200)] = []
    cost_limits: Annotated[
        dict[ModelPattern, ModelCostLimit], Field(max_length=MAX_COST_LIMITS), KeysByPattern
    ] = Field(default={}, description="limits for models matching each pattern; first match")


class RateLimit(Input):
    name: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_:.-]{0,63}$")]
    limit: Count
    period: Period = Field(description='"1s".."30d": "30s", "1m", "1h", "1d", "7d" or seconds')
    burst: Count | None = Field(default=None, description="defaults to limit")


class TokenLimits(Input):
    input_per_minute: Count | None = None
    output_per_minute: Count | None = None
    total_per_minute: Count | None = None
    total_per_day: Count | None = None


class Concurrency(Input):
    max_parallel: Annotated[int, Strict(), Field(ge=1, le=1_000_000), Integral]
    max_queued: Annotated[int, Strict(), Field(ge=0, le=MAX_QUEUED), Integral] | None = Field(
        default=None,
        description="verifies that ask to wait (wait_ms) queue for a slot, at most this many",
    )


#: Feature, operation and provider names: short lowercase identifiers (bounded before use).
NAME_PATTERN = r"^[a-z0-9][a-z0-9_.:-]{0,63}$"
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
Flag = Annotated[bool, Strict()]


class FeatureRules(Input):
    allow: Annotated[list[Name], Field(max_length=MAX_NAMES)] = Field(
        default=[], description="features a key may use (empty: any not denied)"
    )
    deny: Annotated[list[Name], Field(max_length=MAX_NAMES)] = []


class DataAccess(Input):
    log_requests: Flag | None = None
    log_responses: Flag | None = None
    export_data: Flag | None = None
    delete_data: Flag | None = None


class Routing(Input):
    allow_auto_routing: Flag | None = None
    allowed_providers: Annotated[list[Name], Field(max_length=MAX_NAMES)] | None = None
    force_provider: Name | None = None
    fallback_allowed: Flag | None = None


class Rollover(Input):
    enabled: Annotated[bool, Strict()] = Field(
        default=False, description="carry unused allowance into the next period"
    )
    max_carry: Credits | None = Field(
        default=None, description="the most that carries (credits); null: credit_limit"
    )


class Budget(Input):
    credit_limit: Credits | None = Field(default=None, description="credits per period")
    reset: BudgetReset = Reset.NEVER
    alert_thresholds: Annotated[list[Threshold], Field(max_length=10)] = Field(
        default=[], description="fractions of credit_limit, e.g. [0.8, 1.0]"
    )
    per_model: Annotated[dict[ModelPattern, Credits], Field(max_length=50), KeysByPattern] = Field(
        default={}, description="a separate credit limit for models matching each pattern"
    )
    rollover: Rollover | None = Field(
        default=None,
        description="carry = min(max_carry, max(0, credit_limit - last period's spending)); "
        "no compounding; not for reset never",
    )


class Costs(Input):
    per_request_max: Credits | None = Field(
        default=None, description="the most one verify's cost estimate may be (COST_LIMITED)"
    )
    per_hour_max: Credits | None = Field(default=None, description="credits per UTC hour")
    per_day_max: Credits | None = Field(default=None, description="credits per UTC day")
    per_month_max: Credits | None = Field(default=None, description="credits per UTC month")
    alert_threshold: Annotated[float, Field(gt=0, le=1)] | None = Field(
        default=None, description="fraction of each window's limit that raises an alert"
    )


class NetworkRules(Input):
    ip_allow: Annotated[list[Network], Field(max_length=1000)] = []
    ip_deny: Annotated[list[Network], Field(max_length=1000)] = []
    origins: Annotated[list[UrlPattern], Field(max_length=100)] = []
    referrers: Annotated[list[UrlPattern], Field(max_length=100)] = []
    user_agent: (
        Annotated[
            str,
            StringConstraints(min_length=1, max_length=safe_regex.MAX_PATTERN_LENGTH),
            AfterValidator(_user_agent),
        ]
        | None
    ) = Field(default=None, description="a regex (RE2) the User-Agent must match")
    require_https: Annotated[bool, Strict()] | None = Field(
        default=None, description="refuse requests the gateway saw over plain HTTP"
    )
    countries_allow: Annotated[list[Country], Field(max_length=300)] = Field(
        default=[], description="ISO 3166-1 alpha-2 codes the request may come from"
    )
    countries_deny: Annotated[list[Country], Field(max_length=300)] = Field(
        default=[], description="ISO 3166-1 alpha-2 codes the request may not come from"
    )
    user_agents: Annotated[list[UserAgentGlob], Field(max_length=50)] = Field(
        default=[], description="User-Agent globs (* and ?), one must match the whole agent"
    )
    domains: Annotated[list[HostPattern], Field(max_length=100)] = Field(
        default=[], description="host globs the Origin (or else Referer) host must match"
    )


class Signing(Input):
    # The schema says what _nonce_needs_timestamp enforces: not (require_timestamp false
    # while require_nonce is true or absent, its default being true).
    model_config = ConfigDict(
        json_schema_extra={
            "not": {
                "required": ["require_timestamp"],
                "properties": {
                    "require_timestamp": {"const": False},
                    "require_nonce": {"not": {"const": False}},
                },
            }
        }
    )

    required: Annotated[bool, Strict()] = Field(
        default=True, description="requests must be signed with the key's signing secret"
    )
    algorithm: Literal["HMAC-SHA256"] = "HMAC-SHA256"
    require_timestamp: Annotated[bool, Strict()] = True
    max_timestamp_age: Annotated[
        int, Strict(), Field(ge=1, le=request_signing.MAX_MAX_AGE), Integral
    ] = Field(default=request_signing.DEFAULT_MAX_AGE, description="seconds, either side of now")
    require_nonce: Annotated[bool, Strict()] = True

    @model_validator(mode="after")
    def _nonce_needs_timestamp(self) -> Signing:
        if self.require_nonce and not self.require_timestamp:
            raise ValueError(
                "require_nonce needs require_timestamp: a nonce is remembered only as long as "
                "its timestamp is accepted"
            )
        return self


class PolicyIn(Input):
    """A key's overrides or a plan's policy; absent fields mean "no rule" (or "as the plan")."""

    models: ModelRules | None = None
    scopes: Scopes | None = None
    rate_limits: Annotated[list[RateLimit], Field(max_length=20)] | None = None
    token_limits: TokenLimits | None = None
    concurrency: Concurrency | None = None
    budget: Budget | None = None
    network: NetworkRules | None = None
    costs: Costs | None = None
    signing: Signing | None = None
    features: FeatureRules | None = None
    advanced_features: (
        Annotated[dict[Name, Flag], Field(max_length=MAX_NAMES), KeysByPattern] | None
    ) = Field(default=None, description="optional features switched on or off, by name")
    data_access: DataAccess | None = None
    operations: Annotated[list[Name], Field(max_length=MAX_NAMES)] | None = Field(
        default=None, description='operations a key may perform, e.g. ["read", "write"]'
    )
    routing: Routing | None = None
    require_approval: Flag | None = Field(
        default=None, description="keys created under it are pending until approved"
    )

    @model_validator(mode="after")
    def _unique_window_names(self) -> PolicyIn:
        names = [window.name for window in self.rate_limits or ()]
        if len(names) != len(set(names)):
            raise ValueError("rate limit names must be unique")
        for window in self.rate_limits or ():
            burst = window.limit if window.burst is None else window.burst
            # A full burst takes burst / limit periods to drain; past a year it is a typo.
            if burst * window.period > window.limit * 366 * 86_400:
                raise ValueError(
                    f"rate limit {window.name!r}: a burst of {burst} at {window.limit} per "
                    f"{window.period} s takes more than a year to drain"
                )
        return self


def spec_of(policy: PolicyIn | None) -> spec.PolicySpec:
    """The domain spec of an API policy: the fields given (``UNSET`` for the others),
    credits as micro-credits, periods in seconds."""
    if policy is None:
        return spec.PolicySpec()
    return spec.PolicySpec(
        models=_given(
            policy,
            "models",
            lambda m: spec.ModelRules(
                allow=_given(m, "allow", tuple),
                deny=_given(m, "deny", tuple),
                cost_limits=_given(m, "cost_limits", _cost_limits_spec),
            ),
        ),
        scopes=_given(policy, "scopes", tuple),
        rate_limits=_given(
            policy,
            "rate_limits",
            lambda windows: tuple(
                spec.RateWindow(w.name, w.limit, w.period, _given(w, "burst")) for w in windows
            ),
        ),
        token_limits=_given(
            policy,
            "token_limits",
            lambda t: spec.TokenLimits(**{n: _given(t, n) for n in TokenLimits.model_fields}),
        ),
        concurrency=_given(
            policy,
            "concurrency",
            lambda c: spec.Concurrency(
                max_parallel=c.max_parallel, max_queued=_given(c, "max_queued")
            ),
        ),
        budget=_given(policy, "budget", _budget_spec),
        costs=_given(policy, "costs", _costs_spec),
        network=_given(
            policy,
            "network",
            lambda n: spec.NetworkRules(
                **{
                    name: _given(n, name, None if name in _SCALARS else tuple)
                    for name in NetworkRules.model_fields
                }
            ),
        ),
        signing=_given(
            policy,
            "signing",
            lambda s: spec.Signing(**{name: _given(s, name) for name in Signing.model_fields}),
        ),
        features=_given(
            policy,
            "features",
            lambda f: spec.FeatureRules(
                allow=_given(f, "allow", tuple), deny=_given(f, "deny", tuple)
            ),
        ),
        advanced_features=_given(
            policy, "advanced_features", lambda flags: tuple(sorted(flags.items()))
        ),
        data_access=_given(
            policy,
            "data_access",
            lambda d: spec.DataAccess(**{n: _given(d, n) for n in DataAccess.model_fields}),
        ),
        operations=_given(policy, "operations", tuple),
        routing=_given(
            policy,
            "routing",
            lambda r: spec.Routing(
                allow_auto_routing=_given(r, "allow_auto_routing"),
                allowed_providers=_given(r, "allowed_providers", tuple),
                force_provider=_given(r, "force_provider"),
                fallback_allowed=_given(r, "fallback_allowed"),
            ),
        ),
        require_approval=_given(policy, "require_approval"),
    )


_SCALARS = frozenset({"user_agent", "require_https"})


def _given(model: Input, name: str, convert: Callable[[Any], Any] | None = None) -> Any:
    """A field of an API model as a spec field: ``UNSET`` unless the request gave it."""
    if name not in model.model_fields_set:
        return spec.UNSET
    value = getattr(model, name)
    if value is None or convert is None:
        return value
    return convert(value)


def _budget_spec(budget: Budget) -> spec.Budget:
    return spec.Budget(
        credit_limit_micros=_given(budget, "credit_limit", money.to_micros),
        reset=_given(budget, "reset", Reset),
        alert_thresholds=_given(budget, "alert_thresholds", tuple),
        per_model=_given(
            budget,
            "per_model",
            lambda limits: tuple(
                spec.ModelBudget(pattern, money.to_micros(amount))
                for pattern, amount in limits.items()
            ),
        ),
        rollover=_given(
            budget,
            "rollover",
            lambda r: spec.Rollover(
                r.enabled, None if r.max_carry is None else money.to_micros(r.max_carry)
            ),
        ),
    )


def _cost_limits_spec(limits: dict[str, ModelCostLimit]) -> tuple[spec.ModelCostLimit, ...]:
    return tuple(
        spec.ModelCostLimit(
            pattern,
            item.max_requests_per_day,
            item.max_tokens_per_request,
            None if item.max_cost_per_day is None else money.to_micros(item.max_cost_per_day),
        )
        for pattern, item in limits.items()
    )


def _costs_spec(costs: Costs) -> spec.Costs:
    return spec.Costs(
        per_request_max_micros=_given(costs, "per_request_max", money.to_micros),
        per_hour_max_micros=_given(costs, "per_hour_max", money.to_micros),
        per_day_max_micros=_given(costs, "per_day_max", money.to_micros),
        per_month_max_micros=_given(costs, "per_month_max", money.to_micros),
        alert_threshold=_given(costs, "alert_threshold"),
    )


def to_document(policy: PolicyIn | None) -> dict[str, Any]:
    """The storage form of an API policy: only the fields given, micro-credits, seconds."""
    return spec_of(policy).to_document()


def to_api(document: dict[str, Any]) -> dict[str, Any]:
    """The API form of a stored policy document."""
    return api_form(spec.PolicySpec.from_document(document))


def api_form(policy: spec.PolicySpec) -> dict[str, Any]:
    """A spec as the API shows it: the fields set, credits exact, periods as ``"1m"``."""
    form: dict[str, Any] = {}
    _show(form, "models", policy.models, _models_form)
    _show(form, "scopes", policy.scopes, list)
    _show(form, "rate_limits", policy.rate_limits, lambda ws: [_window_form(w) for w in ws])
    _show(form, "token_limits", policy.token_limits, _section_form)
    _show(form, "concurrency", policy.concurrency, _section_form)
    _show(form, "budget", policy.budget, _budget_form)
    _show(form, "network", policy.network, _section_form)
    _show(form, "costs", policy.costs, _costs_form)
    _show(form, "signing", policy.signing, _section_form)
    _show(form, "features", policy.features, _section_form)
    _show(form, "advanced_features", policy.advanced_features, dict)
    _show(form, "data_access", policy.data_access, _section_form)
    _show(form, "operations", policy.operations, list)
    _show(form, "routing", policy.routing, _section_form)
    _show(form, "require_approval", policy.require_approval, bool)
    return form


def _show(form: dict[str, Any], name: str, value: Any, render: Callable[[Any], Any]) -> None:
    if value is not spec.UNSET:
        form[name] = None if value is None else render(value)


def _section_form(section: Any) -> dict[str, Any]:
    form: dict[str, Any] = {}
    for item in dataclasses.fields(section):
        _show(form, item.name, getattr(section, item.name), _plain)
    return form


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _window_form(window: spec.RateWindow) -> dict[str, Any]:
    form: dict[str, Any] = {
        "name": window.name,
        "limit": window.limit,
        "period": format_duration(window.period_seconds),
    }
    _show(form, "burst", window.burst, _plain)
    return form


def _budget_form(budget: spec.Budget) -> dict[str, Any]:
    form: dict[str, Any] = {}
    _show(form, "credit_limit", budget.credit_limit_micros, exact.credits)
    _show(form, "reset", budget.reset, lambda reset: reset.value)
    _show(form, "alert_thresholds", budget.alert_thresholds, list)
    _show(
        form,
        "per_model",
        budget.per_model,
        lambda items: {item.model: exact.credits(item.credit_limit_micros) for item in items},
    )
    _show(
        form,
        "rollover",
        budget.rollover,
        lambda r: {
            "enabled": r.enabled,
            "max_carry": None if r.max_carry_micros is None else exact.credits(r.max_carry_micros),
        },
    )
    return form


def _models_form(models: spec.ModelRules) -> dict[str, Any]:
    form = _section_form(dataclasses.replace(models, cost_limits=spec.UNSET))
    _show(
        form,
        "cost_limits",
        models.cost_limits,
        lambda items: {item.model: _cost_limit_form(item) for item in items},
    )
    return form


def _cost_limit_form(item: spec.ModelCostLimit) -> dict[str, Any]:
    form: dict[str, Any] = {}
    if item.max_requests_per_day is not None:
        form["max_requests_per_day"] = item.max_requests_per_day
    if item.max_tokens_per_request is not None:
        form["max_tokens_per_request"] = item.max_tokens_per_request
    if item.max_cost_per_day_micros is not None:
        form["max_cost_per_day"] = exact.credits(item.max_cost_per_day_micros)
    return form


def _costs_form(costs: spec.Costs) -> dict[str, Any]:
    form: dict[str, Any] = {}
    for name in ("per_request_max", "per_hour_max", "per_day_max", "per_month_max"):
        _show(form, name, getattr(costs, f"{name}_micros"), exact.credits)
    _show(form, "alert_threshold", costs.alert_threshold, _plain)
    return form
