"""The ``api-service-handler`` side of bench/vault.py (seed 002's package, from PyPI).

Runs inside that package's own virtualenv (made by bench/vault.py), so it imports nothing
from Keyplane. With ``--module keyplane.compat.api_service_handler.client`` the same script
runs Keyplane's drop-in instead (in Keyplane's virtualenv): the seed's user code with one
import changed, which is what a migrating user runs.

Same workload as the Keyplane side: ``--credentials`` keys of one provider, no limits,
then for each ``--clients`` value that many tasks doing ``use_key`` (acquire, decrypt,
release, record usage) in a loop for ``--duration`` seconds, on its SQLite backend with
encryption on. Prints one JSON object per run on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


async def run(args: argparse.Namespace) -> None:
    handler_class = importlib.import_module(args.module).APIServiceHandler
    with tempfile.TemporaryDirectory(prefix="ash-bench-") as tmp:
        handler = handler_class(
            storage_backend="sqlite",
            connection_string=f"sqlite:///{Path(tmp) / 'ash.db'}",
            encrypt_keys=True,
            shared_secret=os.urandom(24).hex(),
            rotation_strategy=args.strategy,
        )
        await handler.initialize()
        try:
            for index in range(args.credentials):
                await handler.add_key(
                    provider="openai",
                    key_value=f"sk-bench-{index:04d}-" + "x" * 40,
                    alias=f"bench-{index}",
                    environment="production",
                )
            # Warm-up: opens connections, fills any caches.
            for _ in range(20):
                async with handler.use_key(provider="openai", environment="production"):
                    pass
            for clients in args.clients:
                print(json.dumps(await _timed(handler, clients, args.duration)), flush=True)
        finally:
            await handler.close()


async def _timed(handler: Any, clients: int, duration: float) -> dict[str, object]:
    done = 0
    errors: dict[str, int] = {}
    deadline = time.perf_counter() + duration

    async def client() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            try:
                async with handler.use_key(provider="openai", environment="production") as key:
                    assert key.key_value.startswith("sk-bench-")
                done += 1
            except Exception as exc:  # counted and shown: the figure is only valid without
                name = type(exc).__name__
                errors[name] = errors.get(name, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    return {"clients": clients, "ops": done, "seconds": elapsed, "errors": errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--credentials", type=int, default=10)
    parser.add_argument("--clients", type=lambda s: [int(x) for x in s.split(",")], default=[1])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--strategy", default="round_robin")
    parser.add_argument(
        "--module",
        default="api_service_handler.client",
        help="where APIServiceHandler comes from (keyplane.compat.api_service_handler.client)",
    )
    args = parser.parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
