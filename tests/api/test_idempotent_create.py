"""``Idempotency-Key`` on ``POST /v1/keys``: a retried create never makes two keys."""

from __future__ import annotations

import asyncio
from unittest import mock

import httpx
from sqlalchemy import select

from keyplane.api.app import create_app
from keyplane.domain.clock import ManualClock
from keyplane.domain.crypto import idempotency_digest
from keyplane.domain.sealing import replay_sealing_key, unseal
from keyplane.store.tables import idempotency_records
from tests.api.test_verify import runtime_of
from tests.conftest import ROOT_KEY, SERVER_SECRET, Api, Database

BODY = {"name": "acme prod", "owner": "cust_1", "policy": {"budget": {"credit_limit": 5}}}


async def test_a_retry_answers_the_same_key_and_secret(api: Api) -> None:
    first = await api.client.post("/v1/keys", json=BODY, headers={"Idempotency-Key": "retry-1"})
    again = await api.client.post("/v1/keys", json=BODY, headers={"Idempotency-Key": "retry-1"})
    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
    assert again.status_code == 200, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["key"] == first.json()["key"]
    assert again.json()["data"]["id"] == first.json()["data"]["id"]
    listed = (await api.client.get("/v1/keys", params={"owner": "cust_1"})).json()["data"]
    assert len(listed) == 1
    assert (await api.verify(first.json()["key"]))["code"] == "VALID"


async def test_keys_made_under_different_idempotency_keys_differ(api: Api) -> None:
    one = (await api.client.post("/v1/keys", json=BODY, headers={"Idempotency-Key": "a"})).json()
    two = (await api.client.post("/v1/keys", json=BODY, headers={"Idempotency-Key": "b"})).json()
    plain = (await api.client.post("/v1/keys", json=BODY)).json()
    assert len({one["key"], two["key"], plain["key"]}) == 3
    assert len({one["data"]["id"], two["data"]["id"], plain["data"]["id"]}) == 3


