"""Usage analytics over HTTP: key analytics at bucket and period edges (injected clock),
grouped top-N, ``include=usage``, the export formats, and bad input as problem+json."""

from __future__ import annotations

import csv
import io
import itertools
import json
from datetime import timedelta
from typing import Any

import pyarrow.parquet as pq
import pytest

from keyplane.domain.analytics import Grain, Window
from keyplane.domain.tenancy import Principal
from keyplane.services.runtime import Runtime
from keyplane.services.verify import VerifyRequest
from tests.api.test_organizations import second_org
from tests.conftest import Api

_REQUEST_IDS = itertools.count()


def _runtime(api: Api) -> Runtime:
    runtime: Runtime = api.app.state.runtime  # type: ignore[attr-defined]
    return runtime


async def _report(api: Api, key_id: str, **fields: Any) -> None:
    response = await api.report(key_id=key_id, request_id=f"r{next(_REQUEST_IDS)}", **fields)
    assert response.status_code == 201, response.text


async def test_key_analytics_in_seed_004s_shape_with_series_and_percentiles(api: Api) -> None:
    _, key = await api.create_key()
    start = api.clock.now()  # 12:00:00 exactly: the first instant of an hour bucket
    await _report(
        api, key["id"], cost=0.25, model="gpt-4", feature="chat", latency_ms=40, status=200
    )
    api.clock.advance(3599.999)  # 12:59:59.999: still the same hour
    await _report(api, key["id"], cost=0.5, model="gpt-4", latency_ms=400, status=500)
    api.clock.advance(0.001)  # 13:00: the next bucket, and now the window's last
    await _report(api, key["id"], cost=1.000001, model="claude", feature="chat", status=200)
    response = await api.client.get(
        f"/v1/keys/{key['id']}/analytics", params={"period": "24h", "granularity": "hour"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["total_requests"] == 3
    assert body["total_cost"] == 1.750001
    assert body["error_rate"] == pytest.approx(100 / 3, abs=0.001)
    assert body["avg_latency_ms"] == 220
    assert [m["name"] for m in body["models"]] == ["gpt-4", "claude"]
    assert body["models"][0]["requests"] == 2 and body["models"][0]["cost"] == 0.75
    assert body["features"] == [
        {**body["features"][0], "name": "chat", "usage_count": 2, "requests": 2}
    ]
    series = body["series"]
    assert len(series) == 24
    assert series[-1]["start"] == "2026-03-01T13:00:00Z"
    assert series[-2]["start"] == (start).isoformat().replace("+00:00", "Z")
    assert (series[-2]["requests"], series[-1]["requests"]) == (2, 1)
    assert series[-2]["p50"] is not None and series[-1]["p50"] is None
    assert body["start"] == "2026-02-28T14:00:00Z" and body["end"] == "2026-03-01T14:00:00Z"
    # A 1-hour period holds the current bucket only: the 12:xx reports are out of it.
    response = await api.client.get(
        f"/v1/keys/{key['id']}/analytics", params={"period": "1h", "granularity": "hour"}
    )
    assert response.json()["total_requests"] == 1
    # 23 hours later, 12:00 is the first bucket of a 24h window; an hour after that it is out.
    api.clock.advance(23 * 3600)
    response = await api.client.get(f"/v1/keys/{key['id']}/analytics?period=24h")
    assert response.json()["total_requests"] == 1
    api.clock.advance(-3600)
    response = await api.client.get(f"/v1/keys/{key['id']}/analytics?period=24h")
    assert response.json()["total_requests"] == 3


async def test_verify_outcomes_are_counted_once_flushed(api: Api) -> None:
    secret, key = await api.create_key(
        policy={"rate_limits": [{"name": "hourly", "limit": 1, "period": "1h"}]}
    )
    for _ in range(3):
        await api.verify(secret)
    path = f"/v1/keys/{key['id']}/analytics?period=1h"
    assert (await api.client.get(path)).json()["verifications"] == {}  # not flushed yet
    recorder = _runtime(api).verdict_recorder
    assert recorder is not None
    await recorder.flush()
    body = (await api.client.get(path)).json()
    assert body["verifications"] == {"VALID": 1, "RATE_LIMITED": 2}
    assert body["series"][-1]["verifications"] == {"VALID": 1, "RATE_LIMITED": 2}


async def test_a_verify_outcome_is_counted_in_the_minute_it_was_decided(api: Api) -> None:
    secret, key = await api.create_key()
    runtime = _runtime(api)
    principal = Principal("mk_test", key["org_id"], None, ("*",))
    await runtime.services.verifier.verify(principal, VerifyRequest(secret))  # cached now
    recorder = runtime.verdict_recorder
    assert recorder is not None
    await recorder.flush()
    # A clock one second further on at every read, the first just before a minute ends:
    # the decision and its count must take the same instant, not two reads of the clock.
    minute = api.clock.now().replace(second=0, microsecond=0)
    ticks = (minute + timedelta(seconds=59.5 + n) for n in itertools.count())
    api.clock.now = lambda: next(ticks)  # type: ignore[method-assign]
    try:
        verdict = await runtime.services.verifier.verify(principal, VerifyRequest(secret))
    finally:
        del api.clock.now  # the ManualClock's own method again
    assert verdict.valid
    await recorder.flush()
    found = await runtime.store.analytics.key_analytics(key["id"], Window(Grain.MINUTE, minute, 2))
    assert found.verdicts == {minute: {"VALID": 2}}


async def test_grouped_analytics_gives_the_top_keys_and_codes(api: Api) -> None:
    secrets_and_keys = [await api.create_key(owner=f"owner-{i}") for i in range(3)]
    for index, (_, key) in enumerate(secrets_and_keys):
        for _ in range(index + 1):
            await _report(api, key["id"], cost=1, model="gpt-4" if index else "claude")
    await api.verify("kp_live_not_a_real_key")
    refused_secret, refused_key = secrets_and_keys[0]
    revoked = await api.client.delete(f"/v1/keys/{refused_key['id']}")
    assert revoked.status_code == 200, revoked.text
    await api.verify(refused_secret)
    await _runtime(api).verdict_recorder.flush()  # type: ignore[union-attr]
    response = await api.client.get(
        "/v1/analytics", params={"group_by": "key", "order_by": "cost", "limit": 2}
    )
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [row["key"] for row in data] == [
        secrets_and_keys[2][1]["id"],
        secrets_and_keys[1][1]["id"],
    ]
    assert data[0]["cost"] == 3 and data[0]["requests"] == 3
    by_refusals = await api.client.get(
        "/v1/analytics", params={"group_by": "key", "order_by": "refused", "limit": 1}
    )
    [top] = by_refusals.json()["data"]
    assert (top["key"], top["refused"], top["by_code"]) == (refused_key["id"], 1, {"REVOKED": 1})
    codes = await api.client.get(
        "/v1/analytics", params={"group_by": "code", "order_by": "verifications"}
    )
    assert codes.json()["data"] == [
        {"code": "REVOKED", "verifications": 1, "refused": 1, "by_code": {"REVOKED": 1}}
    ]
    models = await api.client.get("/v1/analytics", params={"group_by": "model"})
    assert [(row["model"], row["requests"]) for row in models.json()["data"]] == [
        ("gpt-4", 5),
        ("claude", 1),
    ]
    owners = await api.client.get(
        "/v1/analytics", params=[("group_by", "owner"), ("owner", "owner-1"), ("owner", "owner-2")]
    )
    assert {row["owner"] for row in owners.json()["data"]} == {"owner-1", "owner-2"}


async def test_keys_list_includes_usage_in_the_period(api: Api) -> None:
    _, used = await api.create_key()
    _, idle = await api.create_key()
    await _report(api, used["id"], cost=2.5, status=503)
    response = await api.client.get("/v1/keys", params={"include": "usage", "period": "7d"})
    assert response.status_code == 200, response.text
    usage = {row["id"]: row["period_usage"] for row in response.json()["data"]}
    assert usage[used["id"]]["requests"] == 1 and usage[used["id"]]["cost"] == 2.5
    assert usage[used["id"]]["errors"] == 1
    assert usage[idle["id"]]["requests"] == 0
    plain = await api.client.get("/v1/keys")
    assert all(row["period_usage"] is None for row in plain.json()["data"])
    assert "last_used_at" in plain.json()["data"][0]


@pytest.mark.parametrize("fmt", ["csv", "ndjson", "parquet"])
async def test_usage_export_streams_every_format(api: Api, fmt: str) -> None:
    _, key = await api.create_key()
    await _report(api, key["id"], cost=0.000001, latency_ms=30)
    api.clock.advance(86400)
    await _report(api, key["id"], cost=7, latency_ms=30)
    response = await api.client.get(
        "/v1/usage/export", params={"format": fmt, "period": "7d", "granularity": "day"}
    )
    assert response.status_code == 200, response.text
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(response.text)))
    elif fmt == "ndjson":
        rows = [json.loads(line) for line in response.text.splitlines()]
    else:
        rows = pq.read_table(io.BytesIO(response.content)).to_pylist()
    assert [(row["key_id"], row["cost"]) for row in rows] == [
        (key["id"], "0.000001"),
        (key["id"], "7.0"),
    ]
    assert [row["bucket_start"] for row in rows] == ["2026-03-01T00:00:00Z", "2026-03-02T00:00:00Z"]


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/keys/{key}/analytics", {"period": "7x"}),
        ("/v1/keys/{key}/analytics", {"period": "0d"}),
        ("/v1/keys/{key}/analytics", {"period": "9" * 100}),
        ("/v1/keys/{key}/analytics", {"period": "7d", "granularity": "week"}),
        ("/v1/keys/{key}/analytics", {"period": "30d", "granularity": "minute"}),
        ("/v1/keys/{key}/analytics", {"period": "90m", "granularity": "hour"}),
        ("/v1/keys/{key}/analytics", {"period": "99999d", "granularity": "day"}),
        ("/v1/keys/{key}/analytics", {"period": "100d", "granularity": "hour"}),
        ("/v1/keys/{key}/analytics", {"surprise": "1"}),
        ("/v1/analytics", {}),
        ("/v1/analytics", {"group_by": "everything"}),
        ("/v1/analytics", {"group_by": "key", "limit": "1000000"}),
        ("/v1/analytics", {"group_by": "key", "limit": "0"}),
        ("/v1/analytics", {"group_by": "key", "order_by": "vibes"}),
        ("/v1/analytics", {"group_by": "code", "order_by": "cost"}),
        ("/v1/analytics", {"group_by": "model", "order_by": "refused"}),
        ("/v1/analytics", {"group_by": "key", "model": "\x00"}),
        ("/v1/analytics", {"group_by": "key", "owner": "x" * 201}),
        ("/v1/analytics", [("group_by", "key"), *[("key_id", "k")] * 101]),
        ("/v1/keys", {"period": "7d"}),
        ("/v1/keys", {"include": "usage", "period": "soon"}),
        ("/v1/keys", {"include": "secrets"}),
        ("/v1/usage/export", {"format": "xlsx"}),
        ("/v1/usage/export", {"period": "7d", "granularity": "minute"}),
    ],
)
async def test_bad_analytics_input_is_a_problem(api: Api, path: str, params: Any) -> None:
    _, key = await api.create_key()
    response = await api.client.get(path.format(key=key["id"]), params=params)
    assert 400 <= response.status_code < 500, response.text
    assert response.status_code != 404
    assert response.headers["content-type"] == "application/problem+json"


