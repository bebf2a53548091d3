"""What the SDK costs on top of plain httpx, for verify. Prints figures; asserts nothing.

Starts a real ``keyplane serve`` (SQLite in a temporary directory, random secret and root
key), creates ``--keys`` API keys through the SDK, then verifies them for ``--duration`` seconds
each way, one call at a time (latency) and with ``--concurrency`` calls in flight (throughput):

- ``httpx``: ``POST /v1/verify`` with a plain ``httpx.Client`` / ``AsyncClient`` and
  ``response.json()``;
- ``sdk``: ``Client.verify`` / ``AsyncClient.verify`` (request building, retry bookkeeping,
  pydantic ``Verdict``).

The difference per call is the SDK's overhead; the server's time dominates both. Run::

    .venv/bin/python bench/sdk.py
    .venv/bin/python bench/sdk.py --duration 5 --concurrency 32
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from _server import start_server

from keyplane.client import AsyncClient, Client


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=50)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=16)
    return parser.parse_args()


def timed_sequential(call: Callable[[str], object], keys: list[str], seconds: float) -> list[float]:
    latencies = []
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:
        start = time.perf_counter()
        call(keys[n % len(keys)])
        latencies.append(time.perf_counter() - start)
        n += 1
    return latencies


async def timed_concurrent(
    call: Callable[[str], Awaitable[object]], keys: list[str], seconds: float, concurrency: int
) -> int:
    done = 0
    end = time.perf_counter() + seconds

    async def worker(offset: int) -> None:
        nonlocal done
        n = offset
        while time.perf_counter() < end:
            await call(keys[n % len(keys)])
            done += 1
            n += concurrency

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return done


def report(name: str, latencies: list[float]) -> float:
    ordered = sorted(latencies)
    p50 = ordered[len(ordered) // 2] * 1e6
    p99 = ordered[int(len(ordered) * 0.99)] * 1e6
    rate = len(ordered) / sum(ordered)
    print(f"  {name:<6} sequential: {rate:8.0f} calls/s   p50 {p50:7.0f} µs   p99 {p99:7.0f} µs")
    return p50


def main() -> None:
    args = parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    root_key = "bench-root-" + secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="keyplane-bench-sdk-") as tmp:
        process, url = start_server(Path(tmp), root_key)
        try:
            with Client(url, root_key) as sdk:
                keys = [sdk.keys.create(f"bench {n}").key for n in range(args.keys)]
            auth = {"Authorization": f"Bearer {root_key}"}
            with httpx.Client(base_url=url, headers=auth) as raw, Client(url, root_key) as sdk:
                raw_p50 = report(
                    "httpx",
                    timed_sequential(
                        lambda k: raw.post("/v1/verify", json={"key": k}).json(),
                        keys,
                        args.duration,
                    ),
                )
                sdk_p50 = report("sdk", timed_sequential(sdk.verify, keys, args.duration))
            print(f"  SDK overhead, sequential p50: {sdk_p50 - raw_p50:+.0f} µs per call")

            async def concurrent() -> None:
                limits = httpx.Limits(max_connections=args.concurrency)
                async with (
                    httpx.AsyncClient(base_url=url, headers=auth, limits=limits) as raw_async,
                    AsyncClient(url, root_key) as sdk_async,
                ):

                    async def raw_call(key: str) -> object:
                        return (await raw_async.post("/v1/verify", json={"key": key})).json()

                    for name, call in (("httpx", raw_call), ("sdk", sdk_async.verify)):
                        done = await timed_concurrent(call, keys, args.duration, args.concurrency)
                        rate = done / args.duration
                        print(f"  {name:<6} {args.concurrency} in flight: {rate:8.0f} calls/s")

            asyncio.run(concurrent())
        finally:
            process.terminate()
            process.wait(20)


if __name__ == "__main__":
    main()
