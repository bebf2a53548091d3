"""A usage report made on instance A reaches a stream subscriber on instance B: two servers on
one PostgreSQL schema, over Redis pub/sub and, without Redis, over LISTEN/NOTIFY. Real
uvicorn servers (in this event loop), so the Server-Sent Events really stream."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn

from keyplane.api.app import create_app
from tests.conftest import REDIS_URL, ROOT_KEY, free_port, postgres_schema, require_redis
from tests.conftest import Database as Db

#: Generous: two servers, Redis and PostgreSQL on a loaded machine.
DEADLINE = 30.0


@contextlib.asynccontextmanager
async def serving(database: Db, **overrides: object) -> AsyncIterator[str]:
    """A real server for ``database``; yields its base URL."""
    app = create_app(database.settings(**overrides))
    config = uvicorn.Config(
        app, host="127.0.0.1", port=free_port(), log_config=None, lifespan="on", ws="none"
    )
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve())
    deadline = time.monotonic() + DEADLINE
    while not server.started:
        assert not task.done(), "the server stopped while starting"
        assert time.monotonic() < deadline, "the server did not start"
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, DEADLINE)


async def events(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """(event name, data) of each Server-Sent Event; ("comment", text) for comments."""
    name, data = "message", ""
    async for line in response.aiter_lines():
        if line.startswith(":"):
            yield "comment", line[1:].strip()
        elif line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: "):
            data = line[len("data: ") :]
        elif line == "" and data:
            yield name, data
            name, data = "message", ""


@pytest.fixture(params=["redis", "postgres-notify"])
def shared(request: pytest.FixtureRequest) -> tuple[Db, dict[str, object]]:
    with postgres_schema() as schema:
        database = Db("postgres", "postgresql://postgres@127.0.0.1:5432/test", schema)
        if request.param == "redis":
            require_redis()
            yield database, {"redis_url": REDIS_URL}
        else:
            yield database, {}


async def test_a_report_on_instance_a_reaches_a_subscriber_on_instance_b(
    shared: tuple[Db, dict[str, object]],
) -> None:
    database, overrides = shared
    auth = {"Authorization": f"Bearer {ROOT_KEY}"}
    async with (
        serving(database, **overrides) as a_url,
        serving(database, **overrides) as b_url,
        httpx.AsyncClient(base_url=a_url, headers=auth, timeout=DEADLINE) as a,
        httpx.AsyncClient(base_url=b_url, headers=auth, timeout=DEADLINE) as b,
    ):
        created = (await a.post("/v1/keys", json={"name": "k", "owner": "acme"})).json()
        key_id = created["data"]["id"]
        async with (
            b.stream("GET", f"/v1/keys/{key_id}/usage/stream") as one_key,
            b.stream("GET", "/v1/usage/stream?min_cost=1&owner=acme") as expensive,
        ):
            assert one_key.headers["content-type"].startswith("text/event-stream")
            key_events, org_events = events(one_key), events(expensive)
            # The opening comment: subscribed on B before anything is reported on A.
            assert (await anext(key_events))[0] == "comment"
            assert (await anext(org_events))[0] == "comment"
            for n, cost in enumerate((0.5, 2)):
                body = {"key_id": key_id, "request_id": f"r{n}", "cost": cost}
                assert (await a.post("/v1/usage", json=body)).status_code == 201

            async def next_usage(stream: AsyncIterator[tuple[str, str]]) -> dict[str, object]:
                async for name, data in stream:
                    if name == "usage":
                        parsed: dict[str, object] = json.loads(data)
                        return parsed
                raise AssertionError("the stream ended")

            async with asyncio.timeout(DEADLINE):
                first = await next_usage(key_events)
                second = await next_usage(key_events)
                expensive_one = await next_usage(org_events)
        assert (first["request_id"], second["request_id"]) == ("r0", "r1")
        assert first["key_id"] == key_id and first["owner"] == "acme"
        assert expensive_one["request_id"] == "r1"  # the 0.5 credit report was filtered out
        assert created["key"] not in json.dumps([first, second, expensive_one])


async def test_both_sdk_clients_read_the_stream_with_exact_credits(sqlite_database: Db) -> None:
    from decimal import Decimal

    from keyplane.client import AsyncClient, Client

    async with serving(sqlite_database) as url, AsyncClient(url, ROOT_KEY) as keyplane:
        created = await keyplane.keys.create("streamed", owner="acme")
        key_id = created.data.id
        stream = keyplane.usage.stream(key_id=key_id)
        reader = asyncio.ensure_future(anext(stream))
        # The subscription is made when the stream's first line is read: report until the
        # event arrives (each report has its own request id; the first one seen is enough).
        seen = None
        async with asyncio.timeout(DEADLINE):
            n = 0
            while seen is None:
                await keyplane.usage.report(
                    key_id=key_id, request_id=f"r{n}", cost="0.000001", model="m"
                )
                n += 1
                done, _ = await asyncio.wait({reader}, timeout=0.2)
                if done:
                    seen = reader.result()
        await stream.aclose()
        assert seen.key_id == key_id and seen.owner == "acme"
        assert seen.cost == Decimal("0.000001")

        def read_one() -> tuple[str, Decimal]:
            with Client(url, ROOT_KEY) as sync:
                for event in sync.usage.stream(owner="acme", min_cost="2.5"):
                    return event.request_id or "", event.cost
            raise AssertionError("the stream ended")

        sync_reader = asyncio.ensure_future(asyncio.to_thread(read_one))
        async with asyncio.timeout(DEADLINE):
            n = 0
            while not sync_reader.done():
                await keyplane.usage.report(key_id=key_id, request_id=f"cheap{n}", cost=1)
                await keyplane.usage.report(key_id=key_id, request_id=f"big{n}", cost="2.5")
                n += 1
                await asyncio.wait({sync_reader}, timeout=0.2)
        request_id, cost = sync_reader.result()
        assert request_id.startswith("big") and cost == Decimal("2.5")
