"""Credits cross the API exactly: every digit of the micro-credits, in and out, on every surface.

A float holds about 16 significant digits; 999999999999.999999 credits has 18. These tests
send amounts as raw JSON numbers (and as decimal strings) and read answers with
``parse_float=Decimal``, so a float anywhere on the way shows up as a wrong digit.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyplane.domain import money
from tests.conftest import Api

#: The whole allowed range, with its ends and the 18-digit values floats cannot hold.
AMOUNTS = st.one_of(
    st.integers(0, money.MAX_MICROS),
    st.sampled_from([0, 1, money.MAX_MICROS, money.MAX_MICROS - 1, 999_999_999_999_999_999]),
)
EXAMPLES = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def text_of(micros: int) -> str:
    """The exact decimal text of an amount, written out here rather than by the code under test."""
    whole, fraction = divmod(micros, 1_000_000)
    return f"{whole}.{fraction:06d}"


MAX = text_of(money.MAX_MICROS - 1)  # "999999999999.999999"


def exact(response: httpx.Response) -> Any:
    assert response.status_code < 300, response.text
    return json.loads(response.text, parse_float=Decimal)


def credits(micros: int) -> Decimal:
    return Decimal(micros).scaleb(-6)


async def post(api: Api, path: str, body: dict[str, Any], **numbers: str) -> httpx.Response:
    """POST ``body`` with each ``"$name"`` string value replaced by a raw JSON number."""
    text = json.dumps(body)
    for name, number in numbers.items():
        text = text.replace(f'"${name}"', number)
    return await api.client.post(path, content=text, headers={"Content-Type": "application/json"})


async def test_the_largest_limit_comes_back_digit_for_digit(api: Api) -> None:
    # The defect: this came back as 1000000000000.0.
    created = exact(
        await post(
            api,
            "/v1/keys",
            {"name": "big", "policy": {"budget": {"credit_limit": "$limit"}}},
            limit=MAX,
        )
    )["data"]
    assert created["limit"] == Decimal(MAX)
    assert created["limit_remaining"] == Decimal(MAX)
    assert created["policy"]["budget"]["credit_limit"] == Decimal(MAX)
    assert f'"credit_limit":{MAX}' in (await api.client.get(f"/v1/keys/{created['id']}")).text


@given(limit=AMOUNTS, spent=st.integers(0, money.MAX_MICROS), as_string=st.booleans())
@EXAMPLES
async def test_native_keys_verify_and_usage_are_exact(
    api: Api, limit: int, spent: int, as_string: bool
) -> None:
    limit = max(limit, 1)  # a budget of 0 refuses every verify; 0 is covered by the others
    spent = min(spent, limit)
    text = text_of(limit)
    number = json.dumps(text) if as_string else text
    response = await post(
        api,
        "/v1/keys",
        {
            "name": "k",
            "policy": {
                "budget": {"credit_limit": "$limit", "per_model": {"gpt-*": "$limit"}},
            },
        },
        limit=number,
    )
    created = exact(response)
    key, data = created["key"], created["data"]
    assert data["limit"] == data["limit_remaining"] == credits(limit)
    assert data["policy"]["budget"] == {
        "credit_limit": credits(limit),
        "per_model": {"gpt-*": credits(limit)},
    }
    verdict = exact(
        await post(
            api,
            "/v1/verify",
            {"key": key, "cost": "$cost", "request_id": "r1"},
            cost=text_of(spent),
        )
    )
    assert verdict["code"] == "VALID", verdict
    [budget] = [item for item in verdict["limits"] if item["kind"] == "budget"]
    assert budget["limit"] == credits(limit)
    assert budget["remaining"] == credits(limit - spent)
    reported = await post(
        api,
        "/v1/usage",
        {"key_id": data["id"], "request_id": "r1", "cost": "$cost"},
        cost=text_of(spent),
    )
    assert reported.status_code == 201, reported.text
    shown = exact(await api.client.get(f"/v1/keys/{data['id']}"))["data"]
    assert shown["usage"]["total"] == credits(spent)
    assert shown["limit_remaining"] == credits(limit - spent)


@given(limit=AMOUNTS)
@EXAMPLES
async def test_plans_are_exact(api: Api, limit: int) -> None:
    response = await post(
        api,
        "/v1/plans",
        {"name": "p", "policy": {"budget": {"credit_limit": "$limit"}}},
        limit=text_of(limit),
    )
    plan = exact(response)["data"]
    assert plan["policy"]["budget"]["credit_limit"] == credits(limit)
    assert (await api.client.delete("/v1/plans/p")).status_code == 200


@given(limit=AMOUNTS, as_string=st.booleans())
@EXAMPLES
async def test_openrouter_surface_is_exact(api: Api, limit: int, as_string: bool) -> None:
    text = text_of(limit)
    number = json.dumps(text) if as_string else text
    created = exact(await post(api, "/api/v1/keys", {"name": "o", "limit": "$l"}, l=number))
    assert created["data"]["limit"] == created["data"]["limit_remaining"] == credits(limit)
    patched = await api.client.patch(
        f"/api/v1/keys/{created['hash']}",
        content=f'{{"limit": {text}}}',
        headers={"Content-Type": "application/json"},
    )
    assert exact(patched)["data"]["limit"] == credits(limit)
    shown = exact(await api.client.get(f"/api/v1/keys/{created['hash']}"))
    assert shown["limit"] == shown["data"]["limit"] == credits(limit)
    assert shown["usage"] == Decimal(0)


@given(limit=AMOUNTS, as_string=st.booleans())
@EXAMPLES
async def test_fastrouter_surface_is_exact(api: Api, limit: int, as_string: bool) -> None:
    text = text_of(limit)
    number = json.dumps(text) if as_string else text
    created = exact(
        await post(
            api, "/prod/createServiceKey", {"api_key_name": "f", "credit_limit": "$l"}, l=number
        )
    )
    assert created["credit_limit"] == created["credit_remaining"] == credits(limit)
    listed = exact(await api.client.get("/prod/getServiceKeys"))["service_keys"]
    [shown] = [item for item in listed if item["api_key_id_hash"] == created["api_key_id_hash"]]
    assert shown["credit_limit"] == credits(limit)
    assert shown["credit_used"] == Decimal(0)


async def test_budget_events_show_exact_credits(api: Api) -> None:
    created = exact(
        await post(
            api,
            "/v1/keys",
            {"name": "e", "policy": {"budget": {"credit_limit": "$l", "alert_thresholds": [1]}}},
            l=MAX,
        )
    )["data"]
    reported = await post(
        api, "/v1/usage", {"key_id": created["id"], "request_id": "e1", "cost": "$c"}, c=MAX
    )
    assert reported.status_code == 201, reported.text
    events = exact(await api.client.get("/v1/events"))["data"]
    # Spending the whole budget crosses its thresholds and exhausts it.
    assert {e["type"] for e in events} == {"budget.threshold_crossed", "budget.exhausted"}
    [event] = [e for e in events if e["type"] == "budget.threshold_crossed"]
    assert event["payload"]["credit_limit"] == event["payload"]["spent"] == Decimal(MAX)


async def test_amounts_past_six_places_are_refused_even_where_a_float_would_round(
    api: Api,
) -> None:
    # As a float this is exactly 0.1; as the number written it has 20 decimal places.
    response = await post(
        api,
        "/v1/keys",
        {"name": "x", "policy": {"budget": {"credit_limit": "$l"}}},
        l="0.10000000000000000001",
    )
    assert response.status_code == 422, response.text
    assert (await api.client.get("/v1/keys")).json()["data"] == []


async def test_other_numbers_in_a_body_still_read_as_numbers(api: Api) -> None:
    # Bodies are parsed with exact numbers; every non-money field takes them as before.
    response = await post(
        api,
        "/v1/keys",
        {
            "name": "n",
            "metadata": {"ratio": "$r"},
            "policy": {
                "budget": {"credit_limit": 1, "alert_thresholds": ["$t"]},
                "rate_limits": [{"name": "m", "limit": "$i", "period": 60}],
            },
        },
        r="0.25",
        t="0.8",
        i="10.0",
    )
    data = exact(response)["data"]
    assert data["metadata"] == {"ratio": Decimal("0.25")}
    assert data["policy"]["budget"]["alert_thresholds"] == [Decimal("0.8")]
    assert data["policy"]["rate_limits"][0]["limit"] == 10
