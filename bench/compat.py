"""Benchmark of the compatibility surfaces next to their native equivalents. Prints figures;
asserts nothing about timings.

In process (httpx over ASGI, no network), on SQLite in a temp dir or on PostgreSQL in a fresh
schema, it creates ``--keys`` keys with a budget and records one usage report on each, then
sends ``--requests`` sequential requests to each endpoint and prints mean, p50 and p99
latency per request:

- ``GET /v1/keys/{id}`` vs ``GET /api/v1/keys/{hash}`` (one key with its spending),
- ``GET /v1/keys?limit=100`` vs ``GET /api/v1/keys`` (100 per page) vs
  ``GET /prod/getServiceKeys?limit=100``,
- ``GET /api/v1/keys?offset=<keys - 100>`` (the last page: walks every row before it),
- ``GET /api/v1/key`` presented by an API key.

Run::

    .venv/bin/python bench/compat.py
    .venv/bin/python bench/compat.py --backend postgres --keys 2000 --requests 200
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import httpx

from keyplane.api.app import create_app
from keyplane.settings import Settings

ROOT_KEY = "bench-root-key-" + "r" * 32
SECRET = "bench-server-secret-" + "s" * 32
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


@asynccontextmanager
async def settings_for(backend: str) -> AsyncIterator[Settings]:
    common = {"secret": SECRET, "root_key": ROOT_KEY}
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as directory:
            yield Settings(database_url=f"sqlite:///{directory}/bench.db", **common)  # type: ignore[arg-type]
        return
    schema = f"kp_bench_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(PG_URL)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
        yield Settings(database_url=PG_URL, database_schema=schema, **common)  # type: ignore[arg-type]
    finally:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()


async def timed(client: httpx.AsyncClient, url: str, count: int, **kwargs: object) -> list[float]:
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        response = await client.get(url, **kwargs)  # type: ignore[arg-type]
        samples.append(time.perf_counter() - start)
        assert response.status_code == 200, response.text
    return samples


def line(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"{name:<44} mean {statistics.fmean(samples) * 1000:7.2f} ms   "
        f"p50 {ordered[len(ordered) // 2] * 1000:7.2f} ms   p99 {p99 * 1000:7.2f} ms"
    )


async def run(backend: str, keys: int, requests: int) -> None:
    async with settings_for(backend) as settings:
        app = create_app(settings, on_root_key=lambda _secret: None)
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {ROOT_KEY}"}
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://b", headers=headers) as client,
        ):
            created = []
            for index in range(keys):
                response = await client.post(
                    "/v1/keys",
                    json={"name": f"k{index}", "policy": {"budget": {"credit_limit": 100}}},
                )
                created.append(response.json())
                await client.post(
                    "/v1/usage",
                    json={
                        "key_id": created[-1]["data"]["id"],
                        "cost": 1,
                        "request_id": f"r{index}",
                    },
                )
            key_id = created[-1]["data"]["id"]
            key_hash = created[-1]["data"]["hash"]
            secret = created[-1]["key"]
            print(f"{backend}: {keys} keys, {requests} sequential requests per endpoint")
            cases = [
                ("GET /v1/keys/{id}", f"/v1/keys/{key_id}", {}),
                ("GET /api/v1/keys/{hash}", f"/api/v1/keys/{key_hash}", {}),
                ("GET /v1/keys?limit=100", "/v1/keys?limit=100", {}),
                ("GET /api/v1/keys (100 per page)", "/api/v1/keys", {}),
                ("GET /prod/getServiceKeys?limit=100", "/prod/getServiceKeys?limit=100", {}),
                (
                    f"GET /api/v1/keys?offset={max(0, keys - 100)}",
                    f"/api/v1/keys?offset={max(0, keys - 100)}",
                    {},
                ),
                (
                    "GET /api/v1/key (API key)",
                    "/api/v1/key",
                    {"headers": {"Authorization": f"Bearer {secret}"}},
                ),
            ]
            for name, url, kwargs in cases:
                await timed(client, url, 5, **kwargs)  # warm caches
                print(line(name, await timed(client, url, requests, **kwargs)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=100)
    args = parser.parse_args()
    asyncio.run(run(args.backend, args.keys, args.requests))


if __name__ == "__main__":
    main()
