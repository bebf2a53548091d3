"""``POST /v1/keys/{id}/limits/reset`` and ``POST /v1/keys/{id}/credits``: operators' resets
and credit adjustments, audited, on SQLite and PostgreSQL (memory limiter), and exact under
a thousand concurrent verifies (memory on SQLite, Redis on PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from keyplane.domain.clock import ManualClock
from keyplane.domain.tenancy import Principal
from keyplane.services.verify import VerifyRequest
from tests.conftest import Api, Database
from tests.limits.harness import redis_url, require_redis
from tests.limits.test_seeding import _forget_redis_keys, running

LIMITED = {
    "rate_limits": [
        {"name": "per-minute", "limit": 2, "period": "1m"},
        {"name": "per-hour", "limit": 3, "period": "1h"},
    ],
    "concurrency": {"max_parallel": 1},
}


@pytest.fixture
async def sqlite_api(sqlite_database: Database, clock: ManualClock) -> AsyncIterator[Api]:
    """For refusals, which no database takes part in: SQLite only, to keep the suite fast."""
    async with running(sqlite_database, clock) as api:
        yield api


async def _audited(api: Api, action: str, key_id: str) -> list[dict[str, Any]]:
    response = await api.client.get("/v1/audit", params={"action": action, "key_id": key_id})
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()["data"]
    return entries


async def test_a_reset_refills_the_windows_and_frees_the_slots_and_is_audited(api: Api) -> None:
    key, data = await api.create_key(policy=LIMITED)
    url = f"/v1/keys/{data['id']}/limits/reset"
    assert (await api.verify(key, acquire_concurrency=True))["code"] == "VALID"
    assert (await api.verify(key, acquire_concurrency=True))["code"] == "CONCURRENCY_EXCEEDED"
    assert (await api.verify(key))["code"] == "VALID"
    assert (await api.verify(key))["code"] == "RATE_LIMITED"

    only_minute = await api.client.post(url, json={"windows": ["per-minute"], "concurrency": False})
    assert only_minute.status_code == 200, only_minute.text
    assert only_minute.json()["data"] == {
        "key_id": data["id"],
        "windows": ["per-minute"],
        "concurrency": False,
        "slots_released": 0,
    }
    # per-minute is full again; per-hour (3) has one left; the slot is still held.
    assert (await api.verify(key))["code"] == "VALID"
    assert (await api.verify(key))["code"] == "RATE_LIMITED"

    everything = await api.client.post(url)
    assert everything.status_code == 200
    assert everything.json()["data"]["windows"] == ["per-minute", "per-hour"]
    assert everything.json()["data"]["slots_released"] == 1
    assert (await api.verify(key, acquire_concurrency=True))["code"] == "VALID"
    assert (await api.verify(key))["code"] == "VALID"

    entries = await _audited(api, "key.limits.reset", str(data["id"]))
    assert [e["details"]["windows"] for e in entries] == [
        ["per-minute", "per-hour"],
        ["per-minute"],
    ]


async def test_a_reset_refuses_unknown_windows_and_needs_keys_write(sqlite_api: Api) -> None:
    api = sqlite_api
    _, data = await api.create_key(policy=LIMITED)
    url = f"/v1/keys/{data['id']}/limits/reset"
    unknown = await api.client.post(url, json={"windows": ["per-day"]})
    assert unknown.status_code == 422
    assert unknown.json()["code"] == "UNKNOWN_WINDOW"
    for body in (
        {"windows": []},
        {"windows": "per-minute"},
        {"windows": ["x" * 65]},
        {"windows": ["a"] * 51},
        {"concurrency": "yes"},
        {"extra": 1},
    ):
        assert (await api.client.post(url, json=body)).status_code == 422, body
    reader = await api.management_key("keys:read")
    refused = await api.client.post(url, headers=api.as_key(reader))
    assert refused.status_code == 403
    missing = await api.client.post("/v1/keys/key_00000000000000000000000000/limits/reset")
    assert missing.status_code == 404


async def test_credits_are_ledger_entries_the_budget_sees_at_once(api: Api) -> None:
    key, data = await api.create_key(policy={"budget": {"credit_limit": 1, "reset": "monthly"}})
    url = f"/v1/keys/{data['id']}/credits"
    assert (await api.verify(key, cost=0))["code"] == "VALID"  # seeds the live counter
    charged = await api.client.post(url, json={"amount": -1, "reason": "chargeback"})
    assert charged.status_code == 201, charged.text
    assert (await api.verify(key, cost=0.000001))["code"] == "BUDGET_EXCEEDED"

    granted = await api.client.post(url, json={"amount": "2.5", "reason": "goodwill"})
    assert granted.status_code == 201
    body = granted.json()["data"]
    assert (body["amount"], body["reason"], body["key_id"]) == (2.5, "goodwill", data["id"])
    assert (await api.verify(key, cost=2.5))["code"] == "VALID"
    assert (await api.verify(key, cost=0.000001))["code"] == "BUDGET_EXCEEDED"

    shown = (await api.client.get(f"/v1/keys/{data['id']}")).json()["data"]
    assert shown["usage"]["monthly"] == -1.5  # net of the credits
    assert shown["limit_remaining"] == 2.5

    entries = await _audited(api, "key.credits.adjusted", str(data["id"]))
    assert [(e["details"]["amount"], e["details"]["reason"]) for e in entries] == [
        ("2.5", "goodwill"),
        ("-1.0", "chargeback"),
    ]


async def test_an_idempotent_credit_is_counted_once(api: Api) -> None:
    key, data = await api.create_key(policy={"budget": {"credit_limit": 0}})
    url = f"/v1/keys/{data['id']}/credits"
    headers = {"Idempotency-Key": "grant-1"}
    body = {"amount": 1, "reason": "trial"}
    first, second = await asyncio.gather(
        api.client.post(url, json=body, headers=headers),
        api.client.post(url, json=body, headers=headers),
    )
    assert sorted([first.status_code, second.status_code]) == [200, 201]
    assert first.json()["data"]["id"] == second.json()["data"]["id"]
    replayed = first if first.status_code == 200 else second
    assert replayed.headers["Idempotent-Replayed"] == "true"
    reused = await api.client.post(url, json={"amount": 2, "reason": "trial"}, headers=headers)
    assert reused.status_code == 409
    assert reused.json()["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert (await api.verify(key, cost=1))["code"] == "VALID"
    assert (await api.verify(key, cost=0.000001))["code"] == "BUDGET_EXCEEDED"


async def test_credits_need_their_own_scope_and_refuse_hostile_input(sqlite_api: Api) -> None:
    api = sqlite_api
    _, data = await api.create_key(policy={"budget": {"credit_limit": 1}})
    url = f"/v1/keys/{data['id']}/credits"
    writer = await api.management_key("keys:write", "keys:read")
    refused = await api.client.post(
        url, json={"amount": 1, "reason": "x"}, headers=api.as_key(writer)
    )
    assert refused.status_code == 403
    assert refused.json()["code"] == "MISSING_SCOPE"
    for bad in (
        {"amount": 0, "reason": "x"},
        {"amount": "0.0000001", "reason": "x"},
        {"amount": "1e999999999", "reason": "x"},
        {"amount": 10**13, "reason": "x"},
        {"amount": -(10**13), "reason": "x"},
        {"amount": True, "reason": "x"},
        {"amount": "NaN", "reason": "x"},
        {"amount": [1], "reason": "x"},
        {"amount": 1},
        {"amount": 1, "reason": ""},
        {"amount": 1, "reason": "x" * 501},
        {"amount": 1, "reason": "bell\x07"},
        {"reason": "x"},
    ):
        response = await api.client.post(url, json=bad)
        assert response.status_code == 422, (bad, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    assert (
        await api.client.post(url, content=b"{", headers={"content-type": "application/json"})
    ).status_code == 400
    # The ledger's totals stay in range, whatever the number of maximal charges.
    charges = [
        await api.client.post(url, json={"amount": -(10**12), "reason": "x"}) for _ in range(10)
    ]
    assert charges[-1].status_code == 409
    assert charges[-1].json()["code"] == "CREDITS_OUT_OF_RANGE"
    revoked = await api.create_key()
    await api.client.delete(f"/v1/keys/{revoked[1]['id']}")
    gone = await api.client.post(
        f"/v1/keys/{revoked[1]['id']}/credits", json={"amount": 1, "reason": "x"}
    )
    assert gone.status_code == 409


VERIFIES = 1000


async def burst(
    api: Api, key: str, org_id: str, cost_micros: int, count: int = VERIFIES
) -> list[str]:
    """``count`` verifies at once, straight to the verifier: through the ASGI transport the
    event loop of this loaded 2-core machine lags enough for Redis's pool (5 s) to time out,
    and the resilient limiter to fall back, which is not what these tests are about."""
    verifier = api.app.state.runtime.services.verifier  # type: ignore[attr-defined]
    caller = Principal("mk_test", org_id, None, ("verify",))
    verdicts = await asyncio.gather(
        *(verifier.verify(caller, VerifyRequest(key=key, cost=cost_micros)) for _ in range(count))
    )
    return [verdict.code.value for verdict in verdicts]


@pytest.mark.parametrize("scenario", ["credit", "carry"])
async def test_a_thousand_concurrent_verifies_spend_exactly_a_credit_or_a_carry(
    sqlite_database: Database, clock: ManualClock, scenario: str
) -> None:
    """On the memory limiter; Redis on PostgreSQL is the two-instance test below."""
    async with running(sqlite_database, clock) as api:
        budget: dict[str, Any] = {"credit_limit": 1, "reset": "daily"}
        if scenario == "carry":
            rollover = {"enabled": True, "max_carry": 3}
            budget = {"credit_limit": 5, "reset": "daily", "rollover": rollover}
        key, data = await api.create_key(policy={"budget": budget})
        url = f"/v1/keys/{data['id']}/credits"
        if scenario == "credit":
            # Spend the limit (seeding the counter), then grant 3 credits.
            assert (await api.verify(key, cost=1))["code"] == "VALID"
            granted = await api.client.post(url, json={"amount": 3, "reason": "top-up"})
            assert granted.status_code == 201
        else:
            # Spend 2 of 5 today; tomorrow carries min(3, 5 - 2) = 3: 8 to spend.
            await api.client.post(url, json={"amount": -2, "reason": "spent"})
            api.clock.advance(86_400)
            shown = (await api.client.get(f"/v1/keys/{data['id']}")).json()["data"]
            assert (shown["limit_carry"], shown["limit_effective"]) == (3, 8)
            answer = await api.verify(key, cost=0)
            [limit] = answer["limits"]  # type: ignore[misc]
            assert (limit["limit"], limit["carry"], limit["remaining"]) == (8, 3, 8)
        codes = await burst(api, key, str(data["org_id"]), 10_000)
    admitted = 300 if scenario == "credit" else 800
    assert codes.count("VALID") == admitted
    assert codes.count("BUDGET_EXCEEDED") == VERIFIES - admitted


async def test_two_instances_share_a_carry_and_a_credit_exactly(
    postgres_database: Database, clock: ManualClock
) -> None:
    """Two in-process instances on one PostgreSQL and one Redis: the carry each computes from
    the ledger, and a credit made on the other one, add up to one exact limit."""
    require_redis()
    settings = {"redis_url": redis_url()}
    async with (
        running(postgres_database, clock, **settings) as first,
        running(postgres_database, clock, **settings) as second,
    ):
        budget = {"credit_limit": 5, "reset": "daily", "rollover": {"enabled": True}}
        key, data = await first.create_key(policy={"budget": budget})
        try:
            spend = await first.client.post(
                f"/v1/keys/{data['id']}/credits", json={"amount": -2, "reason": "spent"}
            )
            assert spend.status_code == 201
            clock.advance(86_400)  # carry: min(5, 5 - 2) = 3; the limit is 8 today
            assert (await first.verify(key, cost=0))["code"] == "VALID"  # seeds on Redis
            grant = await second.client.post(
                f"/v1/keys/{data['id']}/credits", json={"amount": 1, "reason": "goodwill"}
            )
            assert grant.status_code == 201
            org_id = str(data["org_id"])
            halves = await asyncio.gather(
                burst(first, key, org_id, 10_000, VERIFIES // 2),
                burst(second, key, org_id, 10_000, VERIFIES // 2),
            )
        finally:
            await _forget_redis_keys(str(data["id"]))
    codes = halves[0] + halves[1]
    assert codes.count("VALID") == 900  # (8 + 1) / 0.01
    assert codes.count("BUDGET_EXCEEDED") == VERIFIES - 900
