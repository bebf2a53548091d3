"""What the SDK's ``vault.use_key`` costs on top of plain httpx. Prints figures; asserts nothing.

Starts a real ``keyplane serve`` (SQLite in a temporary directory, a random vault master key),
adds ``--credentials`` OpenAI credentials through the SDK, then for ``--duration`` seconds each
leases and releases one credential at a time (latency):

- ``httpx``: ``POST /v1/vault/leases`` then ``DELETE /v1/vault/leases/{id}`` with a plain
  ``httpx.Client``;
- ``sdk``: ``with client.vault.use_key("openai"): ...`` (two calls, pydantic models, the
  outcome bookkeeping);

and with ``--concurrency`` blocks in flight through ``AsyncClient.vault.use_key``
(throughput). A lease is two requests and a database write each; the server dominates. Run::

    .venv/bin/python bench/vault_sdk.py
    .venv/bin/python bench/vault_sdk.py --duration 5 --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import secrets
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from _server import start_server

from keyplane.client import AsyncClient, Client


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--credentials", type=int, default=20)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=8)
    return parser.parse_args()


def report(name: str, latencies: list[float]) -> float:
    ordered = sorted(latencies)
    p50 = ordered[len(ordered) // 2] * 1e6
    p99 = ordered[int(len(ordered) * 0.99)] * 1e6
    rate = len(ordered) / sum(ordered)
    print(f"  {name:<6} sequential: {rate:8.0f} blocks/s  p50 {p50:7.0f} µs   p99 {p99:7.0f} µs")
    return p50


def timed(call: Callable[[], object], seconds: float) -> list[float]:
    latencies = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - start)
    return latencies


def main() -> None:
    args = parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    root_key = "bench-root-" + secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="keyplane-bench-vault-sdk-") as tmp:
        vault_key = base64.b64encode(secrets.token_bytes(32)).decode()
        process, url = start_server(Path(tmp), root_key, KEYPLANE_VAULT_KEY=vault_key)
        try:
            with Client(url, root_key) as sdk:
                sdk.vault.create_many(
                    [
                        {"provider": "openai", "alias": f"c{n}", "secret": f"sk-{n:020d}"}
                        for n in range(args.credentials)
                    ]
                )
            auth = {"Authorization": f"Bearer {root_key}"}
            with httpx.Client(base_url=url, headers=auth) as raw, Client(url, root_key) as sdk:

                def raw_round() -> None:
                    lease = raw.post("/v1/vault/leases", json={"provider": "openai"}).json()
                    raw.request("DELETE", f"/v1/vault/leases/{lease['lease_id']}", json={})

                def sdk_round() -> None:
                    with sdk.vault.use_key("openai"):
                        pass

                raw_p50 = report("httpx", timed(raw_round, args.duration))
                sdk_p50 = report("sdk", timed(sdk_round, args.duration))
            print(f"  SDK overhead, lease+release p50: {sdk_p50 - raw_p50:+.0f} µs per block")

            async def concurrent() -> None:
                async with AsyncClient(url, root_key) as aclient:
                    done = 0
                    end = time.perf_counter() + args.duration

                    async def worker() -> None:
                        nonlocal done
                        while time.perf_counter() < end:
                            async with aclient.vault.use_key("openai"):
                                done += 1

                    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
                    rate = done / args.duration
                    print(f"  sdk    {args.concurrency} blocks in flight: {rate:8.0f} leases/s")

            asyncio.run(concurrent())
        finally:
            process.terminate()
            process.wait(20)


if __name__ == "__main__":
    main()
