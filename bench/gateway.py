"""Benchmark of the gateway paths, in process. Prints figures; asserts nothing about timings.

Against one Keyplane app on a temporary SQLite database (warm key cache, one key, no limits),
for ``--duration`` seconds each, sequentially on one event loop through httpx's ASGI transport:

(a) ``POST /v1/verify`` (the JSON API, for comparison);
(b) ``GET /v1/auth`` (forward auth: key from ``Authorization``, gateway key header, context
    from forwarded headers);
(c) a FastAPI route guarded by ``require_key`` with an in-process verifier (no network hop),
    next to (d) the same route unguarded, so (c) - (d) is the guard's cost.

Run::

    .venv/bin/python bench/gateway.py --duration 3

The ASGI transport costs the same in every case, so the differences are what counts; over a
real network add the HTTP round trip (see bench/verify.py for figures over HTTP).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated

import httpx
from fastapi import Depends, FastAPI

from keyplane.api.app import create_app
from keyplane.integrations import Decision, InProcessVerifier, KeyGuard, install, require_key
from keyplane.services.runtime import Runtime
from keyplane.settings import Settings

ROOT = "bench-root-key-" + "r" * 32


async def rate(label: str, duration: float, call: Callable[[], Awaitable[int]]) -> None:
    for _ in range(50):  # warm up: caches, first-use imports
        assert await call() == 200
    count = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < duration:
        status = await call()
        assert status == 200, status
        count += 1
    print(f"{label:<44} {count / elapsed:>9,.0f} req/s  {elapsed / count * 1e6:>7,.0f} µs/req")


async def main(duration: float) -> None:
    with tempfile.TemporaryDirectory() as workdir:
        settings = Settings(
            database_url=f"sqlite:///{Path(workdir) / 'bench.db'}",
            secret="bench-secret-" + "s" * 32,
            root_key=ROOT,
            log_level="warning",
        )
        app = create_app(settings)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://keyplane.bench",
                headers={"Authorization": f"Bearer {ROOT}"},
            ) as admin,
        ):
            created = await admin.post("/v1/keys", json={"name": "bench", "owner": "cust"})
            key = created.json()["key"]
            runtime: Runtime = app.state.runtime
            guard = KeyGuard(await InProcessVerifier.authenticated(runtime, ROOT))
            service = FastAPI()
            install(service, guard)

            @service.get("/guarded")
            async def guarded(_key: Annotated[Decision, Depends(require_key())]) -> None:
                return None

            @service.get("/open")
            async def open_route() -> None:
                return None

            auth_headers = {
                "Authorization": f"Bearer {key}",
                "X-Keyplane-Gateway-Key": ROOT,
                "X-Forwarded-For": "203.0.113.5",
                "User-Agent": "bench/1",
            }
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=service), base_url="http://service.bench"
            ) as client:

                async def verify() -> int:
                    return (await admin.post("/v1/verify", json={"key": key})).status_code

                async def forward_auth() -> int:
                    return (await admin.get("/v1/auth", headers=auth_headers)).status_code

                async def dependency() -> int:
                    headers = {"Authorization": f"Bearer {key}"}
                    return (await client.get("/guarded", headers=headers)).status_code

                async def unguarded() -> int:
                    return (await client.get("/open")).status_code

                print(f"gateway paths, in process, {duration:g} s each, one warm key")
                await rate("(a) POST /v1/verify", duration, verify)
                await rate("(b) GET /v1/auth", duration, forward_auth)
                await rate("(c) FastAPI route with require_key()", duration, dependency)
                await rate("(d) the same route, unguarded", duration, unguarded)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per figure")
    asyncio.run(main(parser.parse_args().duration))
