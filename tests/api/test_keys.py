"""``/v1/keys``: the key lifecycle through the API, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest

from keyplane.domain import keyformat
from tests.conftest import Api


async def test_create_returns_the_plaintext_once_and_stores_only_its_hash(api: Api) -> None:
    key, data = await api.create_key(
        name="acme prod",
        owner="cust_123",
        label="prod",
        description="d",
        tags=["a"],
        metadata={"billing": {"tier": "enterprise"}},
        scopes=["read:*"],
    )
    parsed = keyformat.parse(key)
    assert parsed is not None and parsed.kind is keyformat.KeyKind.LIVE
    assert data["id"].startswith("key_")
    assert len(data["hash"]) == 64
    assert data["start"] == key[: len("kp_live_") + 4]
    assert data["end"] == key[-4:]
    assert data["status"] == "active"
    assert data["owner"] == "cust_123"
    fetched = (await api.client.get(f"/v1/keys/{data['id']}")).json()["data"]
    assert fetched == data
    assert key not in (await api.client.get(f"/v1/keys/{data['id']}")).text
    assert key not in (await api.client.get("/v1/keys")).text


async def test_test_environment_and_project_prefix_shape_the_key(api: Api) -> None:
    key, _ = await api.create_key(environment="test")
    assert key.startswith("kp_test_")
    response = await api.client.post("/v1/projects", json={"name": "fr", "key_prefix": "sk-fr"})
    project_id = response.json()["data"]["id"]
    key, data = await api.create_key(project_id=project_id)
    assert key.startswith("sk-fr_live_")
    assert data["project_id"] == project_id
    assert (await api.verify(key))["code"] == "VALID"


async def test_get_by_id_or_hash_and_unknown_is_404(api: Api) -> None:
    _, data = await api.create_key()
    by_hash = await api.client.get(f"/v1/keys/{data['hash']}")
    assert by_hash.json()["data"]["id"] == data["id"]
    missing = await api.client.get("/v1/keys/key_" + "0" * 26)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["code"] == "KEY_NOT_FOUND"


async def test_list_filters(api: Api) -> None:
    _, a = await api.create_key(
        name="alpha one",
        owner="c1",
        tags=["gold", "eu"],
        metadata={"billing": {"tier": "enterprise"}},
    )
    _, b = await api.create_key(
        name="beta",
        owner="c2",
        tags=["eu"],
        environment="test",
        metadata={"billing": {"tier": "free"}},
    )
    _, c = await api.create_key(name="Alpha two", owner="c1")
    await api.client.post(f"/v1/keys/{c['id']}/disable", json={"reason": "late"})

    async def listed(**params: str) -> list[str]:
        response = await api.client.get("/v1/keys", params=params)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["data"]]

    assert await listed() == [a["id"], b["id"], c["id"]]
    assert await listed(owner="c1") == [a["id"], c["id"]]
    assert await listed(tag="eu") == [a["id"], b["id"]]
    assert await listed(environment="test") == [b["id"]]
    assert await listed(status="disabled") == [c["id"]]
    assert await listed(status="active") == [a["id"], b["id"]]
    assert await listed(name="alpha") == [a["id"], c["id"]]
    assert await listed(**{"metadata.billing.tier": "enterprise"}) == [a["id"]]
    assert await listed(project=a["project_id"]) == [a["id"], b["id"], c["id"]]
    unknown = await api.client.get("/v1/keys", params={"colour": "red"})
    assert unknown.status_code == 422
    assert unknown.json()["code"] == "UNKNOWN_PARAMETER"


async def test_cursor_pagination_walks_every_key_once(api: Api) -> None:
    created = [(await api.create_key(name=f"k{i}"))[1]["id"] for i in range(7)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        page = (await api.client.get("/v1/keys", params=params)).json()
        seen += [item["id"] for item in page["data"]]
        pages += 1
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        cursor = page["next_cursor"]
    assert seen == created
    assert pages == 3


async def test_patch_changes_only_given_fields(api: Api) -> None:
    key, data = await api.create_key(name="n", owner="o", tags=["x"], scopes=["read:*"])
    response = await api.client.patch(
        f"/v1/keys/{data['id']}", json={"name": "renamed", "tags": ["y"], "label": None}
    )
    assert response.status_code == 200, response.text
    updated = response.json()["data"]
    assert updated["name"] == "renamed"
    assert updated["tags"] == ["y"]
    assert updated["owner"] == "o"
    assert updated["scopes"] == ["read:*"]
    assert updated["hash"] == data["hash"]
    verdict = await api.verify(key)
    assert verdict["name"] == "renamed"  # the cache was invalidated by the write


async def test_patch_scopes_and_expiry_take_effect_on_verify(api: Api) -> None:
    key, data = await api.create_key(scopes=["read:*"])
    assert (await api.verify(key, scopes=["write:x"]))["code"] == "INSUFFICIENT_SCOPE"
    await api.client.patch(f"/v1/keys/{data['id']}", json={"scopes": ["write:*"]})
    assert (await api.verify(key, scopes=["write:x"]))["code"] == "VALID"
    expires = (api.clock.now() + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    await api.client.patch(f"/v1/keys/{data['id']}", json={"expires_at": expires})
    api.clock.advance(3600)
    assert (await api.verify(key))["code"] == "EXPIRED"
    listed = (await api.client.get("/v1/keys", params={"status": "expired"})).json()["data"]
    assert [item["id"] for item in listed] == [data["id"]]


async def test_revoke_is_soft_final_and_idempotent(api: Api) -> None:
    key, data = await api.create_key()
    assert (await api.verify(key))["code"] == "VALID"
    response = await api.client.request(
        "DELETE", f"/v1/keys/{data['id']}", json={"reason": "leaked on github"}
    )
    assert response.status_code == 200
    revoked = response.json()["data"]
    assert revoked["status"] == "revoked"
    assert revoked["revoked_reason"] == "leaked on github"
    assert (await api.verify(key))["code"] == "REVOKED"
    again = await api.client.delete(f"/v1/keys/{data['id']}", params={"reason": "other"})
    assert again.json()["data"]["revoked_reason"] == "leaked on github"
    kept = (await api.client.get(f"/v1/keys/{data['id']}")).json()["data"]
    assert kept["status"] == "revoked"
    for action, body in (("enable", None), ("disable", {}), ("rotate", {})):
        refused = await api.client.post(f"/v1/keys/{data['id']}/{action}", json=body)
        assert refused.status_code == 409
        assert refused.json()["code"] == "KEY_REVOKED"
    refused = await api.client.patch(f"/v1/keys/{data['id']}", json={"name": "x"})
    assert refused.status_code == 409


async def test_rotation_keeps_id_and_old_secret_until_grace_ends(api: Api) -> None:
    old_key, data = await api.create_key(owner="c", scopes=["read:*"])
    assert (await api.verify(old_key))["code"] == "VALID"  # cached before the rotation
    response = await api.client.post(
        f"/v1/keys/{data['id']}/rotate", json={"grace_period_seconds": 60}
    )
    assert response.status_code == 200, response.text
    new_key = response.json()["key"]
    rotated = response.json()["data"]
    assert new_key != old_key
    assert rotated["id"] == data["id"]
    assert rotated["hash"] != data["hash"]
    assert rotated["owner"] == "c" and rotated["scopes"] == ["read:*"]
    assert (await api.verify(new_key))["code"] == "VALID"
    assert (await api.verify(old_key))["code"] == "VALID"
    api.clock.advance(59)
    assert (await api.verify(old_key))["key_id"] == data["id"]
    api.clock.advance(1)
    assert (await api.verify(old_key))["code"] == "NOT_FOUND"
    assert (await api.verify(new_key))["code"] == "VALID"
    by_new_hash = await api.client.get(f"/v1/keys/{rotated['hash']}")
    assert by_new_hash.json()["data"]["id"] == data["id"]


async def test_rotation_without_grace_retires_the_old_secret_at_once(api: Api) -> None:
    old_key, data = await api.create_key()
    assert (await api.verify(old_key))["code"] == "VALID"
    response = await api.client.post(f"/v1/keys/{data['id']}/rotate")
    assert response.status_code == 200
    assert (await api.verify(old_key))["code"] == "NOT_FOUND"
    assert (await api.verify(response.json()["key"]))["code"] == "VALID"


@pytest.mark.parametrize(("after", "seconds"), [("30m", 1800), ("1h", 3600), ("2d", 172_800)])
async def test_auto_enable_after_takes_seed_004_durations(
    api: Api, after: str, seconds: int
) -> None:
    key, data = await api.create_key()
    response = await api.client.post(
        f"/v1/keys/{data['id']}/disable", json={"auto_enable_after": after}
    )
    assert response.status_code == 200
    api.clock.advance(seconds - 1)
    assert (await api.verify(key))["code"] == "DISABLED"
    api.clock.advance(1)
    assert (await api.verify(key))["code"] == "VALID"


async def test_disable_with_auto_enable_and_manual_enable(api: Api) -> None:
    key, data = await api.create_key()
    response = await api.client.post(
        f"/v1/keys/{data['id']}/disable", json={"reason": "billing", "auto_enable_after": 600}
    )
    assert response.status_code == 200
    disabled = response.json()["data"]
    assert disabled["status"] == "disabled"
    assert disabled["disabled_reason"] == "billing"
    assert (await api.verify(key))["code"] == "DISABLED"
    api.clock.advance(600)
    assert (await api.verify(key))["code"] == "VALID"
    assert (await api.client.get(f"/v1/keys/{data['id']}")).json()["data"]["status"] == "active"
    await api.client.post(f"/v1/keys/{data['id']}/disable")
    assert (await api.verify(key))["code"] == "DISABLED"
    enabled = await api.client.post(f"/v1/keys/{data['id']}/enable")
    assert enabled.json()["data"]["status"] == "active"
    assert enabled.json()["data"]["disabled_reason"] is None
    assert (await api.verify(key))["code"] == "VALID"
