"""``/v1/usage``: idempotent, durable reports; the ledger behind usage and budgets."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import insert, text

from keyplane.domain import money
from keyplane.domain.periods import EPOCH
from keyplane.store.tables import usage_rollups
from tests.api.test_organizations import second_org
from tests.conftest import Api


async def test_a_report_is_counted_once_however_often_it_is_sent(api: Api) -> None:
    _, data = await api.create_key(policy={"budget": {"credit_limit": 100}})
    body = {
        "key_id": data["id"],
        "request_id": "req_1",
        "cost": 0.08,
        "input_tokens": 900,
        "output_tokens": 450,
        "model": "gpt-4o",
        "latency_ms": 420,
        "status": 200,
    }
    responses = await asyncio.gather(*(api.report("idem-1", **body) for _ in range(500)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(201) == 1 and statuses.count(200) == 499, statuses[:3]
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 1
    assert sum(r.json()["duplicate"] for r in responses) == 499
    shown = (await api.client.get(f"/v1/keys/{data['id']}")).json()["data"]
    assert shown["usage"] == {"total": 0.08, "daily": 0.08, "weekly": 0.08, "monthly": 0.08}
    assert shown["limit_remaining"] == 99.92


async def test_the_request_id_is_the_idempotency_key_without_the_header(api: Api) -> None:
    _, data = await api.create_key()
    first = await api.report(key_id=data["id"], request_id="r1", cost=1)
    again = await api.report(key_id=data["id"], request_id="r1", cost=1)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["duplicate"] is True


async def test_a_reused_idempotency_key_with_another_body_is_a_conflict(api: Api) -> None:
    _, data = await api.create_key()
    assert (await api.report("k", key_id=data["id"], cost=1)).status_code == 201
    response = await api.report("k", key_id=data["id"], cost=2)
    assert response.status_code == 409
    assert response.json()["code"] == "IDEMPOTENCY_KEY_REUSED"
    shown = (await api.client.get(f"/v1/keys/{data['id']}")).json()["data"]
    assert shown["usage"]["total"] == 1.0


async def test_a_report_needs_an_idempotency_key_and_one_key_reference(api: Api) -> None:
    key, data = await api.create_key()
    response = await api.report(key_id=data["id"], cost=1)
    assert response.status_code == 422
    assert response.json()["code"] == "IDEMPOTENCY_KEY_REQUIRED"
    response = await api.report(key_id=data["id"], key=key, request_id="x")
    assert response.status_code == 422
    response = await api.report(key=key, request_id="by-plaintext", cost=0.5)
    assert response.status_code == 201
    assert response.json()["key_id"] == data["id"]


async def two_projects(api: Api, **key_fields: object) -> dict[str, dict[str, Any]]:
    """Projects a and b, an API key in each and a management key bound to each."""
    tenants: dict[str, dict[str, Any]] = {}
    for name in ("a", "b"):
        created = await api.client.post("/v1/projects", json={"name": f"team-{name}"})
        assert created.status_code == 201, created.text
        project_id = created.json()["data"]["id"]
        key, data = await api.create_key(project_id=project_id, **key_fields)
        manager = await api.management_key("usage:*", "keys:read", "verify", project_id=project_id)
        tenants[name] = {"key": key, "id": data["id"], "as": api.as_key(manager)}
    return tenants


async def report_as(
    api: Api, tenant: dict[str, Any], idempotency_key: str | None = None, **fields: object
) -> httpx.Response:
    headers = dict(tenant["as"])
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    body = {"key_id": tenant["id"], **fields}
    return await api.client.post("/v1/usage", json=body, headers=headers)


async def total_of(api: Api, tenant: dict[str, Any]) -> float:
    shown = await api.client.get(f"/v1/keys/{tenant['id']}", headers=tenant["as"])
    assert shown.status_code == 200, shown.text
    total: float = shown.json()["data"]["usage"]["total"]
    return total


async def test_reports_for_keys_out_of_reach_are_not_found(api: Api) -> None:
    """Real keys of another project and of another organization, by id and by plaintext,
    are refused exactly as an id nobody issued, and nothing is recorded against them."""
    tenants = await two_projects(api)
    a, b = tenants["a"], tenants["b"]
    other_org = await second_org(api)
    made = await api.client.post("/v1/keys", json={"name": "org2 key"}, headers=other_org.headers)
    assert made.status_code == 201, made.text
    c = {"key": made.json()["key"], "id": made.json()["data"]["id"], "as": other_org.headers}
    missing = await report_as(api, a, key_id="key_" + "0" * 26, request_id="x")
    assert missing.status_code == 404
    refused = []
    for target in (b, c):
        # The other tenant's real key, by id and by plaintext, with and without an
        # Idempotency-Key: the same answer as a missing one.
        refused += [
            await report_as(api, a, key_id=target["id"], request_id="x", cost=1),
            await report_as(api, a, "idem-x", key_id=target["id"], request_id="x2", cost=1),
            await api.client.post(
                "/v1/usage",
                json={"key": target["key"], "request_id": "y", "cost": 1},
                headers=a["as"],
            ),
        ]
    for response in refused:
        assert response.status_code == 404, response.text
        assert response.json()["code"] == missing.json()["code"] == "KEY_NOT_FOUND"
        assert response.json()["detail"] == missing.json()["detail"]
    assert await total_of(api, b) == 0
    assert await total_of(api, c) == 0
    # Their owners can still report those very ids: nothing was reserved or recorded before.
    for target in (b, c):
        own = await report_as(api, target, "idem-x", request_id="x", cost=1)
        assert (own.status_code, own.json()["duplicate"]) == (201, False), own.text
        assert await total_of(api, target) == 1


async def test_two_projects_can_use_the_same_request_id(api: Api) -> None:
    tenants = await two_projects(api)
    a, b = tenants["a"], tenants["b"]
    # B reports first with the gateway's request id; A's real report of its own request with
    # the same id is recorded, not refused.
    first = await report_as(api, b, request_id="req_gw_0001", cost=5)
    assert first.status_code == 201, first.text
    second = await report_as(api, a, request_id="req_gw_0001", cost=2)
    assert second.status_code == 201, second.text
    assert second.json()["duplicate"] is False
    assert second.json()["id"] != first.json()["id"]
    assert (await total_of(api, a), await total_of(api, b)) == (2.0, 5.0)
    # Within one key, exactly once still holds, by request id and by Idempotency-Key.
    again = await report_as(api, a, request_id="req_gw_0001", cost=2)
    assert (again.status_code, again.json()["duplicate"]) == (200, True)
    assert again.json()["id"] == second.json()["id"]
    conflict = await report_as(api, a, request_id="req_gw_0001", cost=3)
    assert (conflict.status_code, conflict.json()["code"]) == (409, "IDEMPOTENCY_KEY_REUSED")
    for tenant in (a, b):
        sent = await report_as(api, tenant, "idem-shared", request_id="r-own", cost=1)
        assert sent.status_code == 201, sent.text
    assert (await total_of(api, a), await total_of(api, b)) == (3.0, 6.0)


async def test_another_projects_ids_reveal_nothing(api: Api) -> None:
    tenants = await two_projects(api)
    a, b = tenants["a"], tenants["b"]
    mine = await report_as(api, a, "idem-a", request_id="req_a", cost=7)
    assert mine.status_code == 201
    # B replays A's ids, with another amount (a 409 would tell B that A used the id) and with
    # A's very amount (a duplicate would hand B A's report id): each is a new report of B's,
    # answered exactly as for ids nobody used.
    replays = [
        await report_as(api, b, "idem-a", request_id="req_b", cost=8),
        await report_as(api, b, None, request_id="req_a", cost=7),
    ]
    for reply in replays:
        assert reply.status_code == 201, reply.text
        assert reply.json()["duplicate"] is False
        assert reply.json()["key_id"] == b["id"]
        assert reply.json()["id"] != mine.json()["id"]
    assert (await total_of(api, a), await total_of(api, b)) == (7.0, 15.0)


async def test_a_request_id_of_another_project_never_settles_a_reservation(api: Api) -> None:
    tenants = await two_projects(api, policy={"concurrency": {"max_parallel": 1}})
    a, b = tenants["a"], tenants["b"]

    async def verify(tenant: dict[str, Any], request_id: str) -> str:
        response = await api.client.post(
            "/v1/verify",
            json={"key": tenant["key"], "acquire_concurrency": True, "request_id": request_id},
            headers=tenant["as"],
        )
        assert response.status_code == 200, response.text
        code: str = response.json()["code"]
        return code

    # Both hold their one slot under the same gateway request id.
    assert await verify(a, "req_gw_0001") == "VALID"
    assert await verify(b, "req_gw_0001") == "VALID"
    # B's report settles B's reservation only: A's slot stays held.
    assert (await report_as(api, b, request_id="req_gw_0001", cost=1)).status_code == 201
    assert await verify(a, "req_gw_0002") == "CONCURRENCY_EXCEEDED"
    assert await verify(b, "req_gw_0002") == "VALID"
    # A's own report (refused with 409 before, so its slot was never given back) settles it.
    assert (await report_as(api, a, request_id="req_gw_0001", cost=1)).status_code == 201
    assert await verify(a, "req_gw_0003") == "VALID"


async def test_usage_buckets_reset_exactly_at_utc_boundaries(api: Api) -> None:
    _, data = await api.create_key(policy={"budget": {"credit_limit": 10, "reset": "weekly"}})
    key_id = data["id"]
    # 2026-03-01 is a Sunday; the clock starts at noon.
    assert (await api.report(key_id=key_id, request_id="sun", cost=1)).status_code == 201
    api.clock.advance(
        (timedelta(hours=12) - timedelta(microseconds=1)).total_seconds()
    )  # Sunday 23:59:59.999999
    assert (await api.report(key_id=key_id, request_id="late", cost=2)).status_code == 201
    api.clock.advance(
        timedelta(microseconds=1).total_seconds()
    )  # Monday 00:00: a new day and a new week
    assert (await api.report(key_id=key_id, request_id="mon", cost=4)).status_code == 201
    shown = (await api.client.get(f"/v1/keys/{key_id}")).json()["data"]
    assert shown["usage"] == {"total": 7.0, "daily": 4.0, "weekly": 4.0, "monthly": 7.0}
    assert shown["limit_remaining"] == 6.0
    assert shown["limit_reset"] == "weekly"


async def test_crossing_an_alert_threshold_records_one_event(api: Api) -> None:
    _, data = await api.create_key(
        policy={
            "budget": {"credit_limit": 10, "reset": "monthly", "alert_thresholds": [0.5, 0.8, 1.0]}
        }
    )
    key_id = data["id"]
    for number, cost in enumerate([4, 0.5, 4, 0.5, 3]):
        response = await api.report(key_id=key_id, request_id=f"r{number}", cost=cost)
        assert response.status_code == 201
    events = (await api.client.get("/v1/events", params={"key_id": key_id})).json()["data"]
    crossed = [(e["type"], e["payload"]["threshold"]) for e in events]
    assert crossed == [
        ("budget.threshold_crossed", 0.5),
        ("budget.threshold_crossed", 0.8),
        ("budget.threshold_crossed", 1.0),
        # The budget is used up as well (webhooks tell it as its own event).
        ("budget.exhausted", 1.0),
    ]
    assert events[0]["payload"] == {
        "key_id": key_id,
        "threshold": 0.5,
        "reset": "monthly",
        "period_start": "2026-03-01T00:00:00Z",
        "credit_limit": 10.0,
        "spent": 8.5,  # 4 + 0.5 + 4: 0.5 and 0.8 crossed by one report
    }
    assert events[2]["payload"]["spent"] == 12.0
    # Events of keys in another project stay out of a project-bound management key's sight.
    response = await api.client.post("/v1/projects", json={"name": "other"})
    project_key = await api.management_key("usage:read", project_id=response.json()["data"]["id"])
    seen = await api.client.get("/v1/events", headers=api.as_key(project_key))
    assert seen.status_code == 200 and seen.json()["data"] == []
    assert (await api.client.get("/v1/events", params={"typo": 1})).status_code == 422


async def test_restart_keeps_the_ledger(api: Api) -> None:
    key, data = await api.create_key(policy={"budget": {"credit_limit": 1}})
    assert (await api.report(key_id=data["id"], request_id="a", cost=0.7)).status_code == 201
    runtime = api.app.state.runtime  # type: ignore[attr-defined]
    # A new limiter knows nothing: the counter must come back from the ledger.
    from keyplane.limits.memory import MemoryLimiter
    from keyplane.services.ledger import LedgerSeeder

    fresh = MemoryLimiter(LedgerSeeder(runtime.store.usage))
    runtime.ledger._limiter = fresh
    runtime.services.verifier._limiter = fresh
    runtime.services.usage._limiter = fresh
    assert (await api.verify(key, cost=0.3))["code"] == "VALID"
    assert (await api.verify(key, cost=0.01))["code"] == "BUDGET_EXCEEDED"


async def test_hostile_reports_and_verify_contexts_are_refused_and_count_nothing(
    api: Api,
) -> None:
    key, data = await api.create_key(policy={"budget": {"credit_limit": 1}})
    key_id = data["id"]
    bad_reports = [
        {"key_id": key_id, "request_id": "a", "cost": -1},
        {"key_id": key_id, "request_id": "a", "cost": "1e400"},
        {"key_id": key_id, "request_id": "a", "cost": 0.0000001},
        {"key_id": key_id, "request_id": "a", "cost": True},
        {"key_id": key_id, "request_id": "a", "input_tokens": -5},
        {"key_id": key_id, "request_id": "a", "output_tokens": 10**13},
        {"key_id": key_id, "request_id": "a", "status": 42},
        {"key_id": key_id, "request_id": "a", "latency_ms": "fast"},
        {"key_id": key_id, "request_id": "x" * 300},
        {"key_id": key_id, "request_id": "has space"},
        {"key_id": "key_../../etc", "request_id": "a"},
        {"key_id": key_id, "request_id": "a", "extra": 1},
    ]
    for body in bad_reports:
        response = await api.report(**body)
        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    response = await api.report("bad\x01header", key_id=key_id, request_id="a")
    assert response.status_code == 422
    bad_verifies = [
        {"cost": -0.1},
        {"cost": "lots"},
        {"tokens": {"input": -1}},
        {"tokens": {"input": 1, "cached": 2}},
        {"acquire_concurrency": "yes"},
        {"ip": "1" * 100},
        {"request_id": ""},
        {"model": "m" * 500},
    ]
    for body in bad_verifies:
        response = await api.client.post("/v1/verify", json={"key": key, **body})
        assert response.status_code == 422, (body, response.text)
    shown = (await api.client.get(f"/v1/keys/{key_id}")).json()["data"]
    assert shown["usage"]["total"] == 0
    assert (await api.verify(key, cost=1))["code"] == "VALID"  # nothing was reserved either


async def test_a_key_s_totals_stop_at_what_the_ledger_holds(api: Api) -> None:
    """Ten reports of a trillion credits once overflowed PostgreSQL's BIGINT (503 on the tenth
    and every later one) and turned SQLite's sums into floats."""
    _, data = await api.create_key()
    trillion = 10**12
    for n in range(9):
        response = await api.report(f"big-{n}", key_id=data["id"], cost=trillion)
        assert response.status_code == 201, response.text
    for n in range(9, 12):
        response = await api.report(f"big-{n}", key_id=data["id"], cost=trillion)
        assert response.status_code == 409, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "USAGE_TOTAL_EXCEEDED"
    # Refused means not recorded: a retry is refused again, not answered as a duplicate.
    again = await api.report("big-9", key_id=data["id"], cost=trillion)
    assert again.status_code == 409, again.text
    # Whatever still fits is counted; one micro-credit more is not.
    assert (await api.report("tiny", key_id=data["id"], cost=0)).status_code == 201
    shown = (await api.client.get(f"/v1/keys/{data['id']}")).json()["data"]
    assert shown["usage"]["total"] == 9 * trillion
    async with api.app.state.runtime.store.engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT bucket, cost_micros FROM usage_rollups"
                    " WHERE key_id = :key_id AND model = ''"
                ),
                {"key_id": data["id"]},
            )
        ).all()
    assert {bucket for bucket, _ in rows} == {"total", "hour", "day", "week", "month"}
    for _, cost in rows:
        assert type(cost) is int and cost == 9 * 10**18  # never a float, never wrapped


async def test_token_totals_are_bounded_like_costs(api: Api) -> None:
    _, data = await api.create_key()
    store = api.app.state.runtime.store
    key_id = str(data["id"])
    async with store.engine.begin() as conn:
        # As if 8.9 million reports of the largest token count had been recorded.
        await conn.execute(
            insert(usage_rollups).values(
                key_id=key_id,
                bucket="total",
                bucket_start=EPOCH,
                model="",
                requests=0,
                cost_micros=0,
                input_tokens=money.LEDGER_MAX - 10**12 + 1,
                output_tokens=0,
            )
        )
    response = await api.report("tokens", key_id=key_id, input_tokens=10**12)
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "USAGE_TOTAL_EXCEEDED"
    assert (await api.report("fits", key_id=key_id, input_tokens=10**12 - 1)).status_code == 201
