"""``/v1/usage``: idempotent, durable reports; the ledger behind usage and budgets."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import insert, text

from keyplane.domain import money
from keyplane.domain.periods import EPOCH
from keyplane.store.tables import usage_rollups
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


async def test_reports_for_keys_out_of_reach_are_not_found(api: Api) -> None:
    response = await api.report(key_id="key_" + "0" * 26, request_id="x")
    assert response.status_code == 404
    response = await api.report(key="kp_live_" + "a" * 36, request_id="y")
    assert response.status_code == 404


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
    from keyplane.services.limits import MemoryLimiter

    fresh = MemoryLimiter(lambda *args: runtime.ledger.seed(*args))
    runtime.ledger._limiter = fresh
    runtime.verifier._limiter = fresh
    runtime.usage._limiter = fresh
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
    assert {bucket for bucket, _ in rows} == {"total", "day", "week", "month"}
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
