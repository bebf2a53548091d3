"""Pure policy evaluation: merging plan and overrides, parsing, and the order of checks."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyplane.domain import money
from keyplane.domain import policy_spec as spec
from keyplane.domain.decisions import Code
from keyplane.domain.periods import Reset
from keyplane.domain.policy import (
    EMPTY,
    Policy,
    RequestContext,
    TokenLimits,
    check_costs,
    check_request,
    effective_scopes,
    merge_documents,
    parse_policy,
    token_windows,
    without_rules,
)
from keyplane.domain.usage import crossed_thresholds

PLAN = {
    "models": {"allow": ["gpt-4*"], "deny": ["*-vision-*"]},
    "budget": {"credit_limit_micros": 50_000_000, "reset": "monthly", "alert_thresholds": [0.8]},
    "rate_limits": [{"name": "m", "limit": 10, "period": 60}],
    "scopes": ["chat"],
}


def test_overrides_merge_objects_and_replace_lists() -> None:
    merged = merge_documents(
        PLAN,
        {
            "budget": {"credit_limit_micros": 5_000_000},
            "rate_limits": [{"name": "d", "limit": 5, "period": 86400}],
        },
    )
    policy = parse_policy(merged)
    assert policy.budget is not None
    assert policy.budget.credit_limit == 5_000_000
    assert policy.budget.reset is Reset.MONTHLY  # kept from the plan
    assert policy.budget.alert_thresholds_bp == (8000,)
    assert [w.name for w in policy.rate_limits] == ["d"]  # the list was replaced
    assert policy.rate_limits[0].burst == 5  # burst defaults to the limit
    assert policy.models_allow == ("gpt-4*",)
    assert PLAN["budget"]["credit_limit_micros"] == 50_000_000  # type: ignore[index]  # untouched


def test_a_null_override_removes_the_plan_rule() -> None:
    policy = parse_policy(merge_documents(PLAN, {"budget": None, "models": {"allow": []}}))
    assert policy.budget is None
    assert policy.models_allow == ()
    assert policy.models_deny == ("*-vision-*",)


def test_no_policy_allows_everything() -> None:
    assert parse_policy({}) == EMPTY
    assert check_request(EMPTY, RequestContext()) is None


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        (RequestContext(model="gpt-4o", ip="203.0.113.5"), None),
        (RequestContext(model="gpt-4-vision-x", ip="203.0.113.5"), Code.FORBIDDEN_MODEL),
        (RequestContext(model="o1", ip="10.0.0.1"), Code.FORBIDDEN_MODEL),  # model checked first
        (RequestContext(ip="203.0.113.5"), Code.FORBIDDEN_MODEL),
        (RequestContext(model="gpt-4o", ip="203.0.113.7"), Code.IP_NOT_ALLOWED),
        (RequestContext(model="gpt-4o"), Code.IP_NOT_ALLOWED),
        (RequestContext(model="gpt-4o", ip="not an ip"), Code.IP_NOT_ALLOWED),
        (RequestContext(model="gpt-4o", ip="2001:db8::5"), None),
    ],
)
def test_checks_run_in_the_documented_order(context: RequestContext, expected: Code | None) -> None:
    policy = parse_policy(
        {
            **PLAN,
            "network": {
                "ip_allow": ["203.0.113.0/24", "2001:db8::/32"],
                "ip_deny": ["203.0.113.7"],
            },
        }
    )
    assert check_request(policy, context) == expected


def test_origin_referrer_and_user_agent_rules() -> None:
    policy = parse_policy(
        {
            "network": {
                "origins": ["https://*.example.com"],
                "referrers": ["https://app.example.com/*"],
                "user_agent": "^MyApp/\\d+",
            }
        }
    )
    good = RequestContext(
        origin="https://app.example.com",
        referrer="https://app.example.com/page?x=1",
        user_agent="MyApp/2",
    )
    assert check_request(policy, good) is None
    for bad, code in [
        (RequestContext(referrer=good.referrer, user_agent="MyApp/2"), Code.ORIGIN_NOT_ALLOWED),
        (
            RequestContext(origin="https://evil.com#.example.com", referrer=good.referrer),
            Code.ORIGIN_NOT_ALLOWED,
        ),
        (
            RequestContext(origin=good.origin, referrer="https://other.example.com/"),
            Code.ORIGIN_NOT_ALLOWED,
        ),
        (
            RequestContext(origin=good.origin, referrer=good.referrer, user_agent="curl/8"),
            Code.USER_AGENT_NOT_ALLOWED,
        ),
        (RequestContext(origin=good.origin, referrer=good.referrer), Code.USER_AGENT_NOT_ALLOWED),
    ]:
        assert check_request(policy, bad) == code


def test_a_keys_own_scopes_win_over_its_plans() -> None:
    policy = parse_policy(PLAN)
    assert effective_scopes((), policy) == ("chat",)
    assert effective_scopes(("admin",), policy) == ("admin",)


def test_per_model_budgets_pick_the_first_matching_pattern() -> None:
    policy = parse_policy(
        {
            "budget": {
                "per_model": [
                    {"model": "gpt-4o*", "credit_limit_micros": 1},
                    {"model": "gpt-4*", "credit_limit_micros": 2},
                ],
                "credit_limit_micros": 9,
            }
        }
    )
    assert policy.budget is not None
    assert policy.budget.model_limit("gpt-4o-mini") == ("gpt-4o*", 1)
    assert policy.budget.model_limit("gpt-4-turbo") == ("gpt-4*", 2)
    assert policy.budget.model_limit("claude") is None
    assert policy.budget.model_limit(None) is None


@pytest.mark.parametrize(
    ("text", "micros"),
    [("0.10", 100_000), ("50", 50_000_000), ("0.000001", 1), (Decimal("12.5"), 12_500_000)],
)
def test_credits_become_exact_micro_credits(text: str | Decimal, micros: int) -> None:
    assert money.to_micros(text) == micros


@pytest.mark.parametrize(
    "bad",
    ["0.0000001", "NaN", "Infinity", "abc", "1e30", True, "1e200000", "9e999992", "1e1000000"],
)
def test_amounts_that_are_not_exact_micro_credits_are_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        money.to_micros(bad)  # type: ignore[arg-type]


@given(st.lists(st.integers(0, 10**12), max_size=50))
def test_micro_credits_sum_exactly(amounts: list[int]) -> None:
    as_text = [f"{a // 1_000_000}.{a % 1_000_000:06d}" for a in amounts]
    assert sum(money.to_micros(t) for t in as_text) == sum(amounts)


def test_thresholds_are_crossed_once_at_the_mark() -> None:
    limit = 10_000_000
    assert crossed_thresholds(0, 7_999_999, limit, (8000, 10000)) == []
    assert crossed_thresholds(7_999_999, 8_000_000, limit, (8000, 10000)) == [8000]
    assert crossed_thresholds(8_000_000, 9_000_000, limit, (8000, 10000)) == []
    assert crossed_thresholds(0, 12_000_000, limit, (8000, 10000)) == [8000, 10000]
    assert crossed_thresholds(3, 4, 7, (5000,)) == [5000]  # 3.5 rounds up to the mark 4


# -- the typed document (policy_spec) ---------------------------------------------------------


def test_absent_null_and_set_stay_apart_through_storage() -> None:
    stored = {
        "budget": {"credit_limit_micros": None, "reset": "weekly"},
        "models": None,
        "rate_limits": [{"name": "m", "limit": 5, "period": 60, "burst": None}],
    }
    policy = spec.PolicySpec.from_document(stored)
    assert policy.models is None and policy.scopes is spec.UNSET
    assert policy.budget == spec.Budget(credit_limit_micros=None, reset=Reset.WEEKLY)
    assert policy.rate_limits == (spec.RateWindow("m", 5, 60, burst=None),)
    assert policy.to_document() == stored


def test_a_null_section_removes_the_plans_and_an_absent_one_keeps_it() -> None:
    plan = spec.PolicySpec.from_document(PLAN)
    assert spec.PolicySpec(budget=None).merged_over(plan).budget is None
    kept = spec.PolicySpec(scopes=("own",)).merged_over(plan)
    assert kept.budget == plan.budget and kept.scopes == ("own",)
    limit_only = spec.PolicySpec(budget=spec.Budget(credit_limit_micros=None)).merged_over(plan)
    assert limit_only.budget == spec.Budget(
        credit_limit_micros=None, reset=Reset.MONTHLY, alert_thresholds=(0.8,)
    )


def test_kinds_are_enums() -> None:
    policy = spec.PolicySpec.from_document(PLAN)
    assert isinstance(policy.budget, spec.Budget) and policy.budget.reset is Reset.MONTHLY
    assert spec.WindowUnit.MINUTE.seconds == 60
    assert [kind for *_, kind in token_windows(TokenLimits(1, 2, 3, 4))] == [
        spec.TokenKind.INPUT,
        spec.TokenKind.OUTPUT,
        spec.TokenKind.TOTAL,
        spec.TokenKind.TOTAL,
    ]


@pytest.mark.parametrize(
    "bad",
    [
        [],
        {"models": ["gpt-4"]},
        {"scopes": "chat"},
        {"rate_limits": [{"name": "m", "limit": "5", "period": 60}]},
        {"rate_limits": [{"name": "m", "limit": 5}]},
        {"budget": {"credit_limit_micros": 1.5}},
        {"budget": {"credit_limit_micros": True}},
        {"budget": {"reset": "hourly"}},
        {"budget": {"per_model": [{"model": "x"}]}},
        {"concurrency": {"max_parallel": "3"}},
    ],
)
def test_documents_that_are_not_policies_are_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        spec.PolicySpec.from_document(bad)  # type: ignore[arg-type]


def test_money_text_is_exact_and_keeps_a_decimal_point() -> None:
    assert money.to_text(0) == "0.0"
    assert money.to_text(100_000) == "0.1"
    assert money.to_text(50_000_000) == "50.0"
    assert money.to_text(1) == "0.000001"
    assert money.to_text(money.MAX_MICROS - 1) == "999999999999.999999"
    assert money.to_text(-1_500_000) == "-1.5"


# One rule of every kind verify checks or admits against, each alone in its policy.
ONE_RULE_EACH = [
    {"models": {"allow": ["gpt-4*"]}},
    {"models": {"deny": ["*-vision-*"]}},
    {"models": {"cost_limits": [{"model": "gpt-4*", "max_tokens_per_request": 10}]}},
    {"models": {"cost_limits": [{"model": "gpt-4*", "max_requests_per_day": 10}]}},
    {"rate_limits": [{"name": "m", "limit": 10, "period": 60}]},
    {"token_limits": {"input_per_minute": 100}},
    {"concurrency": {"max_parallel": 3}},
    {"concurrency": {"max_queued": 3}},
    {"budget": {"credit_limit_micros": 5_000_000, "reset": "daily"}},
    {"budget": {"per_model": [{"model": "gpt-4*", "credit_limit_micros": 5}]}},
    {"costs": {"per_request_max_micros": 100}},
    {"costs": {"per_day_max_micros": 100}},
    {"network": {"ip_allow": ["203.0.113.0/24"]}},
    {"network": {"ip_deny": ["203.0.113.7"]}},
    {"network": {"origins": ["https://*.example.com"]}},
    {"network": {"referrers": ["https://app.example.com/*"]}},
    {"network": {"user_agent": "^MyApp/"}},
    {"network": {"user_agents": ["MyApp/*"]}},
    {"network": {"require_https": True}},
    {"network": {"countries_allow": ["DE"]}},
    {"network": {"countries_deny": ["DE"]}},
    {"network": {"domains": ["*.example.com"]}},
    {"signing": {"required": True}},
    {"features": {"allow": ["chat_completion"]}},
    {"features": {"deny": ["vision"]}},
    {"advanced_features": {"batch_processing": False}},
    {"data_access": {"export_data": False}},
    {"operations": ["read"]},
    {"routing": {"allowed_providers": ["openai"]}},
    {"routing": {"force_provider": "openai"}},
    {"routing": {"allow_auto_routing": False}},
    {"routing": {"fallback_allowed": False}},
]


@pytest.mark.parametrize("document", ONE_RULE_EACH, ids=lambda d: str(d)[:60])
def test_a_policy_with_any_rule_is_not_unrestricted(document: dict) -> None:
    assert not parse_policy(document).unrestricted


@pytest.mark.parametrize(
    "document",
    [{}, {"scopes": ["chat"]}, {"require_approval": True}],
)
def test_a_policy_that_only_describes_the_key_is_unrestricted(document: dict) -> None:
    policy = parse_policy(document)
    assert policy.unrestricted
    assert without_rules(policy) and policy == replace(EMPTY, **_described(policy))


def test_unrestricted_is_worked_out_again_for_a_changed_policy() -> None:
    """Never carried over by ``replace``: a rule added to an unrestricted policy restricts it."""
    plain = parse_policy({"scopes": ["chat"]})
    limited = parse_policy({"rate_limits": [{"name": "m", "limit": 10, "period": 60}]})
    assert plain.unrestricted and not limited.unrestricted
    assert not replace(plain, rate_limits=limited.rate_limits).unrestricted
    assert not replace(plain, network=parse_policy(ONE_RULE_EACH[12]).network).unrestricted
    assert replace(limited, rate_limits=()).unrestricted


def _described(policy: Policy) -> dict:
    return {"scopes": policy.scopes, "require_approval": policy.require_approval}


@given(
    model=st.none() | st.sampled_from(["gpt-4o", "claude-3-opus", "x" * 200]),
    ip=st.none() | st.sampled_from(["203.0.113.5", "::1", "not an ip"]),
    origin=st.none() | st.just("https://evil.example"),
    user_agent=st.none() | st.just("curl/8"),
    scheme=st.none() | st.sampled_from(["http", "https"]),
    country=st.none() | st.just("KP"),
    features=st.lists(st.sampled_from(["vision", "chat_completion"]), max_size=2),
    operation=st.none() | st.sampled_from(["read", "delete_data"]),
    provider=st.none() | st.just("openai"),
    flags=st.tuples(st.booleans(), st.booleans()),
    cost=st.integers(0, 10**15),
    tokens=st.integers(0, 10**12),
)
def test_an_unrestricted_policy_refuses_no_request(
    model: str | None,
    ip: str | None,
    origin: str | None,
    user_agent: str | None,
    scheme: str | None,
    country: str | None,
    features: list[str],
    operation: str | None,
    provider: str | None,
    flags: tuple[bool, bool],
    cost: int,
    tokens: int,
) -> None:
    """What verify skips for an unrestricted policy could only have passed."""
    context = RequestContext(
        model=model,
        ip=ip,
        origin=origin,
        user_agent=user_agent,
        scheme=scheme,
        country=country,
        features=tuple(features),
        operation=operation,
        provider=provider,
        auto_routing=flags[0],
        fallback=flags[1],
    )
    for document in ({}, {"scopes": ["chat"], "require_approval": True}):
        policy = parse_policy(document)
        assert policy.unrestricted
        assert check_request(policy, context) is None
        assert check_costs(policy, model, cost, tokens) is None
        assert policy.signing is None and policy.budget is None and policy.max_parallel is None
