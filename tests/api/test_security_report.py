"""The security report over HTTP: each category on a seeded population (injected clock), the
thresholds as parameters, the type filter and limit, tenancy, the scope, and bad input."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from keyplane.api.app import create_app
from keyplane.domain.changes import SYSTEM
from keyplane.domain.clock import ManualClock
from keyplane.services.runtime import Runtime
from tests.api.test_organizations import second_org
from tests.conftest import ROOT_KEY, Api, Database

_LIMITED = {
    "budget": {"credit_limit": 10, "reset": "monthly"},
    "network": {"ip_allow": ["10.0.0.0/8"]},
}


@pytest.fixture
async def sqlite_api(sqlite_database: Database, clock: ManualClock) -> AsyncIterator[Api]:
    """For tests whose SQL the first one runs on both backends (the suite is slow)."""
    app = create_app(sqlite_database.settings(), clock=clock)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://keyplane.test",
            headers={"Authorization": f"Bearer {ROOT_KEY}"},
        ) as client,
    ):
        yield Api(client, app, clock, sqlite_database)


def _runtime(api: Api) -> Runtime:
    runtime: Runtime = api.app.state.runtime  # type: ignore[attr-defined]
    return runtime


async def _seed(api: Api) -> dict[str, str]:
    """Keys made 200 days ago and today; returns name -> id."""
    ids: dict[str, str] = {}
    _, old_open = await api.create_key(name="old open")  # live, no limits, unused
    ids["old open"] = old_open["id"]
    _, wild = await api.create_key(name="wild", scopes=["*"], policy=_LIMITED)
    ids["wild"] = wild["id"]
    _, revoked = await api.create_key(name="revoked")
    ids["revoked"] = revoked["id"]
    assert (await api.client.delete(f"/v1/keys/{revoked['id']}")).is_success
    reader = await api.client.post(
        "/v1/management-keys", json={"name": "idle reader", "scopes": ["reports:read"]}
    )
    assert reader.status_code == 201, reader.text
    api.clock.advance(timedelta(days=200).total_seconds())
    # Rotated today: its secret is new, so it is not stale (but still dormant).
    assert (await api.client.post(f"/v1/keys/{wild['id']}/rotate", json={})).is_success
    expires = (api.clock.now() + timedelta(days=5)).isoformat()
    _, soon = await api.create_key(name="soon", expires_at=expires, policy=_LIMITED)
    ids["soon"] = soon["id"]
    rate = [{"name": "rpm", "limit": 60, "period": "1m"}]
    _, fresh = await api.create_key(
        name="fresh test", environment="test", policy={"rate_limits": rate}
    )
    ids["fresh test"] = fresh["id"]
    everything = await api.client.post(
        "/v1/management-keys", json={"name": "all powerful", "scopes": ["*"]}
    )
    assert everything.status_code == 201, everything.text
    return ids


def _found(body: dict[str, Any]) -> set[tuple[str, str]]:
    return {(issue["type"], issue["name"]) for issue in body["data"]["issues"]}


async def test_each_category_on_a_seeded_population(api: Api) -> None:
    await _seed(api)
    response = await api.client.get("/v1/reports/security")
    assert response.status_code == 200, response.text
    body = response.json()
    assert _found(body) == {
        ("dormant_key", "old open"),
        ("stale_key", "old open"),
        ("unlimited_key", "old open"),
        ("unrestricted_network_key", "old open"),
        ("dormant_key", "wild"),
        ("wildcard_scope_key", "wild"),
        ("expiring_key", "soon"),
        ("dormant_management_key", "idle reader"),
        ("wildcard_management_key", "all powerful"),
    }
    data = body["data"]
    assert data["keys_scanned"] == 4  # the revoked key is left out
    assert data["counts"]["dormant_key"] == 2 and data["counts"]["stale_key"] == 1
    assert data["truncated"] is False
    assert data["thresholds"]["stale_days"] == 180


async def test_thresholds_type_filter_and_limit_are_parameters(sqlite_api: Api) -> None:
    api = sqlite_api
    await _seed(api)
    params: Any = {"stale_days": 365, "dormant_days": 365, "expiring_days": 1}
    body = (await api.client.get("/v1/reports/security", params=params)).json()
    assert {kind for kind, _ in _found(body)} >= {"unlimited_key"}
    assert not {"stale_key", "dormant_key", "expiring_key"} & {k for k, _ in _found(body)}
    params = {"type": ["dormant_key", "unlimited_key"], "limit": 1}
    body = (await api.client.get("/v1/reports/security", params=params)).json()["data"]
    assert [issue["type"] for issue in body["issues"]] == ["dormant_key"]
    assert body["truncated"] is True
    assert body["counts"]["wildcard_management_key"] == 1  # counts cover every type


async def test_another_org_and_a_project_bound_key_see_only_their_own(api: Api) -> None:
    await _seed(api)
    two = await second_org(api)
    body = (await api.client.get("/v1/reports/security", headers=two.headers)).json()["data"]
    assert body["keys_scanned"] == 0 and body["counts"]["wildcard_management_key"] == 1
    project = await api.client.post("/v1/projects", json={"name": "other"})
    bound = await api.management_key("reports:read", project_id=project.json()["data"]["id"])
    body = (await api.client.get("/v1/reports/security", headers=api.as_key(bound))).json()
    assert body["data"]["keys_scanned"] == 0 and body["data"]["issues"] == []


async def test_needs_reports_read_and_refuses_bad_parameters(sqlite_api: Api) -> None:
    api = sqlite_api
    reader = await api.management_key("keys:read")
    denied = await api.client.get("/v1/reports/security", headers=api.as_key(reader))
    assert denied.status_code == 403
    assert denied.headers["content-type"].startswith("application/problem+json")
    for params in (
        {"stale_days": 0},
        {"dormant_days": 3651},
        {"limit": 1001},
        {"type": "nope"},
        {"dormant_days": "9" * 40},
        {"surprise": "1"},
    ):
        response = await api.client.get("/v1/reports/security", params=params)
        assert response.status_code == 422, (params, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")


async def test_scheduled_report_is_an_audited_system_event(sqlite_api: Api) -> None:
    api = sqlite_api
    await _seed(api)
    runtime = _runtime(api)
    reports = await runtime.services.security_reports.run_scheduled()
    assert len(reports) == 1 and reports[0].counts["unlimited_key"] == 1
    assert reports[0].issues == ()
    audit = await api.client.get("/v1/audit", params={"action": "security.report"})
    assert audit.status_code == 200, audit.text
    entries = audit.json()["data"]
    assert len(entries) == 1
    assert entries[0]["actor"]["type"] == SYSTEM.kind
    assert entries[0]["details"]["counts"]["unlimited_key"] == 1
