"""Policies on verify: each rule, the order of checks, limits in the verdict, all-or-nothing."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.conftest import Api

FULL_POLICY: dict[str, Any] = {
    "models": {"allow": ["gpt-4*", "claude-3-*"], "deny": ["*-vision-*"]},
    "rate_limits": [
        {"name": "per_minute", "limit": 100, "period": "1m", "burst": 20},
        {"name": "per_day", "limit": 10000, "period": "1d"},
    ],
    "token_limits": {
        "input_per_minute": 100000,
        "output_per_minute": 50000,
        "total_per_day": 10000000,
    },
    "concurrency": {"max_parallel": 5},
    "budget": {"credit_limit": 50.0, "reset": "monthly", "alert_thresholds": [0.8, 1.0]},
    "network": {
        "ip_allow": ["203.0.113.0/24", "2001:db8::/32"],
        "ip_deny": ["203.0.113.7"],
        "origins": ["https://*.example.com"],
        "referrers": [],
        "user_agent": "^MyApp/\\d+",
    },
}

GOOD_CONTEXT: dict[str, Any] = {
    "model": "gpt-4o",
    "ip": "203.0.113.5",
    "origin": "https://app.example.com",
    "user_agent": "MyApp/1.2",
}


async def test_the_issue_example_policy_round_trips_and_verifies(api: Api) -> None:
    key, data = await api.create_key(name="acme prod", owner="cust_123", policy=FULL_POLICY)
    assert data["policy"]["budget"]["credit_limit"] == 50.0  # type: ignore[index]
    assert data["policy"]["rate_limits"][0]["period"] == "1m"  # type: ignore[index]
    assert data["effective_policy"] == data["policy"]
    assert data["limit"] == 50.0 and data["limit_remaining"] == 50.0
    assert data["usage"] == {"total": 0, "daily": 0, "weekly": 0, "monthly": 0}
    verdict = await api.verify(
        key,
        request_id="req_1",
        cost=0.10,
        tokens={"input": 1000, "output": 500},
        acquire_concurrency=True,
        **GOOD_CONTEXT,
    )
    assert verdict["code"] == "VALID", verdict
    assert verdict["request_id"] == "req_1"
    limits = {item["name"]: item for item in verdict["limits"]}  # type: ignore[union-attr, index]
    assert set(limits) == {
        "concurrency",
        "per_minute",
        "per_day",
        "input_per_minute",
        "output_per_minute",
        "total_per_day",
        "budget",
    }
    assert limits["per_minute"]["remaining"] == 19  # burst 20, one used
    assert limits["per_day"]["remaining"] == 9999
    assert limits["input_per_minute"]["remaining"] == 99000
    assert limits["total_per_day"]["remaining"] == 10000000 - 1500
    assert limits["concurrency"] == {
        "name": "concurrency",
        "kind": "concurrency",
        "limit": 5,
        "remaining": 4,
        "reset_at": None,
    }
    assert limits["budget"]["limit"] == 50.0
    assert limits["budget"]["remaining"] == 49.9
    assert limits["budget"]["reset_at"] == "2026-04-01T00:00:00Z"


async def test_each_rule_refuses_with_its_code_in_the_documented_order(api: Api) -> None:
    key, _ = await api.create_key(policy=FULL_POLICY, scopes=["chat"])
    cases = [
        ({"scopes": ["admin"], "model": "dall-e-3"}, "INSUFFICIENT_SCOPE"),
        ({"model": "dall-e-3", "ip": "198.51.100.1"}, "FORBIDDEN_MODEL"),
        ({"model": "gpt-4-vision-preview"}, "FORBIDDEN_MODEL"),  # deny wins over allow
        ({"model": None}, "FORBIDDEN_MODEL"),  # an allow list needs to know the model
        ({"ip": "203.0.113.7", "origin": "https://evil.com"}, "IP_NOT_ALLOWED"),  # deny wins
        ({"ip": "198.51.100.1"}, "IP_NOT_ALLOWED"),
        ({"ip": None}, "IP_NOT_ALLOWED"),
        ({"ip": "2001:db8::1", "origin": "https://example.com.evil.com"}, "ORIGIN_NOT_ALLOWED"),
        ({"origin": None}, "ORIGIN_NOT_ALLOWED"),
        ({"user_agent": "curl/8.0"}, "USER_AGENT_NOT_ALLOWED"),
        ({"ip": "::ffff:203.0.113.9"}, "VALID"),  # an IPv4-mapped address is the IPv4 one
    ]
    for changes, expected in cases:
        context = {**GOOD_CONTEXT, "scopes": ["chat"], **changes}
        context = {name: value for name, value in context.items() if value is not None}
        verdict = await api.verify(key, **context)
        assert verdict["code"] == expected, (changes, verdict)
        if expected != "VALID":
            assert verdict["limits"] == [] and verdict["valid"] is False


async def test_exactly_the_rate_limit_passes_and_the_refusal_says_when_to_retry(
    api: Api,
) -> None:
    key, _ = await api.create_key(
        policy={"rate_limits": [{"name": "per_minute", "limit": 50, "period": 60}]}
    )
    verdicts = await asyncio.gather(*(api.verify(key) for _ in range(200)))
    codes = [v["code"] for v in verdicts]
    assert codes.count("VALID") == 50
    assert codes.count("RATE_LIMITED") == 150
    refused = next(v for v in verdicts if v["code"] == "RATE_LIMITED")
    assert refused["retry_after"] == 1.2  # one emission interval: 60 s / 50
    assert refused["limits"][0]["remaining"] == 0  # type: ignore[index]
    api.clock.advance(1.2)
    assert (await api.verify(key))["code"] == "VALID"
    assert (await api.verify(key))["code"] == "RATE_LIMITED"


async def test_a_refused_request_consumes_no_other_limit(api: Api) -> None:
    key, _ = await api.create_key(
        policy={
            "rate_limits": [
                {"name": "per_second", "limit": 1, "period": "1s"},
                {"name": "per_day", "limit": 3, "period": "1d"},
            ]
        }
    )
    assert (await api.verify(key))["code"] == "VALID"
    for _ in range(10):  # refused by per_second: per_day must not be charged
        assert (await api.verify(key))["code"] == "RATE_LIMITED"
    for _ in range(2):
        api.clock.advance(1)
        assert (await api.verify(key))["code"] == "VALID"
    api.clock.advance(1)
    verdict = await api.verify(key)
    assert verdict["code"] == "RATE_LIMITED"
    per_day = next(item for item in verdict["limits"] if item["name"] == "per_day")  # type: ignore[union-attr]
    assert per_day["remaining"] == 0


async def test_concurrency_slots_are_held_until_the_usage_report(api: Api) -> None:
    key, data = await api.create_key(policy={"concurrency": {"max_parallel": 3}})
    verdicts = await asyncio.gather(
        *(api.verify(key, acquire_concurrency=True, request_id=f"r{i}") for i in range(10))
    )
    assert [v["code"] for v in verdicts].count("VALID") == 3
    assert (await api.verify(key))["code"] == "VALID"  # no slot asked, none needed
    held = [v["request_id"] for v in verdicts if v["code"] == "VALID"]
    response = await api.report(key_id=data["id"], request_id=held[0], cost=0)
    assert response.status_code == 201, response.text
    assert (await api.verify(key, acquire_concurrency=True))["code"] == "VALID"
    assert (await api.verify(key, acquire_concurrency=True))["code"] == "CONCURRENCY_EXCEEDED"


async def test_token_limits_count_estimates(api: Api) -> None:
    key, _ = await api.create_key(policy={"token_limits": {"input_per_minute": 1000}})
    ok = await api.verify(key, tokens={"input": 600, "output": 0})
    assert ok["code"] == "VALID"
    refused = await api.verify(key, tokens={"input": 600, "output": 0})
    assert refused["code"] == "TOKEN_LIMITED"
    assert refused["retry_after"] == 12.0  # 200 tokens at 1000/min come back in 12 s


async def test_budget_reservations_and_settlement(api: Api) -> None:
    key, data = await api.create_key(policy={"budget": {"credit_limit": 1.0, "reset": "daily"}})
    first = await api.verify(key, cost=0.6)
    assert first["code"] == "VALID"
    refused = await api.verify(key, cost=0.6)
    assert refused["code"] == "BUDGET_EXCEEDED"
    assert refused["retry_after"] == 12 * 3600.0  # the clock is at noon; the day resets at 0:00
    # The request cost 0.2 in the end: the rest of the reservation comes back.
    response = await api.report(key_id=data["id"], request_id=first["request_id"], cost=0.2)
    assert response.status_code == 201, response.text
    assert (await api.verify(key, cost=0.8))["code"] == "VALID"
    shown = (await api.client.get(f"/v1/keys/{data['id']}")).json()["data"]
    assert shown["usage"]["daily"] == 0.2
    assert shown["limit_remaining"] == 0.8  # reservations are not spending


async def test_per_model_budgets(api: Api) -> None:
    key, data = await api.create_key(
        policy={"budget": {"credit_limit": 10, "per_model": {"gpt-4o*": 1, "gpt-4*": 5}}}
    )
    # The first matching pattern applies, so the order must survive storage (JSONB too).
    assert list(data["policy"]["budget"]["per_model"]) == ["gpt-4o*", "gpt-4*"]  # type: ignore[index]
    assert (await api.verify(key, model="gpt-4o", cost=2))["code"] == "BUDGET_EXCEEDED"
    assert (await api.verify(key, model="gpt-4-turbo", cost=2))["code"] == "VALID"
    assert (await api.verify(key, model="gpt-4o", cost=1))["code"] == "VALID"
    assert (await api.verify(key, model="gpt-4o", cost=0.5))["code"] == "BUDGET_EXCEEDED"
    assert (await api.verify(key, model="gpt-3.5-turbo", cost=5))["code"] == "VALID"


async def test_budget_is_exhausted_by_reports_even_without_reservations(api: Api) -> None:
    key, data = await api.create_key(policy={"budget": {"credit_limit": 0.5}})
    assert (await api.verify(key))["code"] == "VALID"
    response = await api.report(key_id=data["id"], request_id="a", cost=0.5)
    assert response.status_code == 201
    assert (await api.verify(key))["code"] == "BUDGET_EXCEEDED"
