"""``/prod``: the FastRouter service-key API over the same keys as ``/v1``."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conftest import Api

# The createServiceKey example of seed 001, as it is written there.
SEED_EXAMPLE = {
    "api_key_name": "ci-pipeline",
    "project_name": "Production",
    "models": ["openai/gpt-5.5"],
    "credit_limit": 150,
    "reset_budget_interval": "daily",
    "tags": ["ci", "prod"],
}


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> str:
    """An OpenAI-style error body with this status and no traceback; returns the message."""
    assert response.status_code == status, (response.request.url, response.text[:300])
    assert response.headers["content-type"] == "application/json"
    assert "Traceback" not in response.text and 'File "' not in response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "code"}, body
    assert body["error"]["type"].endswith("_error")
    if code is not None:
        assert body["error"]["code"] == code, body
    return str(body["error"]["message"])


async def production(api: Api) -> str:
    response = await api.client.post(
        "/v1/projects", json={"name": "Production", "key_prefix": "prod"}
    )
    assert response.status_code == 201, response.text
    project_id: str = response.json()["data"]["id"]
    return project_id


async def create(api: Api, **fields: Any) -> dict[str, Any]:
    response = await api.client.post(
        "/prod/createServiceKey", json={"api_key_name": "svc", **fields}
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def native(api: Api, key_hash: str) -> dict[str, Any]:
    response = await api.client.get(f"/v1/keys/{key_hash}")
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


async def org_id(api: Api) -> str:
    return str((await api.client.get("/v1/projects")).json()["data"][0]["org_id"])


async def test_the_seed_example_creates_a_scoped_key(api: Api) -> None:
    project_id = await production(api)
    response = await api.client.post("/prod/createServiceKey", json=SEED_EXAMPLE)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["api_key"].startswith("prod_live_")
    assert created["project_id"] == project_id and created["project_name"] == "Production"
    assert created["credit_limit"] == 150 and created["reset_budget_interval"] == "daily"
    assert created["models"] == ["openai/gpt-5.5"] and created["tags"] == ["ci", "prod"]
    shown = await native(api, created["api_key_id_hash"])
    assert shown["name"] == "ci-pipeline" and shown["tags"] == ["ci", "prod"]
    assert shown["policy"] == {
        "models": {"allow": ["openai/gpt-5.5"]},
        "budget": {"credit_limit": 150.0, "reset": "daily"},
    }
    key = created["api_key"]
    assert (await api.verify(key, model="openai/gpt-5.5"))["code"] == "VALID"
    assert (await api.verify(key, model="openai/gpt-4o"))["code"] == "FORBIDDEN_MODEL"


async def test_rpm_and_tpm_limits_are_enforced_per_minute(api: Api) -> None:
    created = await create(api, rpm_limit=2, tpm_limit=1000)
    shown = await native(api, created["api_key_id_hash"])
    assert shown["policy"] == {
        "rate_limits": [{"name": "rpm", "limit": 2, "period": "1m"}],
        "token_limits": {"total_per_minute": 1000},
    }
    key = created["api_key"]
    # tpm counts input plus output: 600 + 300 fits, another 100 does not.
    first = await api.verify(key, tokens={"input": 600, "output": 300})
    assert first["code"] == "VALID"
    limits = {item["name"]: item for item in first["limits"]}  # type: ignore[union-attr]
    assert limits["total_per_minute"]["remaining"] == 100
    assert (await api.verify(key, tokens={"input": 100, "output": 100}))["code"] == "TOKEN_LIMITED"
    assert (await api.verify(key))["code"] == "VALID"  # the second request of the minute
    assert (await api.verify(key))["code"] == "RATE_LIMITED"
    api.clock.advance(60)
    assert (await api.verify(key))["code"] == "VALID"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2030-03-28 17:30:00.250", "2030-03-28T17:30:00.250000Z"),
        ("2030-03-28 17:30:00", "2030-03-28T17:30:00Z"),
        ("2030-03-28T17:30:00Z", "2030-03-28T17:30:00Z"),
        ("2030-03-28T19:30:00+02:00", "2030-03-28T17:30:00Z"),
        ("2030-03-28", "2030-03-28T00:00:00Z"),
    ],
)
async def test_expire_key_takes_fastrouter_form_as_utc_and_iso(
    api: Api, text: str, expected: str
) -> None:
    created = await create(api, expire_key=text)
    assert (await native(api, created["api_key_id_hash"]))["expires_at"] == expected
    assert created["expire_key"].startswith(text[:10])


async def test_update_changes_settings_by_hash_and_null_removes_a_limit(api: Api) -> None:
    created = await create(api, rpm_limit=10, tpm_limit=500, credit_limit=5, metadata={"team": "a"})
    key_hash = created["api_key_id_hash"]
    response = await api.client.post(
        "/prod/updateServiceKey",
        json={
            "api_key_id_hash": key_hash,
            "api_key_name": "renamed",
            "rpm_limit": None,
            "credit_limit": 99.5,
            "reset_budget_interval": "monthly",
            "models": ["anthropic/*"],
            "meta_data": {"team": "b"},
            "tags": ["x"],
            "expire_key": "2031-01-01 00:00:00.000",
        },
    )
    assert response.status_code == 200, response.text
    updated = response.json()
    assert updated["api_key_name"] == "renamed" and updated["rpm_limit"] is None
    assert updated["tpm_limit"] == 500 and updated["credit_limit"] == 99.5
    assert updated["metadata"] == {"team": "b"} and updated["tags"] == ["x"]
    assert updated["expire_key"] == "2031-01-01 00:00:00.000"
    shown = await native(api, key_hash)
    assert shown["name"] == "renamed" and shown["metadata"] == {"team": "b"}
    assert shown["policy"] == {
        "token_limits": {"total_per_minute": 500},
        "budget": {"credit_limit": 99.5, "reset": "monthly"},
        "models": {"allow": ["anthropic/*"]},
    }
    assert shown["limit_reset"] == "monthly"


async def test_list_shows_every_key_with_status_and_spending(api: Api) -> None:
    live = await create(api, api_key_name="live", credit_limit=150)
    gone = await create(api, api_key_name="gone")
    await api.client.post(
        "/prod/deleteServiceKey", json={"api_key_id_hash": gone["api_key_id_hash"]}
    )
    key_id = (await native(api, live["api_key_id_hash"]))["id"]
    assert (await api.report("r1", key_id=key_id, cost=42)).status_code == 201
    response = await api.client.get("/prod/getServiceKeys")
    assert response.status_code == 200, response.text
    listed = response.json()
    assert listed["has_more"] is False
    by_name = {k["api_key_name"]: k for k in listed["service_keys"]}
    assert by_name["live"]["status"] == "active" and by_name["gone"]["status"] == "revoked"
    assert (by_name["live"]["credit_used"], by_name["live"]["credit_limit"]) == (42, 150)
    assert "api_key" not in by_name["live"]  # the plaintext is never shown again
    live_only = await api.client.get("/prod/getServiceKeys", params={"include_revoked": "false"})
    assert [k["api_key_name"] for k in live_only.json()["service_keys"]] == ["live"]
    paged = await api.client.get("/prod/getServiceKeys", params={"limit": 1})
    assert paged.json()["has_more"] is True and len(paged.json()["service_keys"]) == 1


async def test_delete_revokes_and_a_second_delete_is_404(api: Api) -> None:
    created = await create(api)
    body = {"api_key_id_hash": created["api_key_id_hash"]}
    response = await api.client.post("/prod/deleteServiceKey", json=body)
    assert response.json() == {"deleted": True, **body}
    assert (await api.verify(created["api_key"]))["code"] == "REVOKED"
    assert_error(await api.client.post("/prod/deleteServiceKey", json=body), 404)
    assert_error(await api.client.post("/prod/updateServiceKey", json=body), 404)


async def test_org_id_must_be_the_management_keys_org(api: Api) -> None:
    mine = await org_id(api)
    assert (await create(api, org_id=mine))["org_id"] == mine
    other = "org_01m00000000000000000000000"
    response = await api.client.post(
        "/prod/createServiceKey", json={"api_key_name": "x", "org_id": other}
    )
    assert_error(response, 403, "ORG_MISMATCH")
    assert_error(await api.client.get("/prod/getServiceKeys", params={"org_id": other}), 403)


async def test_projects_resolve_by_id_then_name_and_are_never_created(api: Api) -> None:
    project_id = await production(api)
    by_id = await create(api, project_id=project_id, project_name="ignored when the id matches")
    assert by_id["project_id"] == project_id
    by_name = await create(api, project_id="fastrouter-uuid-1", project_name="Production")
    assert by_name["project_id"] == project_id
    default = await create(api)
    assert default["project_name"] == "default"
    response = await api.client.post(
        "/prod/createServiceKey", json={"api_key_name": "x", "project_name": "Nope"}
    )
    assert_error(response, 404, "PROJECT_NOT_FOUND")
    projects = (await api.client.get("/v1/projects")).json()["data"]
    assert sorted(p["name"] for p in projects) == ["Production", "default"]


async def test_a_project_bound_key_cannot_create_in_another_project(api: Api) -> None:
    project_id = await production(api)
    bound = await api.management_key("keys:*", project_id=project_id)
    response = await api.client.post(
        "/prod/createServiceKey",
        json={"api_key_name": "x", "project_name": "default"},
        headers=api.as_key(bound),
    )
    assert_error(response, 403)
    mine = await api.client.post(
        "/prod/createServiceKey", json={"api_key_name": "x"}, headers=api.as_key(bound)
    )
    assert mine.status_code == 201 and mine.json()["project_id"] == project_id


async def test_credentials_are_required(api: Api) -> None:
    api.client.headers.pop("Authorization")
    response = await api.client.get("/prod/getServiceKeys")
    assert_error(response, 401, "UNAUTHENTICATED")
    assert response.headers["www-authenticate"] == "Bearer"
    created = await api.client.post(
        "/prod/createServiceKey",
        json={"api_key_name": "x"},
        headers={"Authorization": "Bearer kp_mgmt_guess"},
    )
    assert_error(created, 401)


# -- hostile input ----------------------------------------------------------------------------

BAD_CREATES: list[tuple[str, Any]] = [
    ("missing name", {"credit_limit": 1}),
    ("wrong type name", {"api_key_name": ["x"]}),
    ("string rpm", {"api_key_name": "x", "rpm_limit": "10"}),
    ("zero rpm", {"api_key_name": "x", "rpm_limit": 0}),
    ("float tpm", {"api_key_name": "x", "tpm_limit": 1.5}),
    ("negative credits", {"api_key_name": "x", "credit_limit": -5}),
    ("boolean credits", {"api_key_name": "x", "credit_limit": False}),
    ("unknown interval", {"api_key_name": "x", "reset_budget_interval": "hourly"}),
    ("bad expiry", {"api_key_name": "x", "expire_key": "next tuesday"}),
    ("impossible date", {"api_key_name": "x", "expire_key": "2030-02-30 00:00:00.000"}),
    ("unicode digits", {"api_key_name": "x", "expire_key": "٢٠٣٠-01-01"}),
    ("past expiry", {"api_key_name": "x", "expire_key": "2020-01-01 00:00:00.000"}),
    ("bad model glob", {"api_key_name": "x", "models": ["***" * 100]}),
    ("models not a list", {"api_key_name": "x", "models": "gpt-4o"}),
    ("both metadata", {"api_key_name": "x", "metadata": {}, "meta_data": {}}),
    (
        "deep metadata",
        {
            "api_key_name": "x",
            "metadata": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}},
        },
    ),
    ("control characters", {"api_key_name": "bell\x07"}),
    ("lone surrogate", {"api_key_name": "\ud800"}),
    ("oversized name", {"api_key_name": "k" * 10_000}),
    ("oversized tags", {"api_key_name": "x", "tags": ["t"] * 1000}),
    ("unknown field", {"api_key_name": "x", "user_id": "u"}),
    ("array body", [{"api_key_name": "x"}]),
]


async def test_bad_creates_are_400_and_create_nothing(api: Api) -> None:
    for case, body in BAD_CREATES:
        response = await api.client.post(
            "/prod/createServiceKey",
            content=json.dumps(body).encode(),
            headers={"content-type": "application/json"},
        )
        message = assert_error(response, 400)
        assert "kkkkkkkkkk" not in message and "\x07" not in message, case
    assert (await api.client.get("/v1/keys")).json()["data"] == []


async def test_malformed_json_is_400_everywhere(api: Api) -> None:
    for raw in (b"{", b'{"api_key_name": "x",}', b"\x00", b"[1,", b'{"api_key_name": NaN}'):
        for path in (
            "/prod/createServiceKey",
            "/prod/updateServiceKey",
            "/prod/deleteServiceKey",
        ):
            response = await api.client.post(
                path, content=raw, headers={"content-type": "application/json"}
            )
            assert_error(response, 400)


async def test_unknown_or_malformed_hashes_change_nothing(api: Api) -> None:
    created = await create(api)
    before = await native(api, created["api_key_id_hash"])
    for key_hash in ("0" * 64, "nope", "k" * 100, "../../etc/passwd", "\u202eevil", "x" * 101):
        for path in ("/prod/updateServiceKey", "/prod/deleteServiceKey"):
            response = await api.client.post(path, json={"api_key_id_hash": key_hash})
            assert_error(response, 400 if len(key_hash) > 100 else 404)
    assert await native(api, created["api_key_id_hash"]) == before


async def test_bad_list_parameters_are_400(api: Api) -> None:
    for params in (
        {"limit": "0"},
        {"limit": "5000"},
        {"offset": "-3"},
        {"page": "2"},
        {"org_id": "\x00"},
        {"include_revoked": "perhaps"},
    ):
        assert_error(await api.client.get("/prod/getServiceKeys", params=params), 400)


async def test_unknown_paths_and_methods_answer_in_the_same_format(api: Api) -> None:
    wrong_method = await api.client.get("/prod/createServiceKey")
    assert_error(wrong_method, 405, "METHOD_NOT_ALLOWED")
    assert wrong_method.headers["allow"] == "POST"
    assert_error(await api.client.post("/prod/rotateServiceKey", json={}), 404, "NOT_FOUND")


async def test_an_oversized_body_is_413_in_the_same_format(api: Api) -> None:
    huge = json.dumps({"api_key_name": "x", "metadata": {"blob": "d" * 200_000}}).encode()
    response = await api.client.post(
        "/prod/createServiceKey", content=huge, headers={"content-type": "application/json"}
    )
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert (await api.client.get("/v1/keys")).json()["data"] == []
