"""The policy document, typed: the one reader and writer of the JSON stored for a policy.

A plan stores a complete :class:`PolicySpec`; a key stores overrides, a spec in which most
fields are :data:`UNSET`. Every field has three states, kept apart because the merge needs
them: ``UNSET`` (absent: take the plan's), ``None`` (stored ``null``: no rule, also over the
plan's) and a value. :meth:`PolicySpec.merged_over` is the effective-policy merge: sections
(objects) merge field by field, lists and values replace.

The stored form (the JSON in the ``keys.policy`` and ``plans.policy`` columns) is fixed:
amounts in micro-credits (``credit_limit_micros``), periods in seconds, per-model budgets as an
ordered list. :meth:`PolicySpec.from_document` reads every document stored so far and
:meth:`PolicySpec.to_document` writes the same shape back, so no migration is needed.

Adding a policy field: a field here (with its ``_read``/``to_document`` lines), its
evaluation in ``domain.policy``, its API schema and docs in ``api.policy``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any, TypeVar, Union

from keyplane.domain.periods import Reset

T = TypeVar("T")


class Unset(Enum):
    """The state of a field a document does not mention."""

    UNSET = "unset"

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "UNSET"


UNSET = Unset.UNSET
#: A field as stored: absent (``UNSET``), ``null`` (``None``) or a value.
Field = Union[T, None, Unset]  # noqa: UP007 (a generic alias: ``|`` cannot take a TypeVar here)


class TokenKind(StrEnum):
    """Which tokens a token window counts."""

    INPUT = "input"
    OUTPUT = "output"
    TOTAL = "total"


class WindowUnit(StrEnum):
    """The units a rate window's period is written in by the API ("30s", "1m", "1h", "7d")."""

    SECOND = "s"
    MINUTE = "m"
    HOUR = "h"
    DAY = "d"

    @property
    def seconds(self) -> int:
        return _UNIT_SECONDS[self]


_UNIT_SECONDS = {
    WindowUnit.SECOND: 1,
    WindowUnit.MINUTE: 60,
    WindowUnit.HOUR: 3600,
    WindowUnit.DAY: 86_400,
}


@dataclass(frozen=True, slots=True)
class ModelCostLimit:
    """Limits for models matching ``model`` (a glob); the first matching entry applies.

    ``None``: no limit of that kind for those models.
    """

    model: str
    max_requests_per_day: int | None = None
    max_tokens_per_request: int | None = None
    max_cost_per_day_micros: int | None = None


@dataclass(frozen=True, slots=True)
class ModelRules:
    allow: Field[tuple[str, ...]] = UNSET
    deny: Field[tuple[str, ...]] = UNSET
    #: An ordered list: the first pattern matching the request's model applies.
    cost_limits: Field[tuple[ModelCostLimit, ...]] = UNSET


@dataclass(frozen=True, slots=True)
class RateWindow:
    name: str
    limit: int
    period_seconds: int
    #: ``UNSET`` or ``None``: the limit.
    burst: Field[int] = UNSET


@dataclass(frozen=True, slots=True)
class TokenLimits:
    input_per_minute: Field[int] = UNSET
    output_per_minute: Field[int] = UNSET
    total_per_minute: Field[int] = UNSET
    total_per_day: Field[int] = UNSET


@dataclass(frozen=True, slots=True)
class Concurrency:
    max_parallel: Field[int] = UNSET
    #: How many verifies that asked to wait (``wait_ms``) may queue for a slot at once.
    max_queued: Field[int] = UNSET


@dataclass(frozen=True, slots=True)
class FeatureRules:
    """Features (``chat_completion``, ``vision``, ...) a key may or may not use."""

    allow: Field[tuple[str, ...]] = UNSET
    deny: Field[tuple[str, ...]] = UNSET


