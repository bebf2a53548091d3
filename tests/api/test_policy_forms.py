"""Every policy field survives API form -> domain -> stored JSON -> domain -> API form.

The API form is generated as ``to_api`` shows it (periods as ``"1m"``, credits as exact
decimals, per-model budgets as an object); each field may be absent, ``null`` where the API
allows it, or set, at every level, since a key's overrides need all three.
"""

from __future__ import annotations

import dataclasses
import json
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from keyplane.api import policy as api
from keyplane.api.exact import JsonNumber
from keyplane.api.policy import PolicyIn, spec_of, to_api
from keyplane.domain import money
from keyplane.domain import policy_spec as spec
from keyplane.domain.network import parse_network
from keyplane.domain.periods import MAX_DURATION_SECONDS, Reset, format_duration
from keyplane.domain.policy import parse_policy

MISSING = object()


def optional(values: st.SearchStrategy[Any], nullable: bool = True) -> st.SearchStrategy[Any]:
    """Absent, null (when the API allows it) or a value."""
    choices = [st.just(MISSING), values]
    if nullable:
        choices.append(st.none())
    return st.one_of(*choices)


@st.composite
def section(draw: st.DrawFn, **fields: st.SearchStrategy[Any]) -> dict[str, Any]:
    drawn = {name: draw(strategy) for name, strategy in fields.items()}
    return {name: value for name, value in drawn.items() if value is not MISSING}


CREDITS = st.integers(0, money.MAX_MICROS).map(lambda micros: Decimal(micros).scaleb(-6))
COUNT = st.integers(1, 10**12)
PATTERN = st.from_regex(r"[a-z0-9][a-z0-9.-]{0,15}\*?", fullmatch=True)
SCOPE = st.from_regex(r"[a-z]{1,8}(:[a-z]{1,8})?", fullmatch=True)
NETWORK = st.one_of(st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(lambda a: f"{a}")).map(
    lambda text: str(parse_network(text))
)
URL = st.from_regex(r"https://(\*\.)?[a-z]{1,10}\.example\.com", fullmatch=True)


@st.composite
def windows(draw: st.DrawFn) -> list[dict[str, Any]]:
    names = draw(st.lists(st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True), unique=True))
    result = []
    for name in names[:20]:
        limit = draw(st.integers(1, 10**6))
        window: dict[str, Any] = {
            "name": name,
            "limit": limit,
            "period": format_duration(draw(st.integers(1, MAX_DURATION_SECONDS))),
        }
        burst = draw(optional(st.integers(1, limit)))
        if burst is not MISSING:
            window["burst"] = burst
        result.append(window)
    return result


COST_LIMIT = {
    "max_requests_per_day": optional(COUNT, False),
    "max_tokens_per_request": optional(COUNT, False),
    "max_cost_per_day": optional(CREDITS, False),
}
MODELS = {
    "allow": optional(st.lists(PATTERN), False),
    "deny": optional(st.lists(PATTERN), False),
    "cost_limits": optional(st.dictionaries(PATTERN, section(**COST_LIMIT), max_size=5), False),
}
COSTS = {
    "per_request_max": optional(CREDITS),
    "per_hour_max": optional(CREDITS),
    "per_day_max": optional(CREDITS),
    "per_month_max": optional(CREDITS),
    "alert_threshold": optional(st.floats(0.01, 1, allow_nan=False)),
}
TOKENS = {
    "input_per_minute": optional(COUNT),
    "output_per_minute": optional(COUNT),
    "total_per_minute": optional(COUNT),
    "total_per_day": optional(COUNT),
}
CONCURRENCY = {
    "max_parallel": st.integers(1, 1_000_000),
    "max_queued": optional(st.integers(0, 10_000)),
}
NAME = st.from_regex(r"[a-z0-9][a-z0-9_.:-]{0,12}", fullmatch=True)
FEATURES = {
    "allow": optional(st.lists(NAME, max_size=5, unique=True), False),
    "deny": optional(st.lists(NAME, max_size=5, unique=True), False),
}
DATA_ACCESS = {
    name: optional(st.booleans())
    for name in ("log_requests", "log_responses", "export_data", "delete_data")
}
ROUTING = {
    "allow_auto_routing": optional(st.booleans()),
    "allowed_providers": optional(st.lists(NAME, max_size=5, unique=True)),
    "force_provider": optional(NAME),
    "fallback_allowed": optional(st.booleans()),
}
BUDGET = {
    "credit_limit": optional(CREDITS),
    "reset": optional(st.sampled_from([r.value for r in Reset if r is not Reset.HOURLY]), False),
    "alert_thresholds": optional(
        st.lists(st.floats(0.01, 10, allow_nan=False), max_size=10), False
    ),
    "per_model": optional(st.dictionaries(PATTERN, CREDITS, max_size=5), False),
    # A whole object (it replaces the plan's): both fields always written back.
    "rollover": optional(
        st.fixed_dictionaries({"enabled": st.booleans(), "max_carry": st.none() | CREDITS})
    ),
}
NETWORK_RULES = {
    "ip_allow": optional(st.lists(NETWORK, max_size=5), False),
    "ip_deny": optional(st.lists(NETWORK, max_size=5), False),
    "origins": optional(st.lists(URL, max_size=3), False),
    "referrers": optional(st.lists(URL, max_size=3), False),
    "user_agent": optional(st.sampled_from(["^MyApp/\\d+", "bot", "[a-z]+/1"])),
    "require_https": optional(st.booleans()),
    "countries_allow": optional(st.lists(st.from_regex(r"[A-Z]{2}", fullmatch=True)), False),
    "countries_deny": optional(st.lists(st.from_regex(r"[A-Z]{2}", fullmatch=True)), False),
    "user_agents": optional(st.lists(st.sampled_from(["MyApp/*", "curl/?.*", "Bot 1"])), False),
    "domains": optional(
        st.lists(st.from_regex(r"(\*\.)?[a-z]{1,8}\.example\.com", fullmatch=True)), False
    ),
}


