"""Benchmark of webhooks: what the outbox adds to a key create, and delivery throughput.
Prints figures beside a floor measured in the same run; asserts nothing about timings.

In process, on SQLite in a temp dir or on PostgreSQL in a fresh schema:

1. Key create latency (``KeyService.create``, the whole transaction) in alternating rounds
   with the one endpoint disabled (the outbox's indexed query finds nobody) and enabled
   (subscribed to ``key.created``: one delivery row more per create). The goal is at most
   +10% with the endpoint.
2. Delivery throughput: the deliveries queued by step 1 sent by one ``WebhookDispatcher``
   (claim, sign, POST through the SSRF guard, record the attempt) to a local HTTP receiver,
   next to the floor: the same bodies POSTed to the same receiver with plain httpx, as many
   in flight as the dispatcher's batch.

Run::

    .venv/bin/python bench/webhooks.py
    .venv/bin/python bench/webhooks.py --backend postgres --creates 400 --rounds 6
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import asyncpg
import httpx

from keyplane.domain.tenancy import Principal
from keyplane.services.keys import NewKey
from keyplane.services.runtime import Runtime
from keyplane.services.webhooks import NewEndpoint, WebhookDispatcher
from keyplane.settings import Settings
from keyplane.webhooks import signature_headers

ROOT_KEY = "bench-root-key-" + "r" * 32
SECRET = "bench-server-secret-" + "s" * 32
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


@asynccontextmanager
async def settings_for(backend: str) -> AsyncIterator[Settings]:
    common: dict[str, Any] = {
        "secret": SECRET,
        "root_key": ROOT_KEY,
        "webhook_workers": 0,
        "webhook_allow_http": True,
        "webhook_allow_networks": "127.0.0.1/32",
    }
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as directory:
            yield Settings(database_url=f"sqlite:///{directory}/bench.db", **common)
        return
    schema = f"kp_bench_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(PG_URL)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
        yield Settings(database_url=PG_URL, database_schema=schema, **common)
    finally:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()


@contextmanager
def receiver() -> Iterator[tuple[str, list[int]]]:
    """A local HTTP server answering 200 to every POST; yields its URL and a hit counter."""
    hits = [0]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            hits[0] += 1
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        request_queue_size = 256  # the default backlog (5) resets a burst of connections
        daemon_threads = True

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", hits
    finally:
        server.shutdown()
        server.server_close()


async def create_latencies(runtime: Runtime, caller: Principal, count: int) -> list[float]:
    keys = runtime.services.keys
    spent = []
    for number in range(count):
        started = time.perf_counter()
        await keys.create(caller, NewKey(name=f"k{number}", owner="bench"))
        spent.append(time.perf_counter() - started)
    return spent


async def main(backend: str, creates: int, rounds: int) -> None:
    print(f"backend {backend}, load average {os.getloadavg()[0]:.2f}")
    async with settings_for(backend) as settings:
        runtime = await Runtime.start(settings)
        try:
            await run(runtime, creates, rounds)
        finally:
            await runtime.stop()


async def run(runtime: Runtime, creates: int, rounds: int) -> None:
    org = runtime.default_project.org_id
    caller = Principal("mk_bench", org, None, ("*",), name="bench")
    webhooks = runtime.services.webhooks
    with receiver() as (url, hits):
        endpoint = (
            await webhooks.create(caller, NewEndpoint(url=url, events=("key.created",)))
        ).endpoint
        await create_latencies(runtime, caller, 50)  # warm up (caches, pools, statements)
        without: list[float] = []
        with_endpoint: list[float] = []
        for round_number in range(rounds):
            # Alternating rounds, so drift of the machine's load hits both sides alike.
            enabled = round_number % 2 == 1
            await webhooks.update(caller, endpoint.id, {"enabled": enabled})
            spent = await create_latencies(runtime, caller, creates)
            (with_endpoint if enabled else without).extend(spent)
        await webhooks.update(caller, endpoint.id, {"enabled": True})
        base = statistics.mean(without)
        more = statistics.mean(with_endpoint)
        print("key create (KeyService.create, one transaction), mean / p50:")
        print(
            f"  no subscribed endpoint   {base * 1e3:7.3f} ms / "
            f"{statistics.median(without) * 1e3:7.3f} ms  ({len(without)} creates)"
        )
        print(
            f"  one endpoint subscribed  {more * 1e3:7.3f} ms / "
            f"{statistics.median(with_endpoint) * 1e3:7.3f} ms  ({len(with_endpoint)} creates)"
        )
        print(
            f"  ratio with/without       {more / base:7.3f} (mean), "
            f"{statistics.median(with_endpoint) / statistics.median(without):.3f} (p50)"
            "  (goal: at most 1.10)"
        )

        if runtime.outbound is None:
            raise SystemExit("no outbound guard")
        dispatcher = WebhookDispatcher(
            runtime.store.webhooks,
            runtime.outbound,
            signature_headers,
            runtime.clock,
            SECRET.encode(),
            batch=runtime.settings.webhook_batch,
        )
        started = time.perf_counter()
        sent = 0
        while True:
            done = await dispatcher.run_once()
            if done == 0:
                break
            sent += done
        elapsed = time.perf_counter() - started
        rate = sent / elapsed
        body = b'{"type":"key.created","data":{"id":"key_x"}}' * 8
        in_flight = runtime.settings.webhook_batch
        async with httpx.AsyncClient() as client:
            started = time.perf_counter()
            batches = range(0, sent, in_flight)
            for _ in batches:
                await asyncio.gather(*(client.post(url, content=body) for _ in range(in_flight)))
            floor_elapsed = time.perf_counter() - started
        floor = len(batches) * in_flight / floor_elapsed
        print(f"delivery ({sent} sent, {hits[0]} POSTs received in all):")
        print(f"  dispatcher (claim, sign, guard, record)  {rate:8.0f} deliveries/s")
        print(f"  floor: plain httpx POSTs, {in_flight} in flight   {floor:8.0f} POSTs/s")
        print(f"  ratio dispatcher/floor                   {rate / floor:8.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--creates", type=int, default=200, help="key creates per round")
    parser.add_argument("--rounds", type=int, default=6, help="alternating rounds (even)")
    arguments = parser.parse_args()
    if arguments.rounds < 2:
        parser.error("--rounds: at least 2 (rounds alternate without and with an endpoint)")
    asyncio.run(main(arguments.backend, arguments.creates, arguments.rounds))
