"""``GET /v1/audit``, ``GET /v1/keys/{id}/audit`` and ``POST /v1/audit/export``, on SQLite
and PostgreSQL: filters, pages, tenancy, the per-key shape, exports read back with their
standard readers, PII masking, and hostile input."""

from __future__ import annotations

import csv
import io
import json
import sys
from datetime import timedelta
from typing import Any

import pyarrow.parquet as pq
import pytest

from keyplane.services.runtime import Runtime
from tests.audit_rows import T0, entry, journal_of
from tests.conftest import Api

MK = "mk_" + "0" * 26
#: The seeded entries start an hour after the test clock's now (T0), where the entries of the
#: changes tests make through the API are: ``start=S0`` reads the seeded ones only.
S0 = T0 + timedelta(hours=1)


def _runtime(api: Api) -> Runtime:
    runtime: Runtime = api.app.state.runtime  # type: ignore[attr-defined]
    return runtime


async def _rows(api: Api, rows: list[dict[str, Any]]) -> None:
    """Entries appended through the audit writer, after those the API's changes made."""
    await _runtime(api).store.audit.record([journal_of(row) for row in rows])


async def _seeded(api: Api, key_id: str, project_id: str | None = None) -> str:
    """Six entries of the default org; returns the org id."""
    org = _runtime(api).default_project.org_id
    other_key = "key_" + "b" * 26
    await _rows(
        api,
        [
            entry(org, 0, action="key.created", target_id=key_id, project_id=project_id,
                  occurred_at=S0),
            entry(org, 0, action="key.revoked", target_id=other_key, actor_id="system",
                  occurred_at=S0 + timedelta(days=1)),
            entry(org, 0, action="management_key.created", target_type="management_key",
                  target_id="mk_" + "d" * 26, occurred_at=S0 + timedelta(days=2)),
            entry(org, 0, action="auth.failed", outcome="failure", target_id=None, count=9,
                  occurred_at=S0 + timedelta(days=3)),
            entry(org, 0, action="key.rotated", target_id=key_id, project_id=project_id,
                  occurred_at=S0 + timedelta(days=4)),
            entry(org, 0, action="plan.updated", target_type="plan", target_id="plan_" + "e" * 26,
                  details={"keys_affected": 3}, occurred_at=S0 + timedelta(days=5)),
        ],
    )  # fmt: skip
    return org


def _actions(body: dict[str, Any], field: str = "data") -> list[str]:
    return [item["action" if field == "data" else "event_type"] for item in body[field]]


async def _list(api: Api, params: Any = None, **kwargs: Any) -> dict[str, Any]:
    response = await api.client.get("/v1/audit", params=params, **kwargs)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _mine(api: Api, params: list[tuple[str, str]]) -> list[str]:
    """Actions of the seeded entries only (from S0)."""
    body = await _list(api, [*params, ("start", S0.isoformat()), ("limit", "200")])
    return _actions(body)


async def test_entries_page_newest_first_with_an_opaque_cursor(api: Api) -> None:
    await _seeded(api, "key_" + "a" * 26)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = [("limit", "4"), ("start", S0.isoformat())]
        if cursor is not None:
            params.append(("cursor", cursor))
        body = await _list(api, params)
        seen += _actions(body)
        pages += 1
        cursor = body["next_cursor"]
        assert body["has_more"] is (cursor is not None)
        if cursor is None:
            break
    assert pages == 2
    assert seen == [
        "plan.updated",
        "key.rotated",
        "auth.failed",
        "management_key.created",
        "key.revoked",
        "key.created",
    ]
    first = (await _list(api, {"limit": 1, "start": S0.isoformat()}))["data"][0]
    assert first["actor"] == {
        "type": "management_key",
        "id": MK,
        "name": "ops",
        "ip": "203.0.113.7",
        "user_agent": "curl/8.5",
    }
    assert first["target"] == {"type": "plan", "id": "plan_" + "e" * 26}
    assert first["details"] == {"keys_affected": 3}


async def test_every_filter(api: Api) -> None:
    key_id = "key_" + "a" * 26
    await _seeded(api, key_id)
    assert await _mine(api, [("key_id", key_id)]) == ["key.rotated", "key.created"]
    assert await _mine(api, [("key_id", key_id), ("key_id", "plan_" + "e" * 26)]) == [
        "plan.updated",
        "key.rotated",
        "key.created",
    ]
    assert await _mine(api, [("actor", "system")]) == ["key.revoked"]
    assert await _mine(api, [("action", "key.revoked"), ("action", "plan.updated")]) == [
        "plan.updated",
        "key.revoked",
    ]
    assert await _mine(api, [("event_types", "key.*")]) == [
        "key.rotated",
        "key.revoked",
        "key.created",
    ]
    assert await _mine(api, [("event_types", "management_key.*"), ("action", "auth.failed")]) == [
        "auth.failed",
        "management_key.created",
    ]
    assert await _mine(api, [("outcome", "failure")]) == ["auth.failed"]
    # end as a date includes that whole day; as a time, it is exclusive.
    day = (S0 + timedelta(days=1)).date().isoformat()
    assert await _mine(api, [("end", day)]) == ["key.revoked", "key.created"]
    end = (S0 + timedelta(days=1)).isoformat()
    assert await _mine(api, [("end", end)]) == ["key.created"]
    window = [("start", (S0 + timedelta(days=2)).isoformat().replace("+00:00", "Z"))]
    body = await _list(api, [*window, ("end", (S0 + timedelta(days=4)).isoformat())])
    assert _actions(body) == ["auth.failed", "management_key.created"]


