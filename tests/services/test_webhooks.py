"""Webhooks end to end inside one runtime: endpoints, the transactional outbox, signed
deliveries to a real local receiver, retries with growing delays, disabling a failing endpoint,
the delivery log and replay. The clock is injected; the receiver is a real HTTP server."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest

from keyplane.domain import webhook_events
from keyplane.domain.clock import ManualClock
from keyplane.domain.decisions import Code
from keyplane.domain.tenancy import Principal
from keyplane.errors import NotFoundError, PermissionDeniedError, ValidationError
from keyplane.services.keys import NewKey
from keyplane.services.outbound import OutboundGuard
from keyplane.services.runtime import Runtime
from keyplane.services.webhooks import NewEndpoint, WebhookDispatcher, WebhookService
from keyplane.webhooks import signature_headers, verify
from tests.conftest import SERVER_SECRET, Database
from tests.webhook_receiver import Receiver, running_receiver


@dataclass
class Hooks:
    runtime: Runtime
    service: WebhookService
    dispatcher: WebhookDispatcher
    clock: ManualClock
    receiver: Receiver

    async def drain(self) -> None:
        while await self.dispatcher.run_once():
            pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as receiver:
        yield receiver


@pytest.fixture
async def hooks(database: Database, clock: ManualClock, receiver: Receiver) -> AsyncIterator[Hooks]:
    settings = database.settings(
        webhook_workers=0, webhook_allow_http=True, webhook_allow_networks="127.0.0.1/32"
    )
    runtime = await Runtime.start(settings, clock)
    # The real outbound guard, its network allowlisted for the local receiver.
    poster = OutboundGuard.from_settings(settings)
    service = WebhookService(
        runtime.store.webhooks,
        runtime.store.tenancy,
        poster,
        clock,
        SERVER_SECRET.encode(),
        timedelta(hours=24),
    )
    dispatcher = WebhookDispatcher(
        runtime.store.webhooks,
        poster,
        signature_headers,
        clock,
        SERVER_SECRET.encode(),
        timeout=1.0,
        disable_after=timedelta(hours=48),
    )
    try:
        yield Hooks(runtime, service, dispatcher, clock, receiver)
    finally:
        await poster.aclose()
        await runtime.stop()


def admin(runtime: Runtime, *scopes: str) -> Principal:
    return Principal("mk_admin", runtime.default_project.org_id, None, scopes or ("*",), name="ops")


async def test_each_subscribed_key_event_is_delivered_once_and_signed(hooks: Hooks) -> None:
    caller = admin(hooks.runtime)
    issued = await hooks.service.create(
        caller, NewEndpoint(url=hooks.receiver.url, events=("key.*",))
    )
    assert issued.secret.startswith("whsec_")
    keys = hooks.runtime.services.keys
    key = await keys.create(caller, NewKey(name="acme", owner="cust_1"))
    await keys.update(caller, key.record.id, {"name": "acme 2"})
    await keys.disable(caller, key.record.id, "abuse", None)
    await keys.enable(caller, key.record.id)
    rotated = await keys.rotate(caller, key.record.id, timedelta(hours=1))
    await keys.revoke(caller, key.record.id, "gone")
    await hooks.drain()

    got = hooks.receiver.verified(issued.secret, hooks.clock.now())
    # Sent in parallel: arrival order is not promised (the payload's timestamp orders them).
    bodies = sorted((json.loads(one.body) for one in got), key=lambda body: body["type"])
    assert [body["type"] for body in bodies] == [
        "key.created",
        "key.disabled",
        "key.enabled",
        "key.revoked",
        "key.rotated",
        "key.updated",
    ]
    assert len({one.headers["webhook-id"] for one in got}) == 6
    created = bodies[0]["data"]
    assert created["id"] == key.record.id and created["owner"] == "cust_1"
    assert created["start"] == key.record.start and created["end"] == key.record.end
    everything = b"".join(one.body for one in got).decode()
    for secret in (key.secret, rotated.secret, key.record.hash, issued.secret):
        assert secret not in everything
    # Nothing is sent twice.
    await hooks.drain()
    assert len(hooks.receiver.received) == 6


async def test_no_event_without_its_change_and_no_change_without_its_event(hooks: Hooks) -> None:
    caller = admin(hooks.runtime)
    await hooks.service.create(caller, NewEndpoint(url=hooks.receiver.url, events=("key.*",)))
    with pytest.raises(NotFoundError):
        await hooks.runtime.services.keys.revoke(caller, "key_" + "0" * 26, None)
    await hooks.drain()
    types = [json.loads(one.body)["type"] for one in hooks.receiver.received]
    assert types == []


async def test_filters_and_projects_choose_the_endpoints(hooks: Hooks) -> None:
    caller = admin(hooks.runtime)
    other = await hooks.runtime.services.projects.create(caller, "other", "ot")
    await hooks.service.create(
        caller, NewEndpoint(url=hooks.receiver.url + "/revoked", events=("key.revoked",))
    )
    await hooks.service.create(
        caller,
        NewEndpoint(url=hooks.receiver.url + "/other", events=("key.*",), project_id=other.id),
    )
    await hooks.service.create(
        caller, NewEndpoint(url=hooks.receiver.url + "/off", events=("*",), enabled=False)
    )
    keys = hooks.runtime.services.keys
    mine = await keys.create(caller, NewKey(name="default project"))
    theirs = await keys.create(caller, NewKey(name="other project", project_id=other.id))
    await keys.revoke(caller, mine.record.id, None)
    await hooks.drain()
    seen = sorted((one.path, json.loads(one.body)["type"]) for one in hooks.receiver.received)
    assert seen == [("/hook/other", "key.created"), ("/hook/revoked", "key.revoked")]
    assert theirs.record.project_id == other.id


async def test_failures_are_retried_with_growing_delays_under_the_same_id(hooks: Hooks) -> None:
    caller = admin(hooks.runtime)
    issued = await hooks.service.create(
        caller, NewEndpoint(url=hooks.receiver.url, events=("key.created",))
    )
    hooks.receiver.answer(500, 503, None, 500)  # None: hangs past the 1 s timeout
    await hooks.runtime.services.keys.create(caller, NewKey(name="k"))
    delays = []
    for _ in range(4):
        await hooks.drain()
        [delivery] = await hooks.service.deliveries(caller, issued.endpoint.id, None, 10)
        assert delivery.status == "pending" and delivery.next_attempt_at is not None
        delays.append(delivery.next_attempt_at - hooks.clock.now())
        await hooks.drain()  # not due yet: nothing is sent
        hooks.clock.set(delivery.next_attempt_at)
    assert all(later > earlier for earlier, later in itertools.pairwise(delays))
    await hooks.drain()
    [delivery] = await hooks.service.deliveries(caller, issued.endpoint.id, None, 10)
    assert delivery.status == "delivered" and delivery.attempts == 5
    assert [a.status_code for a in delivery.history] == [500, 503, None, 500, 200]
    assert delivery.history[2].error is not None
    got = hooks.receiver.verified(issued.secret)
    assert len(got) == 5 and len({one.headers["webhook-id"] for one in got}) == 1


async def test_an_endpoint_failing_too_long_is_disabled_and_the_others_are_told(
    hooks: Hooks,
) -> None:
    caller = admin(hooks.runtime)
    failing = await hooks.service.create(
        caller, NewEndpoint(url=hooks.receiver.url + "/failing", events=("key.created",))
    )
    watcher = await hooks.service.create(
        caller,
        NewEndpoint(url=hooks.receiver.url + "/watcher", events=("webhook.endpoint.disabled",)),
    )
    hooks.receiver.failing_paths.add("/hook/failing")
    await hooks.runtime.services.keys.create(caller, NewKey(name="k"))
    for _ in range(100):
        await hooks.drain()
        endpoint = await hooks.service.get(caller, failing.endpoint.id)
        [delivery] = await hooks.service.deliveries(caller, failing.endpoint.id, None, 10)
        if not endpoint.enabled or delivery.next_attempt_at is None:
            break
        hooks.clock.set(delivery.next_attempt_at)
    assert not endpoint.enabled and endpoint.disabled_reason == "failing"
    assert endpoint.failing_since is not None
    assert hooks.clock.now() - endpoint.failing_since >= timedelta(hours=48)
    await hooks.drain()
    told = [one for one in hooks.receiver.received if one.path == "/hook/watcher"]
    assert len(told) == 1
    body = json.loads(told[0].body)
    assert body["type"] == "webhook.endpoint.disabled"
    assert body["data"]["id"] == failing.endpoint.id
    # Each endpoint signs with its own secret.
    verify(told[0].body, told[0].headers, watcher.secret, now=hooks.clock.now())


async def test_rotation_signs_with_both_secrets_during_the_overlap(hooks: Hooks) -> None:
    caller = admin(hooks.runtime)
    issued = await hooks.service.create(
        caller, NewEndpoint(url=hooks.receiver.url, events=("ping",))
    )
    rotated = await hooks.service.rotate_secret(caller, issued.endpoint.id)
    assert rotated.secret != issued.secret
    await hooks.service.test(caller, issued.endpoint.id)
    await hooks.drain()
    hooks.receiver.verified(issued.secret, hooks.clock.now())
    hooks.receiver.verified(rotated.secret, hooks.clock.now())
    hooks.clock.advance(25 * 3600)
    await hooks.service.test(caller, issued.endpoint.id)
    await hooks.drain()
    last = hooks.receiver.received[-1]
    assert len(last.headers["webhook-signature"].split()) == 1
    verify(last.body, last.headers, rotated.secret, now=hooks.clock.now())


async def test_replay_sends_the_same_event_again(hooks: Hooks) -> None:
    caller = admin(hooks.runtime)
    issued = await hooks.service.create(
        caller, NewEndpoint(url=hooks.receiver.url, events=("ping",))
    )
    delivery_id = await hooks.service.test(caller, issued.endpoint.id)
    await hooks.drain()
    await hooks.service.replay(caller, issued.endpoint.id, delivery_id)
    await hooks.drain()
    first, second = hooks.receiver.received
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert first.body == second.body
    with pytest.raises(NotFoundError):
        await hooks.service.replay(caller, issued.endpoint.id, "whd_" + "0" * 26)


async def test_bad_endpoints_are_refused(hooks: Hooks) -> None:
    caller = admin(hooks.runtime)
    service = hooks.service
    for url in (
        "ftp://x",
        "http://10.0.0.1/",
        "https://169.254.169.254/",
        "https://[::1]/",
        "https://" + "a" * 3000,
    ):
        with pytest.raises(ValidationError):
            await service.create(caller, NewEndpoint(url=url, events=("ping",)))
    for events in ((), ("key.nope",), ("nope.*",), ("KEY.*",), tuple(["ping"] * 65)):
        with pytest.raises(ValidationError):
            await service.create(caller, NewEndpoint(url=hooks.receiver.url, events=events))
    with pytest.raises(ValidationError):
        await service.create(
            caller, NewEndpoint(url=hooks.receiver.url, events=("ping",), description="x" * 501)
        )
    with pytest.raises(ValidationError):
        await service.create(caller, NewEndpoint(url="not an address", events=("*",), kind="email"))
    with pytest.raises(PermissionDeniedError):
        await service.create(
            admin(hooks.runtime, "keys:write"), NewEndpoint(url=hooks.receiver.url, events=("*",))
        )


async def test_changes_to_endpoints_are_journalled_without_secrets(hooks: Hooks) -> None:
    caller = admin(hooks.runtime)
    watcher = await hooks.service.create(
        caller, NewEndpoint(url=hooks.receiver.url + "/w", events=("webhook.*",))
    )
    other = await hooks.service.create(
        caller, NewEndpoint(url=hooks.receiver.url, events=("ping",))
    )
    await hooks.service.update(caller, other.endpoint.id, {"description": "billing"})
    rotated = await hooks.service.rotate_secret(caller, other.endpoint.id)
    await hooks.service.delete(caller, other.endpoint.id)
    await hooks.drain()
    got = hooks.receiver.verified(watcher.secret, hooks.clock.now())
    # The watcher hears of its own creation as well.
    assert sorted(json.loads(one.body)["type"] for one in got) == [
        "webhook.endpoint.created",
        "webhook.endpoint.created",
        "webhook.endpoint.deleted",
        "webhook.endpoint.secret_rotated",
        "webhook.endpoint.updated",
    ]
    text = b"".join(one.body for one in got).decode()
    assert other.secret not in text and rotated.secret not in text


def test_every_catalogued_event_has_an_example_and_filters_accept_prefixes() -> None:
    assert len(webhook_events.EVENTS) == len(webhook_events.CATALOGUE)
    assert webhook_events.check_filters(["key.*", "vault.credential.*", "*"])
    assert webhook_events.matches(["key.*"], "key.expiring")
    assert not webhook_events.matches(["key.*"], "keyx.created")
    assert not webhook_events.matches(["*"], "ping")
    # The outbox matches in SQL on filters_for: the same answer as matches, for every pair.
    from keyplane.api.webhook_schemas import FILTERS

    for event in webhook_events.EVENTS:
        wanted = webhook_events.filters_for(event)
        assert [f for f in FILTERS if webhook_events.matches([f], event)] == [
            f for f in FILTERS if f in wanted
        ], event


async def test_refusals_are_sent_once_per_key_and_minute(hooks: Hooks) -> None:
    caller = admin(hooks.runtime)
    issued = await hooks.service.create(
        caller, NewEndpoint(url=hooks.receiver.url, events=("rate_limit.exceeded",))
    )
    key = await hooks.runtime.services.keys.create(caller, NewKey(name="busy", owner="c1"))
    tally = hooks.runtime.refusals
    assert tally is not None
    for _ in range(500):
        tally.refused(key.record, Code.RATE_LIMITED, hooks.clock.now())
    tally.refused(key.record, Code.TOKEN_LIMITED, hooks.clock.now())
    tally.refused(key.record, Code.REVOKED, hooks.clock.now())  # not a limit: not counted
    assert await tally.flush() == 0  # the minute is not over
    hooks.clock.advance(60)
    assert await tally.flush() == 1
    await hooks.drain()
    [got] = hooks.receiver.verified(issued.secret)
    data = json.loads(got.body)["data"]
    assert data["id"] == key.record.id and data["refused"] == 501
    assert data["by_code"] == {"RATE_LIMITED": 500, "TOKEN_LIMITED": 1}
    assert key.secret not in got.body.decode()


async def test_key_expiring_is_sent_once_per_key_and_band(hooks: Hooks) -> None:
    caller = admin(hooks.runtime)
    issued = await hooks.service.create(
        caller, NewEndpoint(url=hooks.receiver.url, events=("key.expiring",))
    )
    keys = hooks.runtime.services.keys
    # Both outside every band (30 days at most) when created: the runtime's own loop, whose
    # first pass may still be running on a loaded machine, read the clock before now and
    # finds nothing to send. Its next pass is a minute away; only this test's passes count.
    soon = await keys.create(
        caller, NewKey(name="soon", expires_at=hooks.clock.now() + timedelta(days=31))
    )
    await keys.create(
        caller, NewKey(name="later", expires_at=hooks.clock.now() + timedelta(days=89))
    )
    notices = hooks.runtime.expiry_notices
    assert notices is not None
    hooks.clock.advance(29 * 86400)  # 2 days left (later: 60): the 7-day notice
    assert await notices.run_once() == 1
    assert await notices.run_once() == 0  # once
    hooks.clock.advance(36 * 3600)  # 12 hours left: the 1-day notice
    assert await notices.run_once() == 1
    await hooks.drain()
    got = hooks.receiver.verified(issued.secret)
    days = sorted(json.loads(one.body)["data"]["days"] for one in got)
    assert days == [1, 7]
    assert {json.loads(one.body)["data"]["id"] for one in got} == {soon.record.id}
