"""Listing keys with a metadata filter at 1k and at 100k keys, next to the JSON scan it replaced.

Keyplane: ``KeyStore.list_page`` (what ``GET /v1/keys?metadata.a.b=v`` runs), a page of 50,
reading the metadata index (store/key_metadata.py). Peer, in the same run on the same data:
the same page selected by the JSON scan that served metadata filters before the index
(``json_extract`` / ``#>>`` on every key of the organization, ``unit.metadata_text``). Wall
time per call, p99 over ``--calls`` calls per filter, the median over ``--rounds`` rounds;
the goal is a flat p99 (at most 50 ms at 100k keys), so the figure that matters most is the
ratio 100k / 1k, which other load on the machine mostly cancels out of.

Run::

    .venv/bin/python bench/list_metadata.py                 # SQLite in a temp dir
    .venv/bin/python bench/list_metadata.py --database-url postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, text

from keyplane.domain import ids
from keyplane.services.runtime import Runtime
from keyplane.store.key_metadata import index_rows
from keyplane.store.keys import KeyFilter
from keyplane.store.tables import api_key_metadata, api_keys
from keyplane.store.unit import metadata_text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from verify import Target, provisioned  # bench/verify.py: the database helpers

GOAL_MS = 50
ROOT_KEY = "kp-bench-root-" + "r" * 32
PAGE = 50
INSERT_CHUNK = 2_000
#: The median of the latest p99_ms run, per (organization, filter): what a typical call costs
#: when the p99 mostly measures the machine's other load.
LAST_MEDIAN: dict[tuple[str, str], float] = {}
TIERS = ("free", "pro", "team", "enterprise")

#: Two values each held by many keys but never together: the hardest page, read by merging
#: the two filters' ranges of the index (see docs/performance.md).
DISJOINT = "two common filters, disjoint"

#: name -> the filter; every key n has tier TIERS[n % 4], region eu (odd n) or us, customer n.
FILTERS: dict[str, tuple[tuple[tuple[str, ...], str], ...]] = {
    "no match": ((("billing", "tier"), "none"),),
    "one key": ((("customer",), "cust-7"),),
    "half the keys": ((("region",), "eu"),),
    "two filters, a quarter": ((("region",), "eu"), (("billing", "tier"), "pro")),
    "common and rare filter": ((("region",), "eu"), (("customer",), "cust-7")),
    DISJOINT: ((("region",), "eu"), (("billing", "tier"), "free")),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=1_000, help="keys of the small org (1000)")
    parser.add_argument("--large", type=int, default=100_000, help="keys of the large org")
    parser.add_argument("--calls", type=int, default=100, help="calls per filter per round")
    parser.add_argument("--peer-calls", type=int, default=10, help="JSON-scan calls per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temp dir")
    parser.add_argument("--schema-prefix", default="kp_bench_", help="PostgreSQL schema prefix")
    return parser.parse_args()


def metadata_of(number: int) -> dict[str, Any]:
    return {
        "billing": {"tier": TIERS[number % len(TIERS)]},
        "region": "eu" if number % 2 else "us",
        "customer": f"cust-{number}",
    }


def rows(org_id: str, project_id: str, count: int) -> Iterator[tuple[dict[str, Any], list[Any]]]:
    """``(api_keys row, its index rows)`` for ``count`` active keys."""
    now = datetime.now(UTC)
    for number in range(count):
        key_id, meta = ids.new_id("key"), metadata_of(number)
        key_row = {
            "id": key_id,
            "org_id": org_id,
            "project_id": project_id,
            "hash": secrets.token_hex(32),
            "start": "kp_bench",
            "end": "abcd",
            "name": f"bench key {number}",
            "environment": "live",
            "tags": [],
            "meta": meta,
            "scopes": [],
            "policy": {},
            "status": "active",
            "created_at": now,
            "updated_at": now,
        }
        yield key_row, index_rows(key_id, org_id, meta)


async def fill(runtime: Runtime, org_id: str, project_id: str, count: int) -> None:
    generated = rows(org_id, project_id, count)
    async with runtime.store.engine.begin() as conn:
        while chunk := list(itertools.islice(generated, INSERT_CHUNK)):
            await conn.execute(insert(api_keys), [key for key, _ in chunk])
            await conn.execute(insert(api_key_metadata), [r for _, index in chunk for r in index])


async def p99_ms(runtime: Runtime, org_id: str, name: str, calls: int) -> float:
    """p99 wall ms of ``list_page`` with the filter ``name``."""
    keys, now, filters = runtime.store.keys, datetime.now(UTC), KeyFilter(metadata=FILTERS[name])
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        await keys.list_page(org_id, filters, now, None, PAGE)
        times.append(time.perf_counter() - started)
    LAST_MEDIAN[(org_id, name)] = statistics.median(times) * 1000
    return statistics.quantiles(times, n=100)[98] * 1000 if calls > 1 else times[0] * 1000


async def scan_p99_ms(runtime: Runtime, org_id: str, name: str, calls: int) -> float:
    """p99 wall ms of the same page selected by the JSON scan (the peer)."""
    sqlite = runtime.store.engine.dialect.name == "sqlite"
    conditions = [api_keys.c.org_id == org_id]
    conditions += [
        metadata_text(api_keys.c.meta, path, is_sqlite=sqlite) == value
        for path, value in FILTERS[name]
    ]
    query = select(api_keys).where(*conditions).order_by(api_keys.c.id).limit(PAGE)
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        async with runtime.store.engine.connect() as conn:
            (await conn.execute(query)).all()
        times.append(time.perf_counter() - started)
    return max(times) * 1000  # few calls: the slowest stands for the p99


async def measure(target: Target, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    runtime = await Runtime.start(target.settings())
    try:
        large = runtime.default_project
        small_org, small_project = await runtime.store.tenancy.create_organization(
            "small", datetime.now(UTC)
        )
        await fill(runtime, large.org_id, large.id, args.large)
        await fill(runtime, small_org.id, small_project.id, args.small)
        if runtime.store.engine.dialect.name == "postgresql":
            # What autovacuum would have done by now on a real database after this many
            # inserts: the statistics, and the visibility map that lets a metadata filter
            # read the index alone (an index-only scan) rather than visit each key's row.
            async with runtime.store.engine.connect() as conn:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.execute(text("VACUUM ANALYZE"))
        figures: dict[str, dict[str, list[float]]] = {
            name: {"small": [], "large": [], "scan small": [], "scan large": [], "p50": []}
            for name in FILTERS
        }
        for _ in range(args.rounds):
            for name, runs in figures.items():
                runs["small"].append(await p99_ms(runtime, small_org.id, name, args.calls))
                runs["large"].append(await p99_ms(runtime, large.org_id, name, args.calls))
                runs["p50"].append(LAST_MEDIAN[(large.org_id, name)])
                runs["scan small"].append(
                    await scan_p99_ms(runtime, small_org.id, name, args.peer_calls)
                )
                runs["scan large"].append(
                    await scan_p99_ms(runtime, large.org_id, name, args.peer_calls)
                )
    finally:
        await runtime.stop()
    return {
        name: {run: statistics.median(values) for run, values in runs.items()}
        for name, runs in figures.items()
    }


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="kp-list-") as tmp:
        if args.database_url is None:
            target = Target(f"sqlite:///{Path(tmp) / 'bench.db'}", None, "s" * 64, ROOT_KEY)
        else:
            schema = f"{args.schema_prefix}{secrets.token_hex(6)}"
            target = Target(args.database_url, schema, "s" * 64, ROOT_KEY)
        with provisioned(target):
            figures = asyncio.run(measure(target, args))
    database = "SQLite" if args.database_url is None else "PostgreSQL"
    print(f"list keys with a metadata filter on {database}, a page of {PAGE}; p99 wall ms,"
          f" medians of {args.rounds} rounds ({args.calls} calls; JSON scan: slowest of"
          f" {args.peer_calls})")  # fmt: skip
    small, large = f"{args.small // 1000}k", f"{args.large // 1000}k"
    scan = f"scan {large}"
    p50 = f"p50 {large}"
    print(f"  {'filter':30} {small:>8} {large:>8} {'ratio':>6}   {scan:>10} {'index/scan':>10}"
          f" {p50:>9}")  # fmt: skip
    for name, f in figures.items():
        print(f"  {name:30} {f['small']:8.2f} {f['large']:8.2f} {f['large'] / f['small']:5.1f}x"
              f"   {f['scan large']:10.1f} {f['large'] / f['scan large']:9.3f}x"
              f" {f['p50']:9.2f}")  # fmt: skip
    worst = max(f["large"] for f in figures.values())
    print(f"  worst p99 at {large}: {worst:.2f} ms (goal <= {GOAL_MS} ms)")


if __name__ == "__main__":
    main()