async def test_the_same_idempotency_key_with_another_body_is_a_conflict(api: Api) -> None:
    ok = await api.client.post("/v1/keys", json=BODY, headers={"Idempotency-Key": "k"})
    assert ok.status_code == 201
    other = await api.client.post(
        "/v1/keys", json={**BODY, "name": "other"}, headers={"Idempotency-Key": "k"}
    )
    assert other.status_code == 409
    assert other.json()["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert ok.json()["key"] not in other.text


async def test_concurrent_retries_make_exactly_one_key(api: Api) -> None:
    responses = await asyncio.gather(
        *(
            api.client.post("/v1/keys", json=BODY, headers={"Idempotency-Key": "burst"})
            for _ in range(20)
        )
    )
    assert sorted(r.status_code for r in responses) == [200] * 19 + [201]
    assert len({r.json()["key"] for r in responses}) == 1
    listed = (await api.client.get("/v1/keys", params={"owner": "cust_1"})).json()["data"]
    assert len(listed) == 1


async def test_idempotency_keys_belong_to_the_management_key_that_sent_them(api: Api) -> None:
    other = api.as_key(await api.management_key("keys:*"))
    mine = await api.client.post("/v1/keys", json=BODY, headers={"Idempotency-Key": "shared"})
    theirs = await api.client.post(
        "/v1/keys", json=BODY, headers={"Idempotency-Key": "shared", **other}
    )
    assert mine.status_code == theirs.status_code == 201
    assert mine.json()["key"] != theirs.json()["key"]


async def test_after_a_rotation_the_old_secret_is_not_replayed(api: Api) -> None:
    created = await api.client.post("/v1/keys", json=BODY, headers={"Idempotency-Key": "rot"})
    key_id = created.json()["data"]["id"]
    rotated = await api.client.post(f"/v1/keys/{key_id}/rotate", json={})
    assert rotated.status_code in (200, 201), rotated.text
    again = await api.client.post("/v1/keys", json=BODY, headers={"Idempotency-Key": "rot"})
    assert again.status_code == 409
    assert again.json()["code"] == "IDEMPOTENT_KEY_ROTATED"
    assert created.json()["key"] not in again.text


async def test_only_a_digest_of_the_idempotency_key_is_stored(api: Api) -> None:
    token = "client-token-0123456789"
    assert (
        await api.client.post("/v1/keys", json=BODY, headers={"Idempotency-Key": token})
    ).status_code == 201
    store = runtime_of(api).store
    async with store.engine.connect() as conn:  # type: ignore[attr-defined]
        stored = (await conn.execute(select(idempotency_records.c.idempotency_key))).scalars().all()
    assert stored == [idempotency_digest(token)]


async def test_a_malformed_idempotency_key_is_refused(api: Api) -> None:
    for token in ("", "x" * 256, "has space", "tab\there"):
        response = await api.client.post("/v1/keys", json=BODY, headers={"Idempotency-Key": token})
        assert response.status_code == 422, (token, response.text)
    assert (await api.client.get("/v1/keys")).json()["data"] == []


async def test_a_replay_within_the_window_answers_the_secret_and_after_it_never(
    api: Api,
) -> None:
    headers = {"Idempotency-Key": "window-1"}
    first = await api.client.post("/v1/keys", json=BODY, headers=headers)
    secret = first.json()["key"]
    api.clock.advance(599)
    inside = await api.client.post("/v1/keys", json=BODY, headers=headers)
    assert inside.status_code == 200 and inside.json()["key"] == secret
    api.clock.advance(1)  # exactly 600 s (the default window): over
    late = await api.client.post("/v1/keys", json=BODY, headers=headers)
    assert late.status_code == 409, late.text
    assert late.headers["content-type"].startswith("application/problem+json")
    assert late.json()["code"] == "IDEMPOTENCY_KEY_EXPIRED"
    assert secret not in late.text
    # The refusal also erased the sealed copy, and no second key was made.
    assert await _sealed_secrets(api) == [None]
    listed = (await api.client.get("/v1/keys", params={"owner": "cust_1"})).json()["data"]
    assert len(listed) == 1
    again = await api.client.post("/v1/keys", json=BODY, headers=headers)
    assert again.json()["code"] == "IDEMPOTENCY_KEY_EXPIRED"


async def test_the_stored_record_holds_the_secret_only_sealed(api: Api) -> None:
    created = await api.client.post("/v1/keys", json=BODY, headers={"Idempotency-Key": "sealed-1"})
    secret = created.json()["key"]
    store = runtime_of(api).store
    async with store.engine.connect() as conn:  # type: ignore[attr-defined]
        rows = (await conn.execute(select(idempotency_records))).mappings().all()
    [row] = rows
    stored = " ".join(str(value) for value in row.values())
    body = secret.rsplit("_", 1)[1]
    assert secret not in stored and body not in stored and body[:12] not in stored
    assert row["sealed_secret"].startswith("v1.")
    # Bound to its record: the token does not open as another record's, nor under another
    # server secret.
    key = replay_sealing_key(SERVER_SECRET.encode())
    assert unseal(key, row["sealed_secret"], b"other\0record\0x\0y") is None
    assert unseal(replay_sealing_key(b"another server secret"), row["sealed_secret"], b"") is None


async def test_expired_secrets_are_erased_without_any_retry(api: Api) -> None:
    for n in range(3):
        response = await api.client.post(
            "/v1/keys", json={**BODY, "name": f"k{n}"}, headers={"Idempotency-Key": f"p{n}"}
        )
        assert response.status_code == 201
        api.clock.advance(300)
    # Made at 0, 300 and 600 s; now is 900 s: the first two are past the 600 s window.
    keys = runtime_of(api).services.keys
    assert await keys.erase_expired_secrets() == 2
    assert sorted(await _sealed_secrets(api), key=lambda v: v is None) == [mock.ANY, None, None]
    assert await keys.erase_expired_secrets() == 0


async def test_the_window_is_a_setting(database: Database, clock: ManualClock) -> None:
    app = create_app(database.settings(idempotency_secret_window_seconds=30), clock=clock)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://keyplane.test",
            headers={"Authorization": f"Bearer {ROOT_KEY}"},
        ) as client,
    ):
        headers = {"Idempotency-Key": "short"}
        assert (await client.post("/v1/keys", json=BODY, headers=headers)).status_code == 201
        clock.advance(30)
        late = await client.post("/v1/keys", json=BODY, headers=headers)
        assert late.status_code == 409 and late.json()["code"] == "IDEMPOTENCY_KEY_EXPIRED"


async def test_another_management_key_cannot_replay_a_create(api: Api) -> None:
    other = api.as_key(await api.management_key("keys:*"))
    mine = await api.client.post("/v1/keys", json=BODY, headers={"Idempotency-Key": "mine"})
    theirs = await api.client.post(
        "/v1/keys", json=BODY, headers={"Idempotency-Key": "mine", **other}
    )
    assert theirs.status_code == 201  # a new key of their own, not a replay of mine
    assert mine.json()["key"] not in theirs.text
    assert mine.json()["data"]["id"] != theirs.json()["data"]["id"]


async def _sealed_secrets(api: Api) -> list[str | None]:
    store = runtime_of(api).store
    async with store.engine.connect() as conn:  # type: ignore[attr-defined]
        return list((await conn.execute(select(idempotency_records.c.sealed_secret))).scalars())
