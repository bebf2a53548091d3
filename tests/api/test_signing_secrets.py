"""``/v1/signing-secrets``: owners' Standard Webhooks secrets, shown once, sealed at rest."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection
from standardwebhooks import Webhook

from keyplane.domain.changes import Journal
from keyplane.services.runtime import Runtime
from keyplane.store.tables import signing_secrets
from keyplane.webhooks import WebhookVerificationError, verify
from tests.conftest import Api


def runtime_of(api: Api) -> Runtime:
    runtime: Runtime = api.app.state.runtime  # type: ignore[attr-defined]
    return runtime


class Recorder:
    def __init__(self) -> None:
        self.actions: list[tuple[str, str | None, dict[str, object]]] = []

    async def __call__(self, conn: AsyncConnection, journal: Journal) -> None:
        for change in journal.changes:
            self.actions.append((change.action, change.target_id, dict(change.details)))


async def _create(api: Api, owner: str = "cust_42", **headers: str) -> tuple[str, dict]:  # type: ignore[type-arg]
    response = await api.client.post(
        "/v1/signing-secrets", json={"owner": owner, "description": "acme's hooks"}, headers=headers
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return body["secret"], body["data"]


async def _sign(api: Api, secret_id: str, payload: str, **fields: object) -> dict[str, str]:
    response = await api.client.post(
        f"/v1/signing-secrets/{secret_id}/sign", json={"payload": payload, **fields}
    )
    assert response.status_code == 200, response.text
    headers: dict[str, str] = response.json()["data"]["headers"]
    return headers


async def test_a_secret_is_shown_once_signs_and_verifies(api: Api) -> None:
    recorder = Recorder()
    runtime_of(api).store.unit.journal_writers.append(recorder)
    secret, data = await _create(api)
    assert secret.startswith("whsec_")
    assert data["owner"] == "cust_42" and data["previous_expires_at"] is None
    assert "secret" not in (await api.client.get(f"/v1/signing-secrets/{data['id']}")).json()

    payload = '{"type":"invoice.paid","data":{"id":"inv_1"}}'
    headers = await _sign(api, data["id"], payload)
    now = int(api.clock.now().timestamp())
    assert headers["webhook-timestamp"] == str(now)
    assert headers["webhook-id"].startswith("msg_")
    verify(payload, headers, secret, now=now)

    chosen = await _sign(api, data["id"], payload, msg_id="evt_7", timestamp=1_900_000_000)
    assert (chosen["webhook-id"], chosen["webhook-timestamp"]) == ("evt_7", "1900000000")
    verify(payload, chosen, secret, now=1_900_000_000)
    assert recorder.actions == [("signing_secret.created", data["id"], {"owner": "cust_42"})]


async def test_the_reference_library_accepts_what_the_endpoint_signs(api: Api) -> None:
    secret, data = await _create(api)
    now = int(api.clock.now().timestamp())
    headers = await _sign(api, data["id"], '{"a":1}', timestamp=now)
    with pytest.raises(Exception, match="too old"):
        # The reference library reads the wall clock; the test clock is in the past.
        Webhook(secret).verify('{"a":1}', headers)
    import time

    fresh = await _sign(api, data["id"], '{"a":1}', timestamp=int(time.time()))
    assert Webhook(secret).verify('{"a":1}', fresh) == {"a": 1}


async def test_nothing_at_rest_opens_without_the_server_secret(api: Api) -> None:
    secret, data = await _create(api)
    async with runtime_of(api).store.unit.read() as conn:
        row = (
            await conn.execute(select(signing_secrets).where(signing_secrets.c.id == data["id"]))
        ).one()
    assert secret not in repr(tuple(row))
    assert secret.removeprefix("whsec_") not in repr(tuple(row))


async def test_rotation_overlaps_then_retires_the_old_secret(api: Api) -> None:
    recorder = Recorder()
    runtime_of(api).store.unit.journal_writers.append(recorder)
    old, data = await _create(api)
    rotated = await api.client.post(
        f"/v1/signing-secrets/{data['id']}/rotate", json={"overlap_seconds": 3600}
    )
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["secret"]
    assert new != old and new.startswith("whsec_")
    assert rotated.json()["data"]["previous_expires_at"] is not None

    headers = await _sign(api, data["id"], "{}")
    now = int(api.clock.now().timestamp())
    assert len(headers["webhook-signature"].split()) == 2
    verify("{}", headers, old, now=now)
    verify("{}", headers, new, now=now)

    api.clock.advance(3600)
    later = await _sign(api, data["id"], "{}")
    now = int(api.clock.now().timestamp())
    assert len(later["webhook-signature"].split()) == 1
    verify("{}", later, new, now=now)
    with pytest.raises(WebhookVerificationError):
        verify("{}", later, old, now=now)
    shown = (await api.client.get(f"/v1/signing-secrets/{data['id']}")).json()["data"]
    assert shown["previous_expires_at"] is None and shown["rotated_at"] is not None
    assert [action for action, _, _ in recorder.actions] == [
        "signing_secret.created",
        "signing_secret.rotated",
    ]
    assert old not in repr(recorder.actions) and new not in repr(recorder.actions)


async def test_a_rotation_without_overlap_retires_at_once(api: Api) -> None:
    old, data = await _create(api)
    rotated = await api.client.post(
        f"/v1/signing-secrets/{data['id']}/rotate", json={"overlap_seconds": 0}
    )
    new = rotated.json()["secret"]
    headers = await _sign(api, data["id"], "x")
    now = int(api.clock.now().timestamp())
    verify("x", headers, new, now=now)
    with pytest.raises(WebhookVerificationError):
        verify("x", headers, old, now=now)


async def test_list_by_owner_and_delete(api: Api) -> None:
    _, first = await _create(api, "cust_1")
    _, second = await _create(api, "cust_2")
    _, third = await _create(api, "cust_1")
    listed = (await api.client.get("/v1/signing-secrets", params={"owner": "cust_1"})).json()
    assert [item["id"] for item in listed["data"]] == [first["id"], third["id"]]
    page = (await api.client.get("/v1/signing-secrets", params={"limit": 2})).json()
    assert page["has_more"] is True
    rest = (
        await api.client.get("/v1/signing-secrets", params={"cursor": page["next_cursor"]})
    ).json()
    assert [item["id"] for item in page["data"] + rest["data"]] == [
        first["id"],
        second["id"],
        third["id"],
    ]
    deleted = await api.client.delete(f"/v1/signing-secrets/{first['id']}")
    assert deleted.status_code == 200
    gone = await api.client.post(f"/v1/signing-secrets/{first['id']}/sign", json={"payload": "x"})
    assert gone.status_code == 404
    assert gone.json()["code"] == "SIGNING_SECRET_NOT_FOUND"


async def test_scopes_guard_every_operation(api: Api) -> None:
    _, data = await _create(api)
    reader = api.as_key(await api.management_key("signing_secrets:read"))
    writer = api.as_key(await api.management_key("signing_secrets:write"))
    keys_only = api.as_key(await api.management_key("keys:*"))
    for headers in (reader, keys_only):
        for method, path, body in [
            ("POST", "/v1/signing-secrets", {"owner": "x"}),
            ("POST", f"/v1/signing-secrets/{data['id']}/sign", {"payload": "x"}),
            ("POST", f"/v1/signing-secrets/{data['id']}/rotate", {}),
            ("DELETE", f"/v1/signing-secrets/{data['id']}", None),
        ]:
            response = await api.client.request(method, path, json=body, headers=headers)
            assert response.status_code == 403, (method, path)
    assert (await api.client.get("/v1/signing-secrets", headers=keys_only)).status_code == 403
    assert (await api.client.get("/v1/signing-secrets", headers=reader)).status_code == 200
    # Write without read: the secret, and only an acknowledgement of the record.
    created = await api.client.post("/v1/signing-secrets", json={"owner": "w"}, headers=writer)
    assert created.status_code == 201
    assert set(created.json()["data"]) == {"id", "status"}


async def test_a_project_bound_key_reaches_its_project_only(api: Api) -> None:
    project = (await api.client.post("/v1/projects", json={"name": "p"})).json()["data"]
    bound = api.as_key(await api.management_key("*", project_id=project["id"]))
    _, org_wide = await _create(api)
    _, own = await _create(api, "inside", **bound)
    assert own["project_id"] == project["id"]
    listed = (await api.client.get("/v1/signing-secrets", headers=bound)).json()["data"]
    assert [item["id"] for item in listed] == [own["id"]]
    hidden = await api.client.post(
        f"/v1/signing-secrets/{org_wide['id']}/sign", json={"payload": "x"}, headers=bound
    )
    assert hidden.status_code == 404


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("", {}),
        ("", {"owner": ""}),
        ("", {"owner": "x" * 201}),
        ("", {"owner": "a\u0000b"}),
        ("", {"owner": "ok", "description": "d" * 2001}),
        ("", {"owner": "ok", "extra": 1}),
        ("/{id}/rotate", {"overlap_seconds": -1}),
        ("/{id}/rotate", {"overlap_seconds": 31 * 86400}),
        ("/{id}/rotate", {"overlap_seconds": "60"}),
        ("/{id}/sign", {}),
        ("/{id}/sign", {"payload": "x", "msg_id": "has space"}),
        ("/{id}/sign", {"payload": "x", "msg_id": "a\r\nX-Evil: 1"}),
        ("/{id}/sign", {"payload": "x", "msg_id": "m" * 257}),
        ("/{id}/sign", {"payload": "x", "timestamp": 12}),
        ("/{id}/sign", {"payload": "x", "timestamp": 10**12}),
        ("/{id}/sign", {"payload": "é" * 30_000}),
        ("/{id}/sign", {"payload": 42}),
    ],
)
async def test_bad_input_is_a_4xx_problem(api: Api, path: str, body: dict[str, object]) -> None:
    _, data = await _create(api)
    response = await api.client.post(
        "/v1/signing-secrets" + path.replace("{id}", data["id"]), json=body
    )
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_unknown_ids_and_parameters(api: Api) -> None:
    for path in ("/v1/signing-secrets/nope", "/v1/signing-secrets/sigsec_" + "0" * 26):
        response = await api.client.get(path)
        assert response.status_code == 404
    response = await api.client.get("/v1/signing-secrets", params={"ownr": "x"})
    assert response.status_code == 422
    response = await api.client.get("/v1/signing-secrets", params={"owner": "a\u0001"})
    assert response.status_code == 422
