"""Cold verify (a cache miss: the key is read from the database) next to its floor.

Keyplane: ``Verifier.verify`` in process on keys none of which is cached (the key cache is
emptied before each round), so every call reads its key through ``store/keys.py``. Floor: the
same row read by one bare statement through the same driver (aiosqlite or asyncpg), on one
connection held open, nothing else. Both are CPU per call from ``time.process_time()`` (the
whole process, the driver's threads included), so other load on the machine mostly cancels
out; medians of ``--rounds`` rounds.

Run::

    .venv/bin/python bench/cold_verify.py                     # SQLite in a temp dir
    .venv/bin/python bench/cold_verify.py --database-url postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from keyplane.domain.crypto import key_digest
from keyplane.services.runtime import Runtime

sys.path.insert(0, str(Path(__file__).resolve().parent))
from verify import (  # bench/verify.py: the database and key helpers
    Target,
    bulk_insert,
    make_target,
    plain_request,
    provisioned,
)

GOAL_US = 500
FLOOR_SQL = (
    "SELECT * FROM api_keys JOIN api_key_secrets ON api_key_secrets.key_id = api_keys.id"
    " WHERE api_key_secrets.hash = {}"
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=10_000, help="keys stored (10000)")
    parser.add_argument("--sample", type=int, default=500, help="keys read per round (500)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temp dir")
    return parser.parse_args()


async def floor_round(runtime: Runtime, digests: list[str]) -> float:
    """CPU µs per bare one-statement read through the driver itself."""
    async with runtime.store.engine.connect() as conn:
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection
        sqlite = runtime.store.engine.dialect.name == "sqlite"
        sql = FLOOR_SQL.format("?" if sqlite else "$1")
        started = time.process_time()
        for digest in digests:
            if sqlite:
                rows = await driver.execute_fetchall(sql, (digest,))
            else:
                rows = [await driver.fetchrow(sql, digest)]
            if not rows or rows[0] is None:
                raise SystemExit("the floor read found no row")
        return (time.process_time() - started) * 1e6 / len(digests)


async def keyplane_round(runtime: Runtime, principal: Any, keys: list[str]) -> float:
    """CPU µs per verify of a key not in the cache."""
    runtime.directory.evict(None)
    verifier = runtime.services.verifier
    started = time.process_time()
    for key in keys:
        verdict = await verifier.verify(principal, plain_request(key))
        if not verdict.valid:
            raise SystemExit(f"bench key did not verify: {verdict.code}")
    return (time.process_time() - started) * 1e6 / len(keys)


async def measure(target: Target, args: argparse.Namespace) -> tuple[list[float], list[float]]:
    runtime = await Runtime.start(target.settings())
    try:
        secret = target.server_secret.encode()
        keys = await bulk_insert(runtime, args.keys, secret)
        principal = await runtime.services.management.authenticate(target.root_key)
        ours, floor = [], []
        for number in range(args.rounds):
            sample = keys[number * args.sample : (number + 1) * args.sample] or keys
            ours.append(await keyplane_round(runtime, principal, sample))
            floor.append(await floor_round(runtime, [key_digest(secret, k) for k in sample]))
    finally:
        await runtime.stop()
    return ours, floor


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="kp-cold-") as tmp:
        target = make_target(args, Path(tmp))
        with provisioned(target):
            ours, floor = asyncio.run(measure(target, args))
    database = "SQLite" if args.database_url is None else "PostgreSQL"
    mine, bare = statistics.median(ours), statistics.median(floor)
    print(f"cold verify on {database}, {args.keys:,} keys, medians of {args.rounds} rounds of"
          f" {args.sample} keys (CPU per call, whole process)")  # fmt: skip
    print(f"  Keyplane verify, cache miss: {mine:,.0f} µs (goal <= {GOAL_US} µs)")
    print(f"  floor, one bare statement:   {bare:,.0f} µs")
    print(f"  ratio: {mine / bare:.1f}x")


if __name__ == "__main__":
    main()
