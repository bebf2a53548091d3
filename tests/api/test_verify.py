"""``/v1/verify``: every verdict code, authorization, and the hot-path guarantees."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from keyplane.domain import keyformat
from keyplane.services.runtime import Runtime
from tests.conftest import Api


def runtime_of(api: Api) -> Runtime:
    runtime: Runtime = api.app.state.runtime  # type: ignore[attr-defined]
    return runtime


async def test_valid_key_verdict_carries_the_key_facts(api: Api) -> None:
    expires = api.clock.now() + timedelta(days=1)
    key, data = await api.create_key(
        name="acme",
        owner="cust_1",
        tags=["t"],
        metadata={"m": 1},
        scopes=["read:*"],
        expires_at=expires.isoformat(),
        environment="test",
    )
    verdict = await api.verify(key, scopes=["read:invoices"])
    request_id = verdict["request_id"]
    assert isinstance(request_id, str) and request_id.startswith("req_")
    assert verdict == {
        "valid": True,
        "code": "VALID",
        "key_id": data["id"],
        "owner": "cust_1",
        "name": "acme",
        "environment": "test",
        "tags": ["t"],
        "metadata": {"m": 1},
        "scopes": ["read:*"],
        "expires_at": expires.isoformat().replace("+00:00", "Z"),
        "plan": None,
        "request_id": request_id,
        "limits": [],
        "retry_after": None,
        "directives": {},
        "rotation_pending": False,
    }


async def test_insufficient_scope(api: Api) -> None:
    key, _ = await api.create_key(scopes=["read:*"])
    verdict = await api.verify(key, scopes=["read:invoices", "write:invoices"])
    assert verdict["code"] == "INSUFFICIENT_SCOPE"
    assert verdict["valid"] is False


@pytest.mark.parametrize(
    "presented",
    ["", "hello", "kp_live_short", "kp_live_" + "A" * 36, "kp_prod_" + "A" * 36, "x" * 4000],
)
async def test_malformed_keys(api: Api, presented: str) -> None:
    verdict = await api.verify(presented)
    assert verdict["code"] == "MALFORMED"
    assert verdict["key_id"] is None


async def test_malformed_and_bad_checksum_never_touch_storage(api: Api) -> None:
    key, _ = await api.create_key()
    runtime = runtime_of(api)

    async def explode(_hash: str) -> None:
        raise AssertionError("storage was queried")

    runtime.directory.hashes._loader = explode  # type: ignore[assignment]
    await runtime.directory.hashes.clear()
    typo = key[:-1] + ("a" if key[-1] != "a" else "b")
    assert (await api.verify(typo))["code"] == "MALFORMED"
    assert (await api.verify("garbage"))["code"] == "MALFORMED"


async def test_unknown_well_formed_key_is_not_found(api: Api) -> None:
    verdict = await api.verify(keyformat.generate(keyformat.KeyKind.LIVE).text)
    assert verdict["code"] == "NOT_FOUND"


async def test_management_key_is_not_found_on_verify(api: Api) -> None:
    management = await api.management_key("keys:read")
    assert (await api.verify(management))["code"] == "NOT_FOUND"


async def test_verify_requires_the_verify_scope(api: Api) -> None:
    key, _ = await api.create_key()
    reader = await api.management_key("keys:read")
    refused = await api.client.post("/v1/verify", json={"key": key}, headers=api.as_key(reader))
    assert refused.status_code == 403
    assert refused.json()["code"] == "MISSING_SCOPE"
    verifier = await api.management_key("verify")
    allowed = await api.client.post("/v1/verify", json={"key": key}, headers=api.as_key(verifier))
    assert allowed.json()["code"] == "VALID"
    anonymous = await api.client.post(
        "/v1/verify", json={"key": key}, headers={"Authorization": ""}
    )
    assert anonymous.status_code == 401


async def test_project_bound_verifier_cannot_see_other_projects_keys(api: Api) -> None:
    project = (await api.client.post("/v1/projects", json={"name": "p2"})).json()["data"]
    inside, _ = await api.create_key(project_id=project["id"])
    outside, _ = await api.create_key()
    verifier = await api.management_key("verify", project_id=project["id"])

    async def code(key: str) -> str:
        response = await api.client.post(
            "/v1/verify", json={"key": key}, headers=api.as_key(verifier)
        )
        result: str = response.json()["code"]
        return result

    assert await code(inside) == "VALID"
    assert await code(outside) == "NOT_FOUND"


async def test_lifecycle_codes_follow_writes_immediately(api: Api) -> None:
    key, data = await api.create_key()
    assert (await api.verify(key))["code"] == "VALID"
    await api.client.post(f"/v1/keys/{data['id']}/disable")
    assert (await api.verify(key))["code"] == "DISABLED"
    await api.client.post(f"/v1/keys/{data['id']}/enable")
    assert (await api.verify(key))["code"] == "VALID"
    await api.client.delete(f"/v1/keys/{data['id']}")
    assert (await api.verify(key))["code"] == "REVOKED"


async def test_expiry_is_enforced_at_the_instant(api: Api) -> None:
    expires = api.clock.now() + timedelta(seconds=30)
    key, _ = await api.create_key(expires_at=expires.isoformat())
    api.clock.advance(29.999)
    assert (await api.verify(key))["code"] == "VALID"
    api.clock.advance(0.001)
    assert (await api.verify(key))["code"] == "EXPIRED"


async def test_last_used_is_written_in_batches_not_per_verify(api: Api) -> None:
    key, data = await api.create_key()
    other, _ = await api.create_key()
    runtime = runtime_of(api)
    batches: list[int] = []
    touch = runtime.last_used._write

    async def counting(batch):  # type: ignore[no-untyped-def]
        batches.append(len(batch))
        await touch(batch)

    runtime.last_used._write = counting  # type: ignore[method-assign]
    for _ in range(20):
        await api.verify(key)
        await api.verify(other)
    assert batches == []  # forty verifies, no write yet
    assert runtime.last_used.pending == 2
    await runtime.last_used.flush()
    assert batches == [2]  # one write for both keys
    fetched = (await api.client.get(f"/v1/keys/{data['id']}")).json()["data"]
    assert fetched["last_used_at"] == api.clock.now().isoformat().replace("+00:00", "Z")


async def test_concurrent_verifies_of_a_cold_key_load_it_once(api: Api) -> None:
    key, _ = await api.create_key()
    runtime = runtime_of(api)
    await runtime.directory.hashes.clear()
    before = runtime.directory.hashes.misses
    calls = 0
    loader = runtime.directory.hashes._loader

    async def counting(secret_hash: str):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        return await loader(secret_hash)

    runtime.directory.hashes._loader = counting  # type: ignore[assignment]
    verdicts = await asyncio.gather(*(api.verify(key) for _ in range(30)))
    assert {v["code"] for v in verdicts} == {"VALID"}
    assert calls == 1
    assert runtime.directory.hashes.misses - before >= 1
