"""Webhook delivery across real server processes: a kill -9 mid-flight loses no event (it is
delivered at least once, a duplicate under the same webhook-id), and two instances sharing a
PostgreSQL database deliver 1,000 events with no duplicate."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Backend, Server, ServerFactory, make_backend
from tests.webhook_receiver import Receiver, running_receiver

WEBHOOK_ENV = {
    "KEYPLANE_WEBHOOK_ALLOW_HTTP": "true",
    "KEYPLANE_WEBHOOK_ALLOW_NETWORKS": "127.0.0.1/32",
    "KEYPLANE_WEBHOOK_TIMEOUT_SECONDS": "5",
    "KEYPLANE_WEBHOOK_CLAIM_LEASE_SECONDS": "8",
    "KEYPLANE_WEBHOOK_POLL_SECONDS": "0.2",
}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as receiver:
        yield receiver


def subscribe(server: Server, receiver: Receiver) -> str:
    with server.client() as client:
        response = client.post("/v1/webhooks", json={"url": receiver.url, "events": ["key.*"]})
        assert response.status_code == 201, response.text
        secret: str = response.json()["data"]["secret"]
        return secret


async def create_keys(server: Server, count: int, concurrency: int = 16) -> list[str]:
    made: list[str] = []
    gate = asyncio.Semaphore(concurrency)
    async with server.async_client() as client:

        async def one(number: int) -> None:
            async with gate:
                response = await client.post("/v1/keys", json={"name": f"k{number}"})
                assert response.status_code == 201, response.text
                made.append(response.json()["data"]["id"])

        await asyncio.gather(*(one(n) for n in range(count)))
    return made


def wait_for_ids(receiver: Receiver, wanted: set[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with receiver.lock:
            got = {json.loads(one.body)["data"]["id"] for one in receiver.received}
        if wanted <= got:
            return
        time.sleep(0.1)
    raise AssertionError(f"{len(wanted - got)} of {len(wanted)} events never arrived")


async def test_kill_9_mid_delivery_loses_no_event(
    start_server: ServerFactory, backend: Backend, receiver: Receiver
) -> None:
    env = {**backend.env, **WEBHOOK_ENV}
    first = start_server(env)
    secret = subscribe(first, receiver)
    # Every answer takes a while: deliveries are in flight when the instance dies.
    receiver.hang_seconds = 1.0
    receiver.answer(*([None] * 1000))
    keys = await create_keys(first, 30)
    receiver.wait_for(1)
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(30)
    with receiver.lock:
        receiver.script.clear()
    start_server(env)
    wait_for_ids(receiver, set(keys), timeout=120)

    got = receiver.verified(secret)
    by_id: dict[str, set[bytes]] = {}
    for one in got:
        by_id.setdefault(one.headers["webhook-id"], set()).add(one.body)
    # At least once; a repeat is the same event (same id, same body).
    assert len(by_id) == len(keys)
    assert all(len(bodies) == 1 for bodies in by_id.values())


@pytest.fixture
def postgres_backend(tmp_path: Path) -> Iterator[Backend]:
    with make_backend("postgres", tmp_path) as backend:
        yield backend


@pytest.mark.postgres
async def test_two_instances_deliver_a_thousand_events_once_each(
    start_server: ServerFactory, receiver: Receiver, postgres_backend: Backend
) -> None:
    backend = postgres_backend
    # The default claim lease (60 s): the kill -9 tests' short one expired under two suites'
    # load before a slow round was recorded, and the delivery was rightly sent again. Here
    # nothing fails, so nothing may be sent twice.
    env = {
        **backend.env,
        **WEBHOOK_ENV,
        "KEYPLANE_WEBHOOK_WORKERS": "2",
        "KEYPLANE_WEBHOOK_CLAIM_LEASE_SECONDS": None,
    }
    first = start_server(env)
    second = start_server(env)
    secret = subscribe(first, receiver)
    made = await asyncio.gather(create_keys(first, 500), create_keys(second, 500))
    keys = {key for batch in made for key in batch}
    assert len(keys) == 1000
    wait_for_ids(receiver, keys, timeout=240)
    time.sleep(1.0)  # a duplicate would arrive now, not later (nothing is failing)
    got = receiver.verified(secret)
    counts = Counter(one.headers["webhook-id"] for one in got)
    assert len(counts) == 1000
    assert [webhook_id for webhook_id, n in counts.items() if n > 1] == []
    first.stop_cleanly()
    second.stop_cleanly()