async def test_the_scope_is_audit_read(api: Api) -> None:
    keys_only = await api.management_key("keys:read")
    response = await api.client.get("/v1/audit", headers=api.as_key(keys_only))
    assert response.status_code == 403
    assert response.json()["code"] == "MISSING_SCOPE"
    reader = await api.management_key("audit:read")
    response = await api.client.get("/v1/audit", headers=api.as_key(reader))
    assert response.status_code == 200, response.text
    export = await api.client.post(
        "/v1/audit/export", json={"format": "csv"}, headers=api.as_key(keys_only)
    )
    assert export.status_code == 403


async def test_a_project_bound_key_sees_its_project_only(api: Api) -> None:
    project = (await api.client.post("/v1/projects", json={"name": "p"})).json()["data"]
    key_id = "key_" + "a" * 26
    await _seeded(api, key_id, project["id"])
    bound = await api.management_key("audit:read", project_id=project["id"])
    body = await _list(api, {"start": S0.isoformat()}, headers=api.as_key(bound))
    assert _actions(body) == ["key.rotated", "key.created"]
    assert {item["project_id"] for item in body["data"]} == {project["id"]}
    entry_id = (await _list(api, {"actor": "system"}))["data"][0]["id"]
    hidden = await api.client.get(f"/v1/audit/entries/{entry_id}", headers=api.as_key(bound))
    assert hidden.status_code == 404
    shown = await api.client.get(f"/v1/audit/entries/{entry_id}")
    assert shown.status_code == 200
    assert shown.json()["data"]["action"] == "key.revoked"
    export = await api.client.post(
        "/v1/audit/export",
        json={"format": "json", "start": S0.isoformat()},
        headers=api.as_key(bound),
    )
    lines = [json.loads(line) for line in export.text.splitlines()]
    assert [line["action"] for line in lines] == ["key.created", "key.rotated"]