@dataclass(frozen=True, slots=True)
class DataAccess:
    """What the gateway may do with a key's data; ``UNSET``/``None``: no rule."""

    log_requests: Field[bool] = UNSET
    log_responses: Field[bool] = UNSET
    export_data: Field[bool] = UNSET
    delete_data: Field[bool] = UNSET


@dataclass(frozen=True, slots=True)
class Routing:
    """Which upstream providers a gateway may route a key's requests to."""

    allow_auto_routing: Field[bool] = UNSET
    allowed_providers: Field[tuple[str, ...]] = UNSET
    force_provider: Field[str] = UNSET
    fallback_allowed: Field[bool] = UNSET


@dataclass(frozen=True, slots=True)
class ModelBudget:
    """A separate limit for models matching ``model`` (a glob); the first match applies."""

    model: str
    credit_limit_micros: int


@dataclass(frozen=True, slots=True)
class Rollover:
    """Unused allowance carried into the next period (``domain/rollover.py``); one value:
    a key's ``rollover`` replaces its plan's whole."""

    enabled: bool = False
    #: The most that carries, in micro-credits; None: the base limit.
    max_carry_micros: int | None = None


@dataclass(frozen=True, slots=True)
class Budget:
    #: Micro-credits per period; ``None`` meters spending without a limit.
    credit_limit_micros: Field[int] = UNSET
    reset: Field[Reset] = UNSET
    #: Fractions of the limit (0.8 is 80 %).
    alert_thresholds: Field[tuple[float, ...]] = UNSET
    per_model: Field[tuple[ModelBudget, ...]] = UNSET
    rollover: Field[Rollover] = UNSET


@dataclass(frozen=True, slots=True)
class Costs:
    """Cost caps in micro-credits: one request's estimate, and calendar-window budgets."""

    per_request_max_micros: Field[int] = UNSET
    per_hour_max_micros: Field[int] = UNSET
    per_day_max_micros: Field[int] = UNSET
    per_month_max_micros: Field[int] = UNSET
    #: A fraction of each window's limit (0.8 is 80 %) that raises a budget threshold alert.
    alert_threshold: Field[float] = UNSET


@dataclass(frozen=True, slots=True)
class NetworkRules:
    ip_allow: Field[tuple[str, ...]] = UNSET
    ip_deny: Field[tuple[str, ...]] = UNSET
    origins: Field[tuple[str, ...]] = UNSET
    referrers: Field[tuple[str, ...]] = UNSET
    user_agent: Field[str] = UNSET
    #: A request the gateway says came over plain HTTP (or does not say) is refused.
    require_https: Field[bool] = UNSET
    #: ISO 3166-1 alpha-2 codes, upper case.
    countries_allow: Field[tuple[str, ...]] = UNSET
    countries_deny: Field[tuple[str, ...]] = UNSET
    #: User-agent globs; one must match (beside the ``user_agent`` regex, which must too).
    user_agents: Field[tuple[str, ...]] = UNSET
    #: Host globs the request's Origin (or else Referer) host must match.
    domains: Field[tuple[str, ...]] = UNSET


@dataclass(frozen=True, slots=True)
class Signing:
    """Request signing (docs/signing.md): HMAC-SHA256 under the key's own signing secret."""

    required: Field[bool] = UNSET
    algorithm: Field[str] = UNSET
    require_timestamp: Field[bool] = UNSET
    #: Seconds a signed timestamp stays acceptable, either side of now; nonces live as long.
    max_timestamp_age: Field[int] = UNSET
    require_nonce: Field[bool] = UNSET


Section = (
    ModelRules
    | TokenLimits
    | Concurrency
    | Budget
    | NetworkRules
    | FeatureRules
    | DataAccess
    | Routing
    | Costs
    | Signing
)
S = TypeVar(
    "S",
    ModelRules,
    TokenLimits,
    Concurrency,
    Budget,
    NetworkRules,
    FeatureRules,
    DataAccess,
    Routing,
    Costs,
    Signing,
)


