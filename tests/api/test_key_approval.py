"""``require_approval``: keys start pending and need a second management key to approve them."""

from __future__ import annotations

from tests.conftest import Api


async def _management_key_id(api: Api, key: str) -> str:
    response = await api.client.get("/v1/management-keys")
    assert response.status_code == 200, response.text
    start = key[: len("kp_mgmt_") + 4]
    (found,) = [item for item in response.json()["data"] if item["start"] == start]
    return str(found["id"])


async def test_a_plan_that_requires_approval_makes_pending_keys(api: Api) -> None:
    response = await api.client.post(
        "/v1/plans", json={"name": "prod", "policy": {"require_approval": True}}
    )
    assert response.status_code == 201, response.text
    approver = await api.management_key("keys:approve")
    writer = await api.management_key("keys:write", "keys:read")
    # The writer creates the key: it may not approve it, the approver may.
    created = await api.client.post(
        "/v1/keys", json={"name": "prod key", "plan": "prod"}, headers=api.as_key(writer)
    )
    assert created.status_code == 201, created.text
    key, data = created.json()["key"], created.json()["data"]
    key_id = data["id"]
    assert data["status"] == "pending"
    assert (await api.verify(key))["code"] == "PENDING_APPROVAL"
    listed = await api.client.get("/v1/keys", params={"status": "pending"})
    assert [item["id"] for item in listed.json()["data"]] == [key_id]

    # No way around the approval: enable and disable refuse a pending key.
    for verb in ("enable", "disable"):
        response = await api.client.post(f"/v1/keys/{key_id}/{verb}")
        assert response.status_code == 409, response.text
        assert response.json()["code"] == "KEY_PENDING_APPROVAL"
    # keys:write is not keys:approve.
    response = await api.client.post(f"/v1/keys/{key_id}/approve", headers=api.as_key(writer))
    assert response.status_code == 403, response.text
    assert (await api.verify(key))["code"] == "PENDING_APPROVAL"

    response = await api.client.post(f"/v1/keys/{key_id}/approve", headers=api.as_key(approver))
    assert response.status_code == 200, response.text
    assert response.json()["data"]["status"] == "active"
    assert (await api.verify(key))["code"] == "VALID"
    again = await api.client.post(f"/v1/keys/{key_id}/approve", headers=api.as_key(approver))
    assert again.status_code == 409 and again.json()["code"] == "KEY_NOT_PENDING"

    audit = await api.client.get("/v1/audit", params={"key_id": key_id, "action": "key.approved"})
    (entry,) = audit.json()["data"]
    assert entry["actor"]["id"] == await _management_key_id(api, approver)
    assert entry["details"]["created_by"] == await _management_key_id(api, writer)
    assert key not in audit.text
    created_entries = await api.client.get(
        "/v1/audit", params={"key_id": key_id, "action": "key.created"}
    )
    assert created_entries.json()["data"][0]["details"]["status"] == "pending"


async def test_the_creator_cannot_approve_and_a_rejected_key_is_revoked(api: Api) -> None:
    # Root holds every scope, keys:approve included, but created the key.
    key, data = await api.create_key(policy={"require_approval": True})
    key_id = data["id"]
    assert data["status"] == "pending"
    response = await api.client.post(f"/v1/keys/{key_id}/approve")
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "SELF_APPROVAL"
    response = await api.client.post(f"/v1/keys/{key_id}/reject", json={"reason": "not needed"})
    assert response.status_code == 200, response.text
    assert response.json()["data"]["status"] == "revoked"
    assert response.json()["data"]["revoked_reason"] == "not needed"
    assert (await api.verify(key))["code"] == "REVOKED"
    approver = await api.management_key("keys:approve")
    late = await api.client.post(f"/v1/keys/{key_id}/approve", headers=api.as_key(approver))
    assert late.status_code == 409 and late.json()["code"] == "KEY_NOT_PENDING"
    audit = await api.client.get("/v1/audit", params={"key_id": key_id, "action": "key.rejected"})
    assert [item["details"]["reason"] for item in audit.json()["data"]] == ["not needed"]
    # A key without the rule is active at once; the rule off on the key overrides the plan's.
    _, plain = await api.create_key()
    assert plain["status"] == "active"