async def test_per_key_audit_in_seed_004_shape(api: Api) -> None:
    _, created = await api.create_key()
    key_id = str(created["id"])
    await _seeded(api, key_id)
    response = await api.client.get(
        f"/v1/keys/{key_id}/audit",
        params={"start_date": T0.date().isoformat(), "end_date": "2026-03-31"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["key_id"] == key_id
    # The seeded entries, then the key's real creation (at T0, by the root key).
    assert _actions(body, "events") == ["key.rotated", "key.created", "key.created"]
    assert body["events"][-1]["user_id"] == "root"
    event = body["events"][0]
    for name in ("timestamp", "event_type", "user_id", "ip_address", "details"):
        assert name in event
    assert event["user_id"] == MK
    assert event["ip_address"] == "203.0.113.7"
    narrowed = await api.client.get(
        f"/v1/keys/{key_id}/audit",
        params=[("event_types", "key.created"), ("start", S0.isoformat())],
    )
    assert _actions(narrowed.json(), "events") == ["key.created"]
    unknown = await api.client.get(f"/v1/keys/key_{'9' * 26}/audit")
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "KEY_NOT_FOUND"
    both = await api.client.get(
        f"/v1/keys/{key_id}/audit", params={"start": "2026-01-01", "start_date": "2026-01-01"}
    )
    assert both.status_code == 422


@pytest.mark.parametrize(
    "params",
    [
        {"cursor": "garbage"},
        {"cursor": "YTE6LTE"},  # "a1:-1"
        {"event_types": "key.%"},
        {"event_types": "x" * 65},
        {"action": "Key.Created"},
        {"key_id": "not-an-id"},
        {"actor": "'; drop table audit_log; --"},
        {"outcome": "maybe"},
        {"start": "yesterday"},
        {"end": "2026-13-01"},
        {"start": "2026-03-02", "end": "2026-03-01"},
        {"limit": "0"},
        {"limit": "201"},
        {"colour": "blue"},
        {"key_id": "key_\x00"},
    ],
)
async def test_garbage_filters_are_a_422_problem(api: Api, params: dict[str, str]) -> None:
    response = await api.client.get("/v1/audit", params=params)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_too_many_filter_values_are_refused(api: Api) -> None:
    params = [("event_types", "key.created")] * 21
    response = await api.client.get("/v1/audit", params=params)
    assert response.status_code == 422
    body = {"format": "csv", "key_id": ["key_" + "a" * 26] * 21}
    assert (await api.client.post("/v1/audit/export", json=body)).status_code == 422


def _exported(api: Api, fmt: str, content: bytes) -> list[dict[str, Any]]:
    if fmt == "csv":
        return list(csv.DictReader(io.StringIO(content.decode("utf-8"))))
    if fmt == "json":
        return [json.loads(line) for line in content.decode("utf-8").splitlines()]
    return list(pq.read_table(io.BytesIO(content)).to_pylist())


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
async def test_exports_read_back_with_their_standard_readers(api: Api, fmt: str) -> None:
    key_id = "key_" + "a" * 26
    await _seeded(api, key_id)
    response = await api.client.post(
        "/v1/audit/export",
        json={"format": fmt, "start": S0.isoformat(), "include_pii": True},
    )
    assert response.status_code == 200, response.text
    assert "attachment" in response.headers["content-disposition"]
    rows = _exported(api, fmt, response.content)
    assert [row["action"] for row in rows] == [
        "key.created",
        "key.revoked",
        "management_key.created",
        "auth.failed",
        "key.rotated",
        "plan.updated",
    ]  # oldest first
    last = rows[-1]
    assert json.loads(last["details"]) == {"keys_affected": 3} if fmt != "json" else True
    assert last["actor_ip"] == "203.0.113.7"
    assert last["actor_user_agent"] == "curl/8.5"
    assert int(rows[3]["count"]) == 9
    filtered = await api.client.post(
        "/v1/audit/export",
        json={"format": fmt, "start": S0.isoformat(), "key_id": [key_id], "outcome": ["success"]},
    )
    assert [r["action"] for r in _exported(api, fmt, filtered.content)] == [
        "key.created",
        "key.rotated",
    ]


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
async def test_without_include_pii_addresses_and_user_agents_are_masked(api: Api, fmt: str) -> None:
    await _seeded(api, "key_" + "a" * 26)
    response = await api.client.post("/v1/audit/export", json={"format": fmt})
    assert response.status_code == 200, response.text
    assert b"203.0.113.7" not in response.content
    assert b"curl/8.5" not in response.content
    rows = _exported(api, fmt, response.content)
    mine = [row for row in rows if row["request_id"] and row["request_id"].startswith("req-")]
    assert {row["actor_ip"] for row in mine} == {"203.0.113.0/24"}
    assert {row["actor_user_agent"] for row in mine} <= {None, ""}


async def test_period_presets_and_their_conflicts(api: Api) -> None:
    await _seeded(api, "key_" + "a" * 26)
    # The test clock is at T0 (2026-03-01 12:00): last_month is February, before every entry.
    recent = await api.client.post(
        "/v1/audit/export", json={"format": "json", "period": "last_month"}
    )
    assert recent.status_code == 200
    assert [json.loads(x)["action"] for x in recent.text.splitlines()] == []
    api.clock.advance(40 * 86400)  # now in April: last_month is March
    march = await api.client.post(
        "/v1/audit/export", json={"format": "json", "period": "last_month"}
    )
    seeded = [json.loads(x) for x in march.text.splitlines() if '"req-' in x]
    assert len(seeded) == 6
    both = await api.client.post(
        "/v1/audit/export", json={"format": "json", "period": "today", "start": "2026-01-01"}
    )
    assert both.status_code == 422
    unknown = await api.client.post(
        "/v1/audit/export", json={"format": "json", "period": "last_fortnight"}
    )
    assert unknown.status_code == 422


@pytest.mark.parametrize(
    "body",
    [
        {"format": "xlsx"},
        {},
        {"format": "csv", "include_pii": "yes please"},
        {"format": "csv", "colour": "blue"},
        {"format": "csv", "start": "x" * 41},
        {"format": "csv", "event_types": ["key.%"]},
        {"format": "csv", "start": "2026-03-02", "end": "2026-03-01"},
        {"format": "csv", "actor": [{"id": 1}]},
    ],
)
async def test_garbage_export_requests_are_a_422_problem(api: Api, body: Any) -> None:
    response = await api.client.post("/v1/audit/export", json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_parquet_without_pyarrow_says_how_to_install_it(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow raises ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    response = await api.client.post("/v1/audit/export", json={"format": "parquet"})
    assert response.status_code == 501
    assert response.json()["code"] == "PARQUET_UNAVAILABLE"
    assert "keyplane[parquet]" in response.json()["detail"]


async def test_per_key_export(api: Api) -> None:
    _, created = await api.create_key()
    key_id = str(created["id"])
    await _seeded(api, key_id)
    response = await api.client.post(
        f"/v1/keys/{key_id}/audit/export",
        json={"format": "csv", "start": S0.isoformat(), "include_pii": False},
    )
    assert response.status_code == 200, response.text
    rows = _exported(api, "csv", response.content)
    assert [row["action"] for row in rows] == ["key.created", "key.rotated"]
    missing = await api.client.post(f"/v1/keys/key_{'9' * 26}/audit/export", json={"format": "csv"})
    assert missing.status_code == 404