@dataclass(frozen=True, slots=True)
class PolicySpec:
    """A policy as written: a plan's whole policy, or a key's overrides over its plan."""

    models: Field[ModelRules] = UNSET
    scopes: Field[tuple[str, ...]] = UNSET
    rate_limits: Field[tuple[RateWindow, ...]] = UNSET
    token_limits: Field[TokenLimits] = UNSET
    concurrency: Field[Concurrency] = UNSET
    budget: Field[Budget] = UNSET
    network: Field[NetworkRules] = UNSET
    costs: Field[Costs] = UNSET
    signing: Field[Signing] = UNSET
    features: Field[FeatureRules] = UNSET
    #: Named optional features switched on (``True``) or off (``False``), e.g. batch_processing.
    advanced_features: Field[tuple[tuple[str, bool], ...]] = UNSET
    data_access: Field[DataAccess] = UNSET
    #: The operations (``read``, ``write``, ...) a key may perform.
    operations: Field[tuple[str, ...]] = UNSET
    routing: Field[Routing] = UNSET
    #: Keys created under this policy wait, ``pending``, for a second management key's approval.
    require_approval: Field[bool] = UNSET

    @classmethod
    def from_document(cls, document: Mapping[str, Any] | None) -> PolicySpec:
        """The spec a stored document describes; ValueError when it is not one."""
        if document is None:
            return cls()
        doc = _object(document, "policy")
        return cls(
            models=_section(doc, "models", _models),
            scopes=_read(doc, "scopes", _strings),
            rate_limits=_read(doc, "rate_limits", _windows),
            token_limits=_section(doc, "token_limits", _token_limits),
            concurrency=_section(doc, "concurrency", _concurrency),
            budget=_section(doc, "budget", _budget),
            network=_section(doc, "network", _network),
            costs=_section(doc, "costs", _costs),
            signing=_section(doc, "signing", _signing),
            features=_section(doc, "features", _features),
            advanced_features=_read(doc, "advanced_features", _flags),
            data_access=_section(doc, "data_access", _data_access),
            operations=_read(doc, "operations", _strings),
            routing=_section(doc, "routing", _routing),
            require_approval=_read(doc, "require_approval", _boolean),
        )

    def to_document(self) -> dict[str, Any]:
        """The stored form: only the fields that are set, in a fixed order."""
        document: dict[str, Any] = {}
        _put(document, "models", self.models, _models_document)
        _put(document, "scopes", self.scopes, list)
        _put(document, "rate_limits", self.rate_limits, _windows_document)
        _put(document, "token_limits", self.token_limits, _fields_document)
        _put(document, "concurrency", self.concurrency, _fields_document)
        _put(document, "budget", self.budget, _budget_document)
        _put(document, "network", self.network, _fields_document)
        _put(document, "costs", self.costs, _fields_document)
        _put(document, "signing", self.signing, _fields_document)
        _put(document, "features", self.features, _fields_document)
        _put(document, "advanced_features", self.advanced_features, dict)
        _put(document, "data_access", self.data_access, _fields_document)
        _put(document, "operations", self.operations, list)
        _put(document, "routing", self.routing, _fields_document)
        _put(document, "require_approval", self.require_approval, bool)
        return document

    def merged_over(self, base: PolicySpec) -> PolicySpec:
        """These overrides over ``base`` (a plan's policy): the effective policy.

        A key that sets ``budget.credit_limit_micros`` on a plan with a monthly budget keeps
        the plan's reset and thresholds; a key that sets ``rate_limits`` replaces the plan's
        list of windows; ``None`` removes the plan's rule.
        """
        return PolicySpec(
            models=_merge_section(base.models, self.models),
            scopes=_merge_value(base.scopes, self.scopes),
            rate_limits=_merge_value(base.rate_limits, self.rate_limits),
            token_limits=_merge_section(base.token_limits, self.token_limits),
            concurrency=_merge_section(base.concurrency, self.concurrency),
            budget=_merge_section(base.budget, self.budget),
            network=_merge_section(base.network, self.network),
            costs=_merge_section(base.costs, self.costs),
            signing=_merge_section(base.signing, self.signing),
            features=_merge_section(base.features, self.features),
            advanced_features=_merge_flags(base.advanced_features, self.advanced_features),
            data_access=_merge_section(base.data_access, self.data_access),
            operations=_merge_value(base.operations, self.operations),
            routing=_merge_section(base.routing, self.routing),
            require_approval=_merge_value(base.require_approval, self.require_approval),
        )


