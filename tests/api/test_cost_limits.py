"""``costs`` and ``models.cost_limits`` through the API, on SQLite and PostgreSQL: the policy
as written and shown, what verify answers, windows seeded from the ledger, alerts, and hostile
input."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from tests.api.test_auth import assert_refused, auth
from tests.conftest import Api

COSTS = {
    "per_request_max": 1,
    "per_hour_max": 2,
    "per_day_max": "3.5",
    "per_month_max": 10,
    "alert_threshold": 0.5,
}


def limits_of(verdict: dict[str, Any]) -> dict[str, float]:
    return {item["name"]: item["remaining"] for item in verdict["limits"]}


async def test_cost_windows_cap_each_request_and_each_window(api: Api) -> None:
    key, data = await api.create_key(policy={"costs": COSTS})
    assert data["policy"]["costs"] == {  # type: ignore[index]
        "per_request_max": 1,
        "per_hour_max": 2,
        "per_day_max": 3.5,
        "per_month_max": 10,
        "alert_threshold": 0.5,
    }
    # One request's estimate above per_request_max: refused, nothing reserved.
    refused = await api.verify(key, cost=1.5)
    assert refused["code"] == "COST_LIMITED" and refused["retry_after"] is None
    # The same through forward auth: a gateway answers 402, as for a spent budget.
    forwarded = await auth(api, key, **{"X-Keyplane-Cost": "1.5"})
    assert_refused(forwarded, 402, "COST_LIMITED", key)
    first = await api.verify(key, cost=1, request_id="a")
    assert first["code"] == "VALID"
    assert limits_of(first) == {
        "costs.per_hour_max": 1,
        "costs.per_day_max": 2.5,
        "costs.per_month_max": 9,
    }
    assert (await api.verify(key, cost=1, request_id="b"))["code"] == "VALID"
    # The hour is used up (the clock reads 12:00): it resets in an hour, the others live on.
    third = await api.verify(key, cost="0.5")
    assert third["code"] == "COST_LIMITED" and third["retry_after"] == 3600
    # Reported for less than reserved: the hour has room again.
    for request_id in ("a", "b"):
        reported = await api.report(key_id=data["id"], request_id=request_id, cost="0.5")
        assert reported.status_code == 201, reported.text
    assert (await api.verify(key, cost=1))["code"] == "VALID"
    # A new hour: its window starts over, the day goes on from the ledger and reservations.
    api.clock.advance(3600)
    verdict = await api.verify(key, cost="0.5")
    assert verdict["code"] == "VALID"
    assert limits_of(verdict)["costs.per_hour_max"] == 1.5
    # 3.5 - 1 reported - 0.5; the unreported reservation of 1 expired after five minutes.
    assert limits_of(verdict)["costs.per_day_max"] == 2
    # A report above per_request_max is still recorded: the money was spent.
    reported = await api.report(key_id=data["id"], request_id="big", cost=5)
    assert reported.status_code == 201, reported.text
    day = await api.verify(key, cost="0.1")
    assert day["code"] == "COST_LIMITED"
    # The hour (at 14:00) and the day (at midnight) both refuse: it passes once the later of
    # them has reset.
    assert day["retry_after"] == 11 * 3600


async def test_windows_are_seeded_from_the_ledger_and_raise_alerts(api: Api) -> None:
    key, data = await api.create_key(policy={"costs": {"per_hour_max": 2, "alert_threshold": 0.5}})
    other, _ = await api.create_key(policy={"costs": {"per_hour_max": 2}})
    # Reports before any verify: the hour's counter is read from the ledger when first asked.
    reported = await api.report(key_id=data["id"], request_id="u1", cost="1.5")
    assert reported.status_code == 201, reported.text
    events = (await api.client.get("/v1/events")).json()["data"]
    [event] = events
    assert event["type"] == "budget.threshold_crossed"
    assert event["payload"]["window"] == "per_hour_max"
    assert event["payload"]["threshold"] == 0.5
    assert (await api.verify(key, cost=1))["code"] == "COST_LIMITED"
    assert (await api.verify(key, cost="0.5"))["code"] == "VALID"
    assert (await api.verify(other, cost=2))["code"] == "VALID"  # another key's hour


async def test_model_cost_limits(api: Api) -> None:
    policy = {
        "models": {
            "cost_limits": {
                "gpt-4o-mini": {"max_requests_per_day": 5},
                "gpt-4*": {
                    "max_requests_per_day": 2,
                    "max_tokens_per_request": 100,
                    "max_cost_per_day": 1,
                },
            }
        }
    }
    key, data = await api.create_key(policy=policy)
    assert list(data["policy"]["models"]["cost_limits"]) == ["gpt-4o-mini", "gpt-4*"]  # type: ignore[index]
    gpt4 = {"model": "gpt-4o"}
    too_long = await api.verify(key, tokens={"input": 80, "output": 21}, **gpt4)
    assert too_long["code"] == "TOKEN_LIMITED" and too_long["retry_after"] is None
    assert (await api.verify(key, cost="0.6", tokens={"input": 100}, **gpt4))["code"] == "VALID"
    spent = await api.verify(key, cost="0.6", **gpt4)
    assert spent["code"] == "COST_LIMITED"
    assert spent["retry_after"] == 12 * 3600  # midnight UTC
    assert (await api.verify(key, cost="0.4", **gpt4))["code"] == "VALID"
    # Two requests admitted: the third is refused by the count (checked before the cost).
    third = await api.verify(key, **gpt4)
    assert third["code"] == "RATE_LIMITED" and third["retry_after"] == 43200
    # The first matching pattern applies: gpt-4o-mini has its own count and no cost cap.
    for _ in range(5):
        mini = await api.verify(key, cost=3, model="gpt-4o-mini")
        assert mini["code"] == "VALID"
    assert (await api.verify(key, cost=3, model="claude-3"))["code"] == "VALID"


async def test_max_requests_per_day_counts_a_utc_calendar_day(api: Api) -> None:
    policy = {"models": {"cost_limits": {"gpt-4*": {"max_requests_per_day": 3}}}}
    key, _ = await api.create_key(policy=policy)
    now = api.clock.now()
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    to_midnight = (midnight - now).total_seconds()
    for _ in range(3):
        assert (await api.verify(key, model="gpt-4o"))["code"] == "VALID"
    refused = await api.verify(key, model="gpt-4o")
    assert refused["code"] == "RATE_LIMITED" and refused["retry_after"] == to_midnight
    [count] = refused["limits"]
    assert count["name"] == "model:gpt-4*:requests_per_day" and count["remaining"] == 0
    assert count["reset_at"] == midnight.isoformat().replace("+00:00", "Z")
    # A rolling day would have let one back in every eight hours; a calendar day waits.
    api.clock.advance(to_midnight - 1)
    late = await api.verify(key, model="gpt-4o")
    assert late["code"] == "RATE_LIMITED" and late["retry_after"] == 1
    api.clock.advance(1)
    for _ in range(3):
        assert (await api.verify(key, model="gpt-4o"))["code"] == "VALID"
    assert (await api.verify(key, model="gpt-4o"))["retry_after"] == 86_400


HOSTILE: list[dict[str, Any]] = [
    {"costs": {"per_request_max": -1}},
    {"costs": {"per_hour_max": "1e200000"}},
    {"costs": {"per_day_max": "ten"}},
    {"costs": {"per_month_max": True}},
    {"costs": {"per_month_max": [1]}},
    {"costs": {"per_day_max": "0.0000001"}},
    {"costs": {"per_day_max": 10**13}},
    {"costs": {"alert_threshold": 0}},
    {"costs": {"alert_threshold": 1.5}},
    {"costs": {"per_minute_max": 1}},
    {"budget": {"reset": "hourly"}},
    {"models": {"cost_limits": {f"m{i}*": {"max_cost_per_day": 1} for i in range(51)}}},
    {"models": {"cost_limits": {"gpt 4": {"max_requests_per_day": 1}}}},
    {"models": {"cost_limits": {"x" * 129: {"max_requests_per_day": 1}}}},
    {"models": {"cost_limits": {"gpt-4*": {"max_requests_per_day": 0}}}},
    {"models": {"cost_limits": {"gpt-4*": {"max_tokens_per_request": 10**13}}}},
    {"models": {"cost_limits": {"gpt-4*": {"max_cost_per_day": -0.5}}}},
    {"models": {"cost_limits": {"gpt-4*": {"max_requests": 1}}}},
    {"models": {"cost_limits": ["gpt-4*"]}},
]


# The policy is refused before any storage is involved: one database is enough.
@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_hostile_cost_policies_are_refused(api: Api) -> None:
    # One app for them all: each refusal is a 422 problem, and nothing is stored.
    for policy in HOSTILE:
        response = await api.client.post("/v1/keys", json={"name": "h", "policy": policy})
        assert response.status_code == 422, (policy, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    assert (await api.client.get("/v1/keys")).json()["data"] == []
