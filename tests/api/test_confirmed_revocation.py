"""``?wait=confirmed`` on revoke, disable, rotate and management-key revoke, in one process.

Embedded (no Redis), the only instance confirms at once. The multi-instance behaviour (every
live instance confirms; a paused one is named unconfirmed) is in
tests/e2e/test_confirmed_revocation.py.
"""

from __future__ import annotations

import pytest

from tests.conftest import Api


def _instance_id(api: Api) -> str:
    runtime = api.app.state.runtime  # type: ignore[attr-defined]
    instance_id: str = runtime.instance_id
    return instance_id


def _assert_confirmed_by_itself(api: Api, body: dict[str, object]) -> None:
    assert body["confirmation"] == {
        "confirmed": [_instance_id(api)],
        "unconfirmed": [],
        "complete": True,
        "timeout_seconds": 5.0,
        "error": None,
    }


async def test_a_single_instance_confirms_a_revoke_by_itself(api: Api) -> None:
    key, data = await api.create_key()
    response = await api.client.delete(f"/v1/keys/{data['id']}", params={"wait": "confirmed"})
    assert response.status_code == 200, response.text
    assert response.json()["data"]["status"] == "revoked"
    _assert_confirmed_by_itself(api, response.json())
    assert (await api.verify(key))["code"] == "REVOKED"


async def test_disable_and_rotate_accept_wait_confirmed(api: Api) -> None:
    key, data = await api.create_key()
    disabled = await api.client.post(
        f"/v1/keys/{data['id']}/disable", params={"wait": "confirmed"}, json={}
    )
    assert disabled.status_code == 200, disabled.text
    _assert_confirmed_by_itself(api, disabled.json())
    assert (await api.verify(key))["code"] == "DISABLED"
    assert (await api.client.post(f"/v1/keys/{data['id']}/enable")).status_code == 200
    rotated = await api.client.post(
        f"/v1/keys/{data['id']}/rotate",
        params={"wait": "confirmed", "timeout": "2.5"},
        json={"grace_period_seconds": 0},
    )
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["confirmation"]["complete"] is True
    assert rotated.json()["confirmation"]["timeout_seconds"] == 2.5
    assert (await api.verify(key))["code"] == "NOT_FOUND"
    assert (await api.verify(rotated.json()["key"]))["code"] == "VALID"


async def test_a_management_key_revoke_accepts_wait_confirmed(api: Api) -> None:
    secret = await api.management_key("keys:read")
    assert (await api.client.get("/v1/keys", headers=api.as_key(secret))).status_code == 200
    listed = (await api.client.get("/v1/management-keys")).json()["data"]
    key_id = next(k["id"] for k in listed if k["name"] == "scoped")
    response = await api.client.delete(
        f"/v1/management-keys/{key_id}", params={"wait": "confirmed"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["data"]["revoked_at"] is not None
    _assert_confirmed_by_itself(api, response.json())
    refused = await api.client.get("/v1/keys", headers=api.as_key(secret))
    assert refused.status_code == 401


async def test_without_wait_the_answer_has_no_confirmation(api: Api) -> None:
    _, data = await api.create_key()
    response = await api.client.delete(f"/v1/keys/{data['id']}")
    assert response.status_code == 200
    assert "confirmation" not in response.json()


BAD_QUERIES = [
    {"wait": "yes"},
    {"wait": ""},
    {"wait": "CONFIRMED"},
    {"wait": "confirmed", "timeout": "0"},
    {"wait": "confirmed", "timeout": "-1"},
    {"wait": "confirmed", "timeout": "60.5"},
    {"wait": "confirmed", "timeout": "nan"},
    {"wait": "confirmed", "timeout": "inf"},
    {"wait": "confirmed", "timeout": "1e400"},
    {"wait": "confirmed", "timeout": "soon"},
    {"timeout": "5"},
]


@pytest.mark.parametrize(
    "query", BAD_QUERIES, ids=lambda q: "&".join(f"{k}={v}" for k, v in q.items())
)
async def test_bad_wait_or_timeout_is_a_422_problem_and_changes_nothing(
    api: Api, query: dict[str, str]
) -> None:
    key, data = await api.create_key()
    secret = await api.management_key("keys:read")
    listed = (await api.client.get("/v1/management-keys")).json()["data"]
    mk_id = next(k["id"] for k in listed if k["name"] == "scoped")
    calls = [
        ("DELETE", f"/v1/keys/{data['id']}", None),
        ("POST", f"/v1/keys/{data['id']}/disable", {}),
        ("POST", f"/v1/keys/{data['id']}/rotate", {}),
        ("DELETE", f"/v1/management-keys/{mk_id}", None),
    ]
    for method, path, body in calls:
        response = await api.client.request(method, path, params=query, json=body)
        assert response.status_code == 422, (path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "VALIDATION_FAILED"
    assert (await api.verify(key))["code"] == "VALID"
    assert (await api.client.get("/v1/keys", headers=api.as_key(secret))).status_code == 200