EMPTY_SPEC = PolicySpec()


def effective(plan: Mapping[str, Any] | None, overrides: Mapping[str, Any]) -> PolicySpec:
    """A key's effective policy from its plan's stored document and its own."""
    return PolicySpec.from_document(overrides).merged_over(PolicySpec.from_document(plan))


def is_set(value: Field[T]) -> bool:
    """Whether a field holds a value (neither absent nor ``null``)."""
    return value is not None and value is not UNSET


def value_or(value: Field[T], default: T) -> T:
    """The field's value, or ``default`` when it is absent or ``null``."""
    if value is None or isinstance(value, Unset):
        return default
    return value


# -- merge ------------------------------------------------------------------------------------


def _merge_value(base: Field[T], override: Field[T]) -> Field[T]:
    return base if override is UNSET else override


def _merge_flags(
    base: Field[tuple[tuple[str, bool], ...]], override: Field[tuple[tuple[str, bool], ...]]
) -> Field[tuple[tuple[str, bool], ...]]:
    """Named flags (``advanced_features``) merge like a section: a key's flags over its plan's,
    one by one (an object in the stored document, like every section)."""
    if override is UNSET:
        return base
    if override is None or base is None or isinstance(base, Unset):
        return override
    return tuple(sorted({**dict(base), **dict(override)}.items()))


def _merge_section(base: Field[S], override: Field[S]) -> Field[S]:
    if override is UNSET:
        return base
    if override is None or base is None or isinstance(base, Unset):
        return override
    given = {
        f.name: getattr(override, f.name)
        for f in dataclasses.fields(override)
        if getattr(override, f.name) is not UNSET
    }
    return dataclasses.replace(base, **given)


# -- reading ----------------------------------------------------------------------------------


def _object(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} is not an object")
    return value


def _read(doc: Mapping[str, Any], name: str, parse: Callable[[Any, str], T]) -> Field[T]:
    if name not in doc:
        return UNSET
    value = doc[name]
    return None if value is None else parse(value, name)


def _section(
    doc: Mapping[str, Any], name: str, parse: Callable[[Mapping[str, Any]], T]
) -> Field[T]:
    return _read(doc, name, lambda value, where: parse(_object(value, where)))


def _integer(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where} is not an integer")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where} is not a number")
    return float(value)


def _boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{where} is not a boolean")
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where} is not a string")
    return value


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"{where} is not a list")
    return tuple(_string(item, where) for item in value)


def _models(doc: Mapping[str, Any]) -> ModelRules:
    return ModelRules(
        allow=_read(doc, "allow", _strings),
        deny=_read(doc, "deny", _strings),
        cost_limits=_read(doc, "cost_limits", _cost_limits),
    )


def _optional_integer(entry: Mapping[str, Any], name: str) -> int | None:
    value = entry.get(name)
    return None if value is None else _integer(value, name)


def _cost_limits(value: Any, where: str) -> tuple[ModelCostLimit, ...]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"{where} is not a list")
    items = []
    for item in value:
        entry = _object(item, where)
        if "model" not in entry:
            raise ValueError("a model cost limit needs 'model'")
        items.append(
            ModelCostLimit(
                model=_string(entry["model"], "cost_limits model"),
                max_requests_per_day=_optional_integer(entry, "max_requests_per_day"),
                max_tokens_per_request=_optional_integer(entry, "max_tokens_per_request"),
                max_cost_per_day_micros=_optional_integer(entry, "max_cost_per_day_micros"),
            )
        )
    return tuple(items)


