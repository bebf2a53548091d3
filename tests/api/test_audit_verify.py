"""``GET /v1/audit/verify`` and the security events the API counts (401s and 403s)."""

from __future__ import annotations

import httpx
from sqlalchemy import select, update

from keyplane.client import AsyncClient
from keyplane.services.runtime import Runtime
from keyplane.store.tables import audit_log
from tests.conftest import ROOT_KEY, Api


def runtime_of(api: Api) -> Runtime:
    runtime: Runtime = api.app.state.runtime  # type: ignore[attr-defined]
    return runtime


async def test_an_untouched_chain_verifies(api: Api) -> None:
    await api.create_key()
    response = await api.client.get("/v1/audit/verify")
    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is True and body["first_broken"] is None and body["checkpoint"] is None
    assert body["checked"] == 3  # organization, default project, the key


async def test_a_tampered_row_is_reported(api: Api) -> None:
    await api.create_key()
    runtime = runtime_of(api)
    async with runtime.store.engine.begin() as conn:
        await conn.execute(update(audit_log).where(audit_log.c.seq == 3).values(outcome="failure"))
    body = (await api.client.get("/v1/audit/verify")).json()
    assert body["ok"] is False
    assert body["first_broken"]["seq"] == 3 and body["first_broken"]["reason"] == "altered"


async def test_verify_needs_audit_read_and_a_denial_is_counted(api: Api) -> None:
    reader = await api.management_key("keys:read")
    response = await api.client.get("/v1/audit/verify", headers=api.as_key(reader))
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("application/problem+json")
    auditor = await api.management_key("audit:read")
    assert (await api.client.get("/v1/audit/verify", headers=api.as_key(auditor))).json()["ok"]
    runtime = runtime_of(api)
    await runtime.security.flush()
    async with runtime.store.engine.connect() as conn:
        denied = (
            await conn.execute(select(audit_log).where(audit_log.c.action == "permission.denied"))
        ).all()
    assert len(denied) == 1 and denied[0].count == 1
    assert denied[0].details["codes"] == {"MISSING_SCOPE": 1}


async def test_unknown_parameters_are_refused(api: Api) -> None:
    response = await api.client.get("/v1/audit/verify?org=other")
    assert response.status_code == 422


async def test_failed_authentications_are_counted_without_the_token(api: Api) -> None:
    token = "kp_mgmt_" + "Z" * 40
    for _ in range(20):
        response = await api.client.get("/v1/keys", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401
    runtime = runtime_of(api)
    await runtime.security.flush()
    async with runtime.store.engine.connect() as conn:
        failed = (
            await conn.execute(select(audit_log).where(audit_log.c.action == "auth.failed"))
        ).all()
    assert sum(row.count for row in failed) == 20
    assert token not in repr(failed)


async def test_the_async_sdk_verifies(api: Api) -> None:
    async with AsyncClient(
        "http://keyplane.test",
        ROOT_KEY,
        transport=httpx.ASGITransport(app=api.app),  # type: ignore[arg-type]
        max_retries=0,
    ) as sdk:
        result = await sdk.audit.verify()
    assert result.ok and result.checked == 2 and result.first_broken is None


async def test_an_imported_row_is_audited_as_key_imported(api: Api) -> None:
    response = await api.client.post("/v1/keys?source=import", json={"name": "row 1"})
    assert response.status_code == 201
    key_id = response.json()["data"]["id"]
    assert (await api.client.post("/v1/keys?source=other", json={"name": "x"})).status_code == 422
    runtime = runtime_of(api)
    async with runtime.store.engine.connect() as conn:
        actions = (
            await conn.execute(select(audit_log.c.action).where(audit_log.c.target_id == key_id))
        ).all()
    assert [row.action for row in actions] == ["key.imported"]
