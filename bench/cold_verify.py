"""Cold verify (a cache miss: the key is read from the database) next to its floor.

Keyplane: ``Verifier.verify`` in process on keys none of which is cached (the key cache is
emptied before each round), so every call reads its key through the lean read path
(``store/lean.py``), for plain keys and for keys with the fully loaded policy of
``bench/verify.py``. Beside it, each read alone: the lean read (``LeanKeyReads``) and the ORM
read it replaced (``SqlKeyStore.find_by_secret``, still the reference). Floor: the same row
read by one bare statement through the same driver (aiosqlite or asyncpg), on one connection
held open, nothing else. All are CPU per call from ``time.process_time()`` (the whole
process, the driver's threads included; PostgreSQL's own server CPU is not in it), so other
load on the machine mostly cancels out; medians and bests of ``--rounds`` rounds, interleaved
(on a loaded machine the best round is the steadier figure: contention only ever adds).

Run::

    .venv/bin/python bench/cold_verify.py                     # SQLite in a temp dir
    .venv/bin/python bench/cold_verify.py --database-url postgresql://postgres@127.0.0.1:5432/test
    .venv/bin/python bench/cold_verify.py --database-url sqlite \
        --database-url postgresql://postgres@127.0.0.1:5432/test    # both, one run
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import update

from keyplane.domain.crypto import key_digest
from keyplane.services.runtime import Runtime
from keyplane.services.verify import VerifyRequest
from keyplane.store.tables import api_keys

sys.path.insert(0, str(Path(__file__).resolve().parent))
from verify import (  # bench/verify.py: the database and key helpers
    LOADED_POLICY,
    Target,
    bulk_insert,
    context_request,
    make_target,
    plain_request,
    provisioned,
)

GOAL_US = 500
FLOOR_SQL = (
    "SELECT * FROM api_keys JOIN api_key_secrets ON api_key_secrets.key_id = api_keys.id"
    " WHERE api_key_secrets.hash = {}"
)
#: What each round measures, in the order printed.
FIGURES = (
    "verify, plain key",
    "verify, loaded policy",
    "lean read alone",
    "ORM read alone",
    "floor",
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=10_000, help="keys stored (10000)")
    parser.add_argument("--sample", type=int, default=500, help="keys read per round (500)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--database-url",
        action="append",
        help="repeatable; 'sqlite' (the default) is SQLite in a temp dir",
    )
    return parser.parse_args()


async def per_call(keys: list[str], call: Callable[[str], Awaitable[Any]]) -> float:
    """CPU µs per ``call``, each of which must find something."""
    started = time.process_time()
    for key in keys:
        if not await call(key):
            raise SystemExit("a benchmark read found nothing")
    return (time.process_time() - started) * 1e6 / len(keys)


async def floor_round(runtime: Runtime, digests: list[str]) -> float:
    """CPU µs per bare one-statement read through the driver itself."""
    async with runtime.store.engine.connect() as conn:
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection
        if runtime.store.engine.dialect.name == "sqlite":
            sql = FLOOR_SQL.format("?")
            return await per_call(digests, lambda d: driver.execute_fetchall(sql, (d,)))
        sql = FLOOR_SQL.format("$1")
        return await per_call(digests, lambda d: driver.fetchrow(sql, d))


async def verify_round(
    runtime: Runtime, principal: Any, keys: list[str], request: Callable[[str], VerifyRequest]
) -> float:
    """CPU µs per verify of a key not in the cache."""
    runtime.directory.evict(None)
    verifier = runtime.services.verifier

    async def verify(key: str) -> bool:
        verdict = await verifier.verify(principal, request(key))
        if not verdict.valid:
            raise SystemExit(f"bench key did not verify: {verdict.code}")
        return True

    return await per_call(keys, verify)


async def load_policy(runtime: Runtime, digests: list[str]) -> None:
    """Give the keys of ``digests`` the fully loaded policy of bench/verify.py."""
    async with runtime.store.engine.begin() as conn:
        await conn.execute(
            update(api_keys).where(api_keys.c.hash.in_(digests)).values(policy=LOADED_POLICY)
        )


async def one_round(
    name: str,
    runtime: Runtime,
    principal: Any,
    secret: bytes,
    sample: list[str],
    loaded: list[str],
) -> float:
    """The figure ``name`` (one of FIGURES) over ``sample`` (``loaded`` for loaded policies)."""
    if name == "verify, plain key":
        return await verify_round(runtime, principal, sample, plain_request)
    if name == "verify, loaded policy":
        return await verify_round(runtime, principal, loaded, context_request)
    digests = [key_digest(secret, key) for key in sample]
    if name == "lean read alone":
        return await per_call(digests, runtime.store.key_reads.find_by_secret)
    if name == "ORM read alone":
        return await per_call(digests, runtime.store.keys.find_by_secret)
    return await floor_round(runtime, digests)


async def measure(target: Target, args: argparse.Namespace) -> dict[str, list[float]]:
    runtime = await Runtime.start(target.settings())
    figures: dict[str, list[float]] = {name: [] for name in FIGURES}
    try:
        secret = target.server_secret.encode()
        keys = await bulk_insert(runtime, args.keys, secret)
        principal = await runtime.services.management.authenticate(target.root_key)
        size = args.sample
        loaded = keys[-size:]
        await load_policy(runtime, [key_digest(secret, k) for k in loaded])
        for number in range(args.rounds):
            sample = keys[number * size : (number + 1) * size]
            for name in FIGURES:
                figures[name].append(
                    await one_round(name, runtime, principal, secret, sample, loaded)
                )
    finally:
        await runtime.stop()
    return figures


def report(database: str, args: argparse.Namespace, figures: dict[str, list[float]]) -> None:
    medians = {name: statistics.median(values) for name, values in figures.items()}
    floor = medians["floor"]
    print(f"cold verify on {database}, {args.keys:,} keys, medians of {args.rounds} rounds of"
          f" {args.sample} keys (CPU µs per call, whole process)")  # fmt: skip
    for name in FIGURES:
        goal = f"   (goal <= {GOAL_US} µs)" if name.startswith("verify") else ""
        mid, best, best_floor = medians[name], min(figures[name]), min(figures["floor"])
        print(f"  {name:<22} median {mid:>6,.0f} µs {mid / floor:5.1f}x floor,"
              f" best {best:>6,.0f} µs {best / best_floor:5.1f}x best floor{goal}")  # fmt: skip
    print("  rounds: " + "; ".join(
        f"{name} " + "/".join(f"{v:,.0f}" for v in figures[name]) for name in FIGURES
    ))  # fmt: skip


def main() -> None:
    args = parse_args()
    if args.keys < (args.rounds + 1) * args.sample:
        raise SystemExit("--keys must cover --rounds + 1 samples of --sample keys")
    for url in args.database_url or ["sqlite"]:
        args.database_url = None if url == "sqlite" else url
        with tempfile.TemporaryDirectory(prefix="kp-cold-") as tmp:
            target = make_target(args, Path(tmp))
            if target.schema is not None:
                target = dataclasses.replace(target, schema=f"cold_verify_{secrets.token_hex(6)}")
            with provisioned(target):
                figures = asyncio.run(measure(target, args))
        report("SQLite" if args.database_url is None else "PostgreSQL", args, figures)


if __name__ == "__main__":
    main()