def _costs(doc: Mapping[str, Any]) -> Costs:
    return Costs(
        per_request_max_micros=_read(doc, "per_request_max_micros", _integer),
        per_hour_max_micros=_read(doc, "per_hour_max_micros", _integer),
        per_day_max_micros=_read(doc, "per_day_max_micros", _integer),
        per_month_max_micros=_read(doc, "per_month_max_micros", _integer),
        alert_threshold=_read(doc, "alert_threshold", _number),
    )


def _windows(value: Any, where: str) -> tuple[RateWindow, ...]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"{where} is not a list")
    windows = []
    for item in value:
        window = _object(item, where)
        for required in ("name", "limit", "period"):
            if required not in window:
                raise ValueError(f"a rate limit needs {required!r}")
        windows.append(
            RateWindow(
                name=_string(window["name"], "rate limit name"),
                limit=_integer(window["limit"], "rate limit"),
                period_seconds=_integer(window["period"], "rate limit period"),
                burst=_read(window, "burst", _integer),
            )
        )
    return tuple(windows)


def _token_limits(doc: Mapping[str, Any]) -> TokenLimits:
    return TokenLimits(
        input_per_minute=_read(doc, "input_per_minute", _integer),
        output_per_minute=_read(doc, "output_per_minute", _integer),
        total_per_minute=_read(doc, "total_per_minute", _integer),
        total_per_day=_read(doc, "total_per_day", _integer),
    )


def _concurrency(doc: Mapping[str, Any]) -> Concurrency:
    return Concurrency(
        max_parallel=_read(doc, "max_parallel", _integer),
        max_queued=_read(doc, "max_queued", _integer),
    )


def _flags(value: Any, where: str) -> tuple[tuple[str, bool], ...]:
    # Sorted by name: PostgreSQL's JSONB does not keep an object's order.
    return tuple(
        sorted(
            (_string(name, where), _boolean(flag, where))
            for name, flag in _object(value, where).items()
        )
    )


def _features(doc: Mapping[str, Any]) -> FeatureRules:
    return FeatureRules(allow=_read(doc, "allow", _strings), deny=_read(doc, "deny", _strings))


def _data_access(doc: Mapping[str, Any]) -> DataAccess:
    return DataAccess(
        **{f.name: _read(doc, f.name, _boolean) for f in dataclasses.fields(DataAccess)}
    )


def _routing(doc: Mapping[str, Any]) -> Routing:
    return Routing(
        allow_auto_routing=_read(doc, "allow_auto_routing", _boolean),
        allowed_providers=_read(doc, "allowed_providers", _strings),
        force_provider=_read(doc, "force_provider", _string),
        fallback_allowed=_read(doc, "fallback_allowed", _boolean),
    )


def _reset(value: Any, where: str) -> Reset:
    reset = Reset(_string(value, where))
    if reset is Reset.HOURLY:
        raise ValueError("a budget resets daily, weekly, monthly or never")
    return reset


def _thresholds(value: Any, where: str) -> tuple[float, ...]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"{where} is not a list")
    return tuple(_number(item, where) for item in value)


def _per_model(value: Any, where: str) -> tuple[ModelBudget, ...]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"{where} is not a list")
    items = []
    for item in value:
        entry = _object(item, where)
        if "model" not in entry or "credit_limit_micros" not in entry:
            raise ValueError("a per-model budget needs 'model' and 'credit_limit_micros'")
        items.append(
            ModelBudget(
                model=_string(entry["model"], "per_model model"),
                credit_limit_micros=_integer(entry["credit_limit_micros"], "per_model limit"),
            )
        )
    return tuple(items)


