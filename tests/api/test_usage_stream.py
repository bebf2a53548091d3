"""The live usage stream's API: bad input and missing rights are 4xx before anything is
subscribed; over a WebSocket a report arrives once durable, without a secret."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator

import pytest
from starlette.exceptions import StarletteDeprecationWarning

with warnings.catch_warnings():
    # Starlette's test client would rather have httpx2; httpx is what this project uses.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient, WebSocketDenialResponse

from keyplane.api.app import create_app
from keyplane.services.usage_stream import LocalBroadcast, StreamFilter, UsageEvent
from tests.conftest import ROOT_KEY, Api, Database

KEY_ID = "key_" + "0" * 26


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/v1/usage/stream?nope=1", 422, "UNKNOWN_PARAMETER"),
        ("/v1/usage/stream?min_cost=abc", 422, "INVALID_MIN_COST"),
        ("/v1/usage/stream?min_cost=-1", 422, "INVALID_MIN_COST"),
        ("/v1/usage/stream?min_cost=" + "9" * 41, 422, "VALIDATION_FAILED"),
        ("/v1/usage/stream?owner=" + "o" * 201, 422, "VALIDATION_FAILED"),
        ("/v1/usage/stream?project_id=proj_x", 422, "VALIDATION_FAILED"),
        ("/v1/usage/stream?project_id=proj_" + "0" * 26, 404, "PROJECT_NOT_FOUND"),
        ("/v1/usage/stream?key_id=" + KEY_ID, 404, "KEY_NOT_FOUND"),
        (f"/v1/keys/{KEY_ID}/usage/stream", 404, "KEY_NOT_FOUND"),
        ("/v1/keys/kp_live_abc/usage/stream", 422, "VALIDATION_FAILED"),
        (f"/v1/keys/{KEY_ID}/usage/stream?owner=a", 422, "UNKNOWN_PARAMETER"),
    ],
)
async def test_bad_stream_requests_are_refused_with_a_problem(
    api: Api, path: str, status: int, code: str
) -> None:
    response = await api.client.get(path)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code


async def test_streams_need_usage_read_and_a_key_within_reach(api: Api) -> None:
    _key, data = await api.create_key()
    path = f"/v1/keys/{data['id']}/usage/stream"
    anonymous = await api.client.get(path, headers={"Authorization": ""})
    assert anonymous.status_code == 401
    writer = await api.management_key("usage:write")
    assert (await api.client.get(path, headers=api.as_key(writer))).status_code == 403
    project = (await api.client.post("/v1/projects", json={"name": "other"})).json()["data"]
    elsewhere = await api.management_key("usage:read", project_id=project["id"])
    refused = await api.client.get(path, headers=api.as_key(elsewhere))
    assert refused.status_code == 404


@pytest.fixture
def client(sqlite_database: Database) -> Iterator[TestClient]:
    app = create_app(sqlite_database.settings())
    with TestClient(app, headers={"Authorization": f"Bearer {ROOT_KEY}"}) as client:
        yield client


def test_a_websocket_receives_each_durable_report_once_without_secrets(
    client: TestClient,
) -> None:
    created = client.post("/v1/keys", json={"name": "streamed", "owner": "acme"}).json()
    key, key_id = created["key"], created["data"]["id"]
    with client.websocket_connect(f"/v1/keys/{key_id}/usage/stream") as socket:
        body = {"key_id": key_id, "request_id": "r1", "cost": 0.25, "model": "gpt-4o"}
        assert client.post("/v1/usage", json=body).status_code == 201
        assert client.post("/v1/usage", json=body).status_code == 200  # a retry: not streamed
        assert client.post("/v1/usage", json={**body, "request_id": "r2"}).status_code == 201
        first, second = socket.receive_text(), socket.receive_text()
    assert key not in first + second and created["data"]["hash"] not in first + second
    event = json.loads(first)
    assert event["type"] == "usage"
    assert event["key_id"] == key_id
    assert event["owner"] == "acme"
    assert event["model"] == "gpt-4o"
    assert '"cost": 0.25' in first  # exact credits
    assert (event["request_id"], json.loads(second)["request_id"]) == ("r1", "r2")


def test_an_org_stream_over_websocket_applies_its_filters(client: TestClient) -> None:
    key_id = client.post("/v1/keys", json={"name": "k", "owner": "acme"}).json()["data"]["id"]
    with client.websocket_connect("/v1/usage/stream?owner=acme&min_cost=1") as socket:
        for n, cost in enumerate(("0.5", "1", "3.000001")):
            body = {"key_id": key_id, "request_id": f"r{n}", "cost": float(cost)}
            assert client.post("/v1/usage", json=body).status_code == 201
        costs = [json.loads(socket.receive_text())["request_id"] for _ in range(2)]
    assert costs == ["r1", "r2"]


def test_a_refused_websocket_gets_the_problem_document(client: TestClient) -> None:
    with (
        pytest.raises(WebSocketDenialResponse) as denied,
        client.websocket_connect("/v1/usage/stream?min_cost=lots"),
    ):
        pass
    assert denied.value.status_code == 422
    assert denied.value.json()["code"] == "INVALID_MIN_COST"
    with (
        pytest.raises(WebSocketDenialResponse) as denied,
        client.websocket_connect("/v1/usage/stream", headers={"Authorization": "Bearer no"}),
    ):
        pass
    assert denied.value.status_code == 401


async def test_a_report_is_made_into_an_event_only_when_someone_may_hear_it(api: Api) -> None:
    # One process (SQLite's local broadcast): while no one subscribes, a durable report is not
    # published at all; once someone does, each new one is. Instances sharing a broadcast
    # (PostgreSQL's here) publish every one: another instance's subscribers are not known.
    streams = api.app.state.runtime.services.streams  # type: ignore[attr-defined]
    alone = isinstance(streams.broadcast, LocalBroadcast)
    assert alone == api.database.url.startswith("sqlite")
    published: list[str] = []
    publish = streams.publish

    def counted(event: UsageEvent) -> None:
        published.append(event.id)
        publish(event)

    streams.publish = counted
    key, data = await api.create_key()
    unheard = await api.report(key=key, cost=1, request_id="unheard")
    assert unheard.status_code == 201
    assert published == ([] if alone else [unheard.json()["id"]])
    assert streams.listened_to is not alone
    subscription = streams.hub.subscribe(StreamFilter(str(data["org_id"])))
    heard = await api.report(key=key, cost=1, request_id="heard")
    assert published[-1] == heard.json()["id"]
    received = await subscription.next(timeout=5)
    if not alone and received.id == unheard.json()["id"]:  # type: ignore[union-attr]
        received = await subscription.next(timeout=5)  # it was in flight when we subscribed
    assert received.id == heard.json()["id"]  # type: ignore[union-attr]
    subscription.close()
