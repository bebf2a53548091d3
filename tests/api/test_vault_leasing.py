"""Vault leases under concurrency, and the strategies end to end through the API."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from tests.api.test_vault import add, lease, release
from tests.conftest import Api


async def test_max_concurrent_holds_at_every_instant_for_50_holders(api: Api) -> None:
    await add(api, max_concurrent=2)
    holding = 0
    most = 0
    # Set once two hold a lease together. The first holders keep theirs until then, so the
    # limit is reached however slow the machine (a fixed hold time assumed it would be).
    full = asyncio.Event()

    async def holder() -> None:
        nonlocal holding, most
        while True:
            response = await lease(api)
            if response.status_code == 201:
                break
            assert response.status_code == 429, response.text
            assert response.json()["code"] == "ALL_AT_MAX_CONCURRENCY"
            await asyncio.sleep(0.01)
        holding += 1
        most = max(most, holding)
        if holding == 2:
            full.set()
        await asyncio.wait_for(full.wait(), timeout=30)  # bounds a hang, not a timing
        await asyncio.sleep(0.03)
        holding -= 1
        released = await release(api, response.json()["lease_id"])
        assert released.status_code == 200, released.text

    await asyncio.gather(*(holder() for _ in range(50)))
    assert most == 2
    stats = (await api.client.get("/v1/vault/stats?provider=openai")).json()
    assert (stats["daily_used"], stats["live_leases"]) == (50, 0)


async def test_500_concurrent_leases_against_a_daily_limit_of_100_win_exactly_100(
    api: Api,
) -> None:
    await add(api, daily_limit=100)
    responses = await asyncio.gather(*(lease(api) for _ in range(500)))
    codes = Counter(response.status_code for response in responses)
    assert codes == {201: 100, 404: 400}, codes
    assert {r.json()["code"] for r in responses if r.status_code == 404} == {"NO_CREDENTIAL"}
    assert len({r.json()["lease_id"] for r in responses if r.status_code == 201}) == 100
    stats = (await api.client.get("/v1/vault/stats?provider=openai")).json()
    assert (stats["daily_used"], stats["daily_remaining"]) == (100, 0)


async def _picks(api: Api, count: int, **fields: Any) -> Counter[str]:
    picks: Counter[str] = Counter()
    for _ in range(count):
        response = await lease(api, **fields)
        assert response.status_code == 201, response.text
        picks[response.json()["alias"]] += 1
        await release(api, response.json()["lease_id"])
        api.clock.advance(0.001)
    return picks


async def test_round_robin_cycles_evenly_through_the_api(api: Api) -> None:
    for name in ("a", "b", "c"):
        await add(api, alias=name)
    assert await _picks(api, 12) == {"a": 4, "b": 4, "c": 4}


async def test_weighted_follows_weights_through_the_api(api: Api) -> None:
    await add(api, alias="light", weight=1)
    await add(api, alias="heavy", weight=4)
    picks = await _picks(api, 120, strategy="weighted")
    # Expected 0.8; the standard deviation at n=120 is 0.037, so this is 4 sigma wide.
    # (tests/domain/test_vault.py checks the distribution tightly on many more picks.)
    assert abs(picks["heavy"] / 120 - 0.8) < 0.15, picks


async def test_least_used_catches_up_a_new_credential(api: Api) -> None:
    await add(api, alias="old")
    await _picks(api, 3)
    await add(api, alias="new")
    assert await _picks(api, 3, strategy="least_used") == {"new": 3}
    assert await _picks(api, 2, strategy="least_used") == {"new": 1, "old": 1}


async def test_random_uses_every_credential(api: Api) -> None:
    for name in ("a", "b", "c"):
        await add(api, alias=name)
    assert set(await _picks(api, 60, strategy="random")) == {"a", "b", "c"}


async def test_cooling_down_and_exhausted_credentials_are_skipped(api: Api) -> None:
    await add(api, alias="exhausted", daily_limit=0)
    cooling = await add(api, alias="cooling")
    await add(api, alias="fine")
    await api.client.patch(f"/v1/vault/credentials/{cooling['id']}", json={"status": "active"})
    taken = (await lease(api)).json()
    assert taken["alias"] == "cooling"
    await release(api, taken["lease_id"], outcome="rate_limited")
    for strategy in ("round_robin", "weighted", "random", "least_used"):
        assert await _picks(api, 4, strategy=strategy) == {"fine": 4}