def _rollover(value: Any, where: str) -> Rollover:
    entry = _object(value, where)
    enabled = entry.get("enabled", False)
    if not isinstance(enabled, bool):
        raise ValueError("rollover enabled is not a boolean")
    max_carry = entry.get("max_carry_micros")
    return Rollover(
        enabled=enabled,
        max_carry_micros=None if max_carry is None else _integer(max_carry, "rollover max_carry"),
    )


def _budget(doc: Mapping[str, Any]) -> Budget:
    return Budget(
        credit_limit_micros=_read(doc, "credit_limit_micros", _integer),
        reset=_read(doc, "reset", _reset),
        alert_thresholds=_read(doc, "alert_thresholds", _thresholds),
        per_model=_read(doc, "per_model", _per_model),
        rollover=_read(doc, "rollover", _rollover),
    )


def _network(doc: Mapping[str, Any]) -> NetworkRules:
    return NetworkRules(
        ip_allow=_read(doc, "ip_allow", _strings),
        ip_deny=_read(doc, "ip_deny", _strings),
        origins=_read(doc, "origins", _strings),
        referrers=_read(doc, "referrers", _strings),
        user_agent=_read(doc, "user_agent", _string),
        require_https=_read(doc, "require_https", _boolean),
        countries_allow=_read(doc, "countries_allow", _strings),
        countries_deny=_read(doc, "countries_deny", _strings),
        user_agents=_read(doc, "user_agents", _strings),
        domains=_read(doc, "domains", _strings),
    )


def _signing(doc: Mapping[str, Any]) -> Signing:
    return Signing(
        required=_read(doc, "required", _boolean),
        algorithm=_read(doc, "algorithm", _string),
        require_timestamp=_read(doc, "require_timestamp", _boolean),
        max_timestamp_age=_read(doc, "max_timestamp_age", _integer),
        require_nonce=_read(doc, "require_nonce", _boolean),
    )


# -- writing ----------------------------------------------------------------------------------


def _put(document: dict[str, Any], name: str, value: Field[T], write: Callable[[T], Any]) -> None:
    if value is UNSET:
        return
    document[name] = None if value is None else write(value)


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Enum):
        return value.value
    return value


def _fields_document(section: Section) -> dict[str, Any]:
    return {
        f.name: _plain(getattr(section, f.name))
        for f in dataclasses.fields(section)
        if getattr(section, f.name) is not UNSET
    }


def _models_document(models: ModelRules) -> dict[str, Any]:
    document = _fields_document(dataclasses.replace(models, cost_limits=UNSET))
    if models.cost_limits is not UNSET:
        # A list, not an object, for the same reason as budget.per_model: the first match wins.
        document["cost_limits"] = (
            None
            if models.cost_limits is None
            else [
                {
                    f.name: getattr(item, f.name)
                    for f in dataclasses.fields(item)
                    if f.name == "model" or getattr(item, f.name) is not None
                }
                for item in models.cost_limits
            ]
        )
    return document


def _windows_document(windows: tuple[RateWindow, ...]) -> list[dict[str, Any]]:
    result = []
    for window in windows:
        item: dict[str, Any] = {
            "name": window.name,
            "limit": window.limit,
            "period": window.period_seconds,
        }
        if window.burst is not UNSET:
            item["burst"] = window.burst
        result.append(item)
    return result


def _budget_document(budget: Budget) -> dict[str, Any]:
    document = _fields_document(dataclasses.replace(budget, per_model=UNSET, rollover=UNSET))
    if budget.rollover is not UNSET:
        document["rollover"] = (
            None
            if budget.rollover is None
            else {
                "enabled": budget.rollover.enabled,
                "max_carry_micros": budget.rollover.max_carry_micros,
            }
        )
    if budget.per_model is not UNSET:
        # A list, not an object: the first matching pattern wins, and PostgreSQL's JSONB does
        # not keep the order of an object's keys.
        document["per_model"] = (
            None
            if budget.per_model is None
            else [
                {"model": item.model, "credit_limit_micros": item.credit_limit_micros}
                for item in budget.per_model
            ]
        )
    return document