async def test_analytics_needs_usage_read_and_stays_in_the_callers_org(api: Api) -> None:
    _, key = await api.create_key()
    reader = api.as_key(await api.management_key("keys:read"))
    response = await api.client.get(f"/v1/keys/{key['id']}/analytics", headers=reader)
    assert response.status_code == 403
    response = await api.client.get("/v1/analytics?group_by=key", headers=reader)
    assert response.status_code == 403
    await _report(api, key["id"], cost=1)
    two = await second_org(api)
    response = await api.client.get(f"/v1/keys/{key['id']}/analytics", headers=two.headers)
    assert response.status_code == 404
    grouped = await api.client.get("/v1/analytics?group_by=key", headers=two.headers)
    assert grouped.status_code == 200 and grouped.json()["data"] == []
    exported = await api.client.get("/v1/usage/export?format=ndjson", headers=two.headers)
    assert exported.status_code == 200 and exported.text == ""
    missing = await api.client.get(f"/v1/keys/key_{'0' * 26}/analytics")
    assert missing.status_code == 404
    not_an_id = await api.client.get("/v1/keys/nonsense/analytics")
    assert not_an_id.status_code == 404


async def test_minute_granularity_reads_the_last_minutes(api: Api) -> None:
    _, key = await api.create_key()
    await _report(api, key["id"], cost=1)
    api.clock.advance(59.999)
    await _report(api, key["id"], cost=1)
    api.clock.advance(0.001)
    await _report(api, key["id"], cost=1)
    body = (
        await api.client.get(f"/v1/keys/{key['id']}/analytics?period=5m&granularity=minute")
    ).json()
    assert [point["requests"] for point in body["series"]] == [0, 0, 0, 2, 1]
    assert body["end"] == (api.clock.now() + timedelta(minutes=1)).isoformat().replace(
        "+00:00", "Z"
    )
