"""The policy as the API speaks it, and its translation to the storage form.

The API takes credits as decimals and periods as ``"1m"`` or seconds; the stored document
(``domain.policy``) holds micro-credits and seconds. Every rule is checked here, field by
field, so a bad policy is a 422 that names the field, and nothing is stored.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    Strict,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)

from keyplane.api.fields import Input, Integral, Scopes, documented
from keyplane.domain import globs, money, safe_regex
from keyplane.domain.network import parse_network
from keyplane.domain.periods import (
    MAX_DURATION_SECONDS,
    MIN_DURATION_SECONDS,
    Reset,
    format_duration,
    parse_duration,
)

MAX_COUNT = 10**12


def _credits(value: object) -> Decimal:
    """Credits arrive as JSON numbers (0.10) or decimal strings ("0.10"), never as booleans.

    Parsed here, by the bounded domain parser, before pydantic's own Decimal handling sees the
    value: a string such as "1e200000" is cheap to hold but costly to convert, so nothing else
    may touch it first. A float is read through its shortest text, so 0.1 means one tenth.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ValueError("credits are a number, e.g. 12.5")
    micros = money.to_micros(value)
    if micros < 0:
        raise ValueError("credits are not negative")
    return money.to_decimal(micros)


def _network(value: str) -> str:
    return str(parse_network(value))


def _user_agent(value: str) -> str:
    safe_regex.compile_safe(value)
    return value


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


class ModelRules(Input):
    allow: Annotated[list[ModelPattern], Field(max_length=200)] = []
    deny: Annotated[list[ModelPattern], Field(max_length=200)] = []


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


class Budget(Input):
    credit_limit: Credits | None = Field(default=None, description="credits per period")
    reset: Reset = Reset.NEVER
    alert_thresholds: Annotated[list[Threshold], Field(max_length=10)] = Field(
        default=[], description="fractions of credit_limit, e.g. [0.8, 1.0]"
    )
    per_model: Annotated[dict[ModelPattern, Credits], Field(max_length=50)] = Field(
        default={}, description="a separate credit limit for models matching each pattern"
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
    ) = None


class PolicyIn(Input):
    """A key's overrides or a plan's policy; absent fields mean "no rule" (or "as the plan")."""

    models: ModelRules | None = None
    scopes: Scopes | None = None
    rate_limits: Annotated[list[RateLimit], Field(max_length=20)] | None = None
    token_limits: TokenLimits | None = None
    concurrency: Concurrency | None = None
    budget: Budget | None = None
    network: NetworkRules | None = None

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


def to_document(policy: PolicyIn | None) -> dict[str, Any]:
    """The storage form of an API policy: only the fields given, micro-credits, seconds."""
    if policy is None:
        return {}
    document: dict[str, Any] = policy.model_dump(exclude_unset=True, mode="python")
    budget = document.get("budget")
    if budget is not None:
        limit = budget.pop("credit_limit", None)
        if limit is not None:
            budget["credit_limit_micros"] = money.to_micros(limit)
        elif "credit_limit" in (policy.budget.model_fields_set if policy.budget else ()):
            budget["credit_limit_micros"] = None
        if "per_model" in budget:
            # A list, not an object: the first matching pattern wins, and PostgreSQL's JSONB
            # does not keep the order of an object's keys.
            budget["per_model"] = [
                {"model": pattern, "credit_limit_micros": money.to_micros(amount)}
                for pattern, amount in budget["per_model"].items()
            ]
        if "reset" in budget:
            budget["reset"] = Reset(budget["reset"]).value
    return document


def to_api(document: dict[str, Any]) -> dict[str, Any]:
    """The API form of a stored policy document."""
    result = dict(document)
    if result.get("rate_limits"):
        result["rate_limits"] = [
            {**window, "period": format_duration(window["period"])}
            for window in result["rate_limits"]
        ]
    budget = result.get("budget")
    if budget:
        budget = dict(budget)
        if "credit_limit_micros" in budget:
            micros = budget.pop("credit_limit_micros")
            budget["credit_limit"] = None if micros is None else money.to_credits(micros)
        if "per_model" in budget:
            budget["per_model"] = {
                item["model"]: money.to_credits(item["credit_limit_micros"])
                for item in budget["per_model"]
            }
        result["budget"] = budget
    return result