@st.composite
def signing(draw: st.DrawFn) -> dict[str, Any]:
    form = draw(
        section(
            required=optional(st.booleans(), False),
            algorithm=optional(st.just("HMAC-SHA256"), False),
            max_timestamp_age=optional(st.integers(1, 86_400), False),
            require_timestamp=optional(st.booleans(), False),
        )
    )
    # A nonce is only remembered as long as its timestamp passes: no nonce without one.
    if form.get("require_timestamp", True):
        nonce = draw(optional(st.booleans(), False))
        if nonce is not MISSING:
            form["require_nonce"] = nonce
    else:
        form["require_nonce"] = False
    return form


SIGNING = {
    "required": st.booleans(),
    "algorithm": st.just("HMAC-SHA256"),
    "require_timestamp": st.booleans(),
    "max_timestamp_age": st.integers(1, 86_400),
    "require_nonce": st.booleans(),
}
POLICY = {
    "models": optional(section(**MODELS)),
    "scopes": optional(st.lists(SCOPE, max_size=5)),
    "rate_limits": optional(windows()),
    "token_limits": optional(section(**TOKENS)),
    "concurrency": optional(section(**CONCURRENCY)),
    "budget": optional(section(**BUDGET)),
    "network": optional(section(**NETWORK_RULES)),
    "costs": optional(section(**COSTS)),
    "signing": optional(signing()),
    "features": optional(section(**FEATURES)),
    "advanced_features": optional(st.dictionaries(NAME, st.booleans(), max_size=5)),
    "data_access": optional(section(**DATA_ACCESS)),
    "operations": optional(st.lists(NAME, max_size=5, unique=True)),
    "routing": optional(section(**ROUTING)),
    "require_approval": optional(st.booleans()),
}
API_FORMS = section(**POLICY)


def exact(form: Any) -> Any:
    """Credits as Decimals, read from the exact text the API renders."""
    if isinstance(form, JsonNumber):
        return Decimal(form.text)
    if isinstance(form, dict):
        return {name: exact(value) for name, value in form.items()}
    if isinstance(form, list):
        return [exact(value) for value in form]
    return form


@given(API_FORMS)
@settings(max_examples=300, deadline=None)
def test_api_form_to_storage_and_back_is_the_identity(form: dict[str, Any]) -> None:
    policy = spec_of(PolicyIn.model_validate(form))
    stored = json.loads(json.dumps(policy.to_document()))  # as a JSON column keeps it
    again = spec.PolicySpec.from_document(stored)
    assert again == policy
    assert again.to_document() == stored
    assert exact(to_api(stored)) == form
    parse_policy(stored)  # and verify can evaluate it


def test_the_generator_reaches_every_field() -> None:
    # A new field in the model must be generated above, or it is not round-tripped.
    assert {f.name for f in dataclasses.fields(spec.PolicySpec)} == set(PolicyIn.model_fields)
    assert set(POLICY) == set(PolicyIn.model_fields)
    for generated, model in [
        (MODELS, api.ModelRules),
        (TOKENS, api.TokenLimits),
        (CONCURRENCY, api.Concurrency),
        (BUDGET, api.Budget),
        (NETWORK_RULES, api.NetworkRules),
        (COSTS, api.Costs),
        (COST_LIMIT, api.ModelCostLimit),
        (SIGNING, api.Signing),
        (FEATURES, api.FeatureRules),
        (DATA_ACCESS, api.DataAccess),
        (ROUTING, api.Routing),
    ]:
        assert set(generated) == set(model.model_fields)
    assert set(api.RateLimit.model_fields) == {"name", "limit", "period", "burst"}


@given(API_FORMS, API_FORMS)
@settings(max_examples=100, deadline=None)
def test_the_merge_is_the_stored_documents_merge(plan: dict[str, Any], key: dict[str, Any]) -> None:
    """Overrides over a plan, typed, equal the documents merged as they always were."""
    base = spec_of(PolicyIn.model_validate(plan)).to_document()
    overrides = spec_of(PolicyIn.model_validate(key)).to_document()
    merged = spec.effective(base, overrides).to_document()
    assert merged == _document_merge(base, overrides)


def _document_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    # The merge as it was written on dicts before the typed model: objects merge, the rest
    # replaces.
    merged = dict(base)
    for name, value in override.items():
        current = merged.get(name)
        if isinstance(value, dict) and isinstance(current, dict):
            merged[name] = _document_merge(current, value)
        else:
            merged[name] = value
    return merged
