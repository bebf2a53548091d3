"""Write does not imply read (issue item 11): a management key holding ``X:write`` but not
``X:read`` is answered with which object its write touched and its status, never the record.

Every write route of the ``/v1`` API and the two compatibility surfaces' creates is checked; a
caller holding the read scope too still gets the whole record (the rest of the suite).
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.conftest import Api

#: Values only a reader may see; none may appear in an answer to a write-only caller.
OWNER = "owner-visible-only-to-readers"
META = "meta-visible-only-to-readers"
SECRET = "sk-upstream-" + "q" * 24


def assert_ack(response: httpx.Response, *, status: int = 200, has_status: bool = True) -> Any:
    assert response.status_code == status, response.text
    body = response.json()
    data = body["data"]
    assert set(data) == {"id", "status"}, body
    assert (data["status"] is not None) == has_status, body
    text = json.dumps(body)
    for hidden in (OWNER, META, "owner", "metadata", "policy", "scopes", "alias", "name"):
        assert hidden not in text, (hidden, body)
    return body


async def test_key_writes_answer_a_write_only_caller_with_id_and_status(api: Api) -> None:
    writer = api.as_key(await api.management_key("keys:write"))
    _, key = await api.create_key(
        owner=OWNER, metadata={"m": META}, policy={"budget": {"credit_limit": 5}}
    )
    ref = key["id"]
    # The reported leak: PATCH {} and /enable gave the whole record back.
    assert_ack(await api.client.patch(f"/v1/keys/{ref}", json={}, headers=writer))
    enabled = assert_ack(await api.client.post(f"/v1/keys/{ref}/enable", headers=writer))
    assert enabled["data"] == {"id": ref, "status": "active"}
    disabled = assert_ack(await api.client.post(f"/v1/keys/{ref}/disable", json={}, headers=writer))
    assert disabled["data"]["status"] == "disabled"
    # By hash too.
    assert_ack(await api.client.patch(f"/v1/keys/{key['hash']}", json={}, headers=writer))
    # Rotate: its purpose is the new secret, so that is answered, and nothing else.
    rotated = await api.client.post(f"/v1/keys/{ref}/rotate", json={}, headers=writer)
    body = assert_ack(rotated)
    assert body["key"].startswith("kp_live_")
    assert set(body) == {"key", "data", "old_key_expires_at"}  # when the old secret stops
    assert (await api.verify(body["key"]))["code"] in ("VALID", "DISABLED")
    revoked = assert_ack(await api.client.delete(f"/v1/keys/{ref}", headers=writer))
    assert revoked["data"]["status"] == "revoked"
    # And the reader still reads it all.
    full = (await api.client.get(f"/v1/keys/{ref}")).json()["data"]
    assert full["owner"] == OWNER and full["metadata"] == {"m": META}


async def test_a_write_only_create_answers_the_secret_id_and_status(api: Api) -> None:
    writer = api.as_key(await api.management_key("keys:write"))
    assert (
        await api.client.post(
            "/v1/plans", json={"name": "gold", "policy": {"budget": {"credit_limit": 7}}}
        )
    ).status_code == 201
    body = {"name": "n", "owner": OWNER, "metadata": {"m": META}, "plan": "gold"}
    created = assert_ack(await api.client.post("/v1/keys", json=body, headers=writer), status=201)
    assert set(created) == {"key", "data"} and created["data"]["status"] == "active"
    # A replay answers the same way (and the plan's policy stays unread).
    headers = {**writer, "Idempotency-Key": "wo-1"}
    first = assert_ack(await api.client.post("/v1/keys", json=body, headers=headers), status=201)
    again = assert_ack(await api.client.post("/v1/keys", json=body, headers=headers))
    assert again["key"] == first["key"]
    assert "credit_limit" not in json.dumps(again)


async def test_management_key_writes_answer_a_write_only_caller_without_the_record(
    api: Api,
) -> None:
    writer = api.as_key(await api.management_key("management_keys:write", "keys:read"))
    made = await api.client.post(
        "/v1/management-keys", json={"name": "child", "scopes": ["keys:read"]}, headers=writer
    )
    body = assert_ack(made, status=201)
    assert body["key"].startswith("kp_mgmt_") and body["data"]["status"] == "active"
    target = (
        await api.client.post(
            "/v1/management-keys", json={"name": "other", "scopes": ["keys:read"]}
        )
    ).json()["data"]["id"]
    revoked = assert_ack(await api.client.delete(f"/v1/management-keys/{target}", headers=writer))
    assert revoked["data"] == {"id": target, "status": "revoked"}


async def test_plan_and_project_writes_answer_a_write_only_caller_with_the_id_only(
    api: Api,
) -> None:
    writer = api.as_key(await api.management_key("plans:write", "projects:write"))
    plan = {"name": "p1", "description": META, "policy": {"budget": {"credit_limit": 5}}}
    made = assert_ack(
        await api.client.post("/v1/plans", json=plan, headers=writer), status=201, has_status=False
    )
    plan_id = made["data"]["id"]
    for response in (
        await api.client.patch(f"/v1/plans/{plan_id}", json={}, headers=writer),
        await api.client.patch("/v1/plans/p1", json={"description": "x"}, headers=writer),
        await api.client.delete(f"/v1/plans/{plan_id}", headers=writer),
    ):
        body = assert_ack(response, has_status=False)
        assert body["data"]["id"] == plan_id and META not in response.text
        assert "credit_limit" not in response.text
    project = await api.client.post(
        "/v1/projects", json={"name": "proj", "key_prefix": "pj"}, headers=writer
    )
    assert_ack(project, status=201, has_status=False)


async def test_vault_writes_answer_a_write_only_caller_without_the_record(api: Api) -> None:
    writer = api.as_key(await api.management_key("vault:write"))
    credential = {"provider": "openai", "alias": "al", "secret": SECRET, "metadata": {"m": META}}
    made = assert_ack(
        await api.client.post("/v1/vault/credentials", json=credential, headers=writer),
        status=201,
    )
    assert made["data"]["status"] == "active"
    ref = made["data"]["id"]
    assert_ack(
        await api.client.patch(f"/v1/vault/credentials/{ref}", json={"weight": 2}, headers=writer)
    )
    bulk = await api.client.post(
        "/v1/vault/credentials/bulk",
        # Aliases no random id can contain ("b1" could: ids are base32).
        json={
            "credentials": [
                {**credential, "alias": "bulk-one"},
                {**credential, "alias": "bulk-two"},
            ]
        },
        headers=writer,
    )
    assert bulk.status_code == 201, bulk.text
    assert [set(item) for item in bulk.json()["data"]] == [{"id", "status"}] * 2
    assert META not in bulk.text and "bulk-one" not in bulk.text
    deleted = assert_ack(await api.client.delete(f"/v1/vault/credentials/{ref}", headers=writer))
    assert deleted["data"]["status"] == "revoked"


async def test_compat_creates_answer_a_write_only_caller_with_the_secret_and_hash(
    api: Api,
) -> None:
    writer = api.as_key(await api.management_key("keys:write"))
    router = await api.client.post(
        "/api/v1/keys", json={"name": "or", "label": META}, headers=writer
    )
    assert router.status_code == 201, router.text
    body = router.json()
    assert set(body) == {"data", "key", "hash"} and body["data"] == {"hash": body["hash"]}
    fast = await api.client.post(
        "/prod/createServiceKey",
        json={"api_key_name": "svc", "metadata": {"m": META}},
        headers=writer,
    )
    assert fast.status_code == 201, fast.text
    assert set(fast.json()) == {"api_key", "api_key_id_hash"} and META not in fast.text
