"""``/v1/webhooks`` over HTTP (in process): create, read, change, delete, rotate, test, the
delivery log and replay; bad input is a 4xx problem+json; scopes; an email endpoint gets its
events through a real local SMTP server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import httpx
import pytest
from aiosmtpd.controller import Controller

from keyplane.api.app import create_app
from keyplane.domain.clock import ManualClock
from keyplane.services.email import EmailSender
from keyplane.services.runtime import Runtime
from keyplane.services.webhooks import WebhookDispatcher
from keyplane.webhooks import signature_headers, verify
from tests.conftest import ROOT_KEY, SERVER_SECRET, Database, free_port
from tests.services.test_email import Inbox
from tests.webhook_receiver import Receiver, running_receiver

PROBLEM = "application/problem+json"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as receiver:
        yield receiver


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@pytest.fixture
async def client(
    sqlite_database: Database, inbox: tuple[Inbox, int]
) -> AsyncIterator[httpx.AsyncClient]:
    settings = sqlite_database.settings(
        webhook_workers=0,
        webhook_allow_http=True,
        webhook_allow_networks="127.0.0.1/32",
        smtp_host="127.0.0.1",
        smtp_port=inbox[1],
        smtp_starttls=False,
        smtp_from="keyplane@example.com",
    )
    clock = ManualClock(datetime.now(UTC))
    app = create_app(settings, clock=clock)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://keyplane.test",
            headers={"Authorization": f"Bearer {ROOT_KEY}"},
        ) as client,
    ):
        client.app = app  # type: ignore[attr-defined]
        yield client


def runtime_of(client: httpx.AsyncClient) -> Runtime:
    runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    return runtime


async def drain(client: httpx.AsyncClient) -> None:
    """Deliver what is due (webhook_workers=0 starts no loop: the test drives one)."""
    runtime = runtime_of(client)
    assert runtime.outbound is not None
    dispatcher = WebhookDispatcher(
        runtime.store.webhooks,
        runtime.outbound,
        signature_headers,
        runtime.clock,
        SERVER_SECRET.encode(),
        mailer=EmailSender.from_settings(runtime.settings),
    )
    while await dispatcher.run_once():
        pass


async def test_the_endpoint_lifecycle_over_http(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    created = await client.post(
        "/v1/webhooks",
        json={"url": receiver.url, "events": ["key.*"], "description": "billing"},
    )
    assert created.status_code == 201, created.text
    data = created.json()["data"]
    secret, endpoint_id = data["secret"], data["id"]
    assert secret.startswith("whsec_") and data["enabled"] is True
    shown = (await client.get(f"/v1/webhooks/{endpoint_id}")).json()["data"]
    assert "secret" not in shown and shown["events"] == ["key.*"]
    assert secret not in (await client.get("/v1/webhooks")).text

    key = await client.post("/v1/keys", json={"name": "acme", "owner": "cust_1"})
    assert key.status_code == 201
    await drain(client)
    [got] = receiver.verified(secret)
    assert key.json()["key"] not in got.body.decode()

    patched = await client.patch(f"/v1/webhooks/{endpoint_id}", json={"events": ["ping"]})
    assert patched.json()["data"]["events"] == ["ping"]
    rotated = await client.post(f"/v1/webhooks/{endpoint_id}/rotate-secret")
    assert rotated.status_code == 200
    new_secret = rotated.json()["data"]["secret"]
    assert new_secret != secret and rotated.json()["data"]["previous_secret_valid_until"]
    tested = await client.post(f"/v1/webhooks/{endpoint_id}/test")
    assert tested.status_code == 202
    await drain(client)
    ping = receiver.received[-1]
    verify(ping.body, ping.headers, new_secret, now=int(ping.headers["webhook-timestamp"]))
    verify(ping.body, ping.headers, secret, now=int(ping.headers["webhook-timestamp"]))

    log = (await client.get(f"/v1/webhooks/{endpoint_id}/deliveries")).json()
    assert [d["event_type"] for d in log["data"]] == ["ping", "key.created"]
    assert log["data"][0]["history"][0]["status_code"] == 200
    delivery_id = log["data"][1]["id"]
    replayed = await client.post(f"/v1/webhooks/{endpoint_id}/deliveries/{delivery_id}/replay")
    assert replayed.status_code == 202
    await drain(client)
    assert receiver.received[-1].headers["webhook-id"] == got.headers["webhook-id"]

    deleted = await client.delete(f"/v1/webhooks/{endpoint_id}")
    assert deleted.status_code == 200
    gone = await client.get(f"/v1/webhooks/{endpoint_id}")
    assert gone.status_code == 404 and gone.headers["content-type"].startswith(PROBLEM)


@pytest.mark.parametrize(
    "body",
    [
        {"url": "not a url", "events": ["ping"]},
        {"url": "ftp://example.com/x", "events": ["ping"]},
        {"url": "https://127.0.0.2:1/x", "events": ["ping"]},  # outside the allowlist
        {"url": "https://169.254.169.254/latest", "events": ["ping"]},
        {"url": "https://[::1]/x", "events": ["ping"]},
        {"url": "https://10.0.0.1/x", "events": ["ping"]},
        {"url": "https://example.com/" + "a" * 3000, "events": ["ping"]},
        {"url": "https://example.com/x", "events": ["key.nope"]},
        {"url": "https://example.com/x", "events": ["nope.*"]},
        {"url": "https://example.com/x", "events": []},
        {"url": "https://example.com/x", "events": ["ping"] * 65},
        {"url": "https://example.com/x", "events": ["ping"], "description": "x" * 100_000},
        {"url": "https://example.com/x", "events": ["ping"], "kind": "pager"},
        {"url": "nobody", "events": ["ping"], "kind": "email"},
        {"url": "https://example.com/x", "events": ["ping"], "secret": "mine"},
        {"url": "https://example.com/x", "events": "ping"},
    ],
)
async def test_bad_input_is_a_4xx_problem(client: httpx.AsyncClient, body: object) -> None:
    response = await client.post("/v1/webhooks", json=body)
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert (await client.get("/v1/webhooks")).json()["data"] == []


async def test_unknown_ids_and_scopes(client: httpx.AsyncClient, receiver: Receiver) -> None:
    for path in (
        "/v1/webhooks/whe_00000000000000000000000000",
        "/v1/webhooks/nope",
        "/v1/webhooks/whe_00000000000000000000000000/deliveries",
    ):
        response = await client.get(path)
        assert response.status_code in (404, 422), response.text
        assert response.headers["content-type"].startswith(PROBLEM)
    made = await client.post(
        "/v1/management-keys", json={"name": "reader", "scopes": ["webhooks:read"]}
    )
    reader = {"Authorization": f"Bearer {made.json()['key']}"}
    assert (await client.get("/v1/webhooks", headers=reader)).status_code == 200
    refused = await client.post(
        "/v1/webhooks", json={"url": receiver.url, "events": ["ping"]}, headers=reader
    )
    assert refused.status_code == 403


async def test_an_email_endpoint_gets_its_events_by_mail(
    client: httpx.AsyncClient, inbox: tuple[Inbox, int]
) -> None:
    created = await client.post(
        "/v1/webhooks",
        json={"kind": "email", "url": "security@example.com", "events": ["key.revoked"]},
    )
    assert created.status_code == 201, created.text
    key = (await client.post("/v1/keys", json={"name": "acme"})).json()
    revoked = await client.delete(f"/v1/keys/{key['data']['id']}")
    assert revoked.status_code == 200, revoked.text
    await drain(client)
    mails, _port = inbox
    assert len(mails.envelopes) == 1
    message = mails.parsed()
    assert message["To"] == "security@example.com"
    assert "key.revoked" in message["Subject"]
    assert key["key"] not in mails.envelopes[0].content.decode()


async def test_budget_alerts_reach_the_endpoints(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    created = await client.post("/v1/webhooks", json={"url": receiver.url, "events": ["budget.*"]})
    secret = created.json()["data"]["secret"]
    policy = {"budget": {"credit_limit": 10, "reset": "monthly", "alert_thresholds": [0.5]}}
    key = await client.post("/v1/keys", json={"name": "b", "owner": "c1", "policy": policy})
    key_id = key.json()["data"]["id"]
    for number, cost in enumerate([4, 2, 5]):
        report = {"key_id": key_id, "request_id": f"r{number}", "cost": cost}
        assert (await client.post("/v1/usage", json=report)).status_code == 201
    await drain(client)
    got = receiver.verified(secret)
    bodies = sorted((json.loads(one.body) for one in got), key=lambda body: body["type"])
    assert [body["type"] for body in bodies] == ["budget.exhausted", "budget.threshold_crossed"]
    crossed = bodies[1]["data"]
    assert crossed["id"] == key_id and crossed["owner"] == "c1"
    assert crossed["threshold"] == 0.5 and crossed["credit_limit"] == "10.0"
    assert bodies[0]["data"]["spent"] == "11.0"
    assert key.json()["key"] not in b"".join(one.body for one in got).decode()
