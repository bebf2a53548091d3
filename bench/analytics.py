"""Benchmark of the analytics rollups. Prints figures; asserts nothing about timings.

Two measurements per backend (SQLite in a temp dir, PostgreSQL in a fresh schema), in process:

1. **Usage-report throughput with rollups on vs off.** A runtime with
   ``KEYPLANE_ROLLUPS_ENABLED=false`` and one with it true take turns on the same database
   (off then on, then on then off, ...), each round ``--clients`` concurrent reporters calling
   ``services.usage.report`` for ``--duration`` seconds (the ledger's group commit, as
   ``POST /v1/usage`` drives it, without HTTP). It prints reports per second per round, the
   ratio on/off of each round and their median (the floor is the "off" figure of the same
   round), and this process's CPU per report. The goal of issue 14 is a ratio >= 0.90.
   With rollups on, the ledger keeps one pending row per group commit and the runtime's
   folding loop runs as in service (``KEYPLANE_ROLLUP_FOLD_SECONDS``); each round's time
   includes folding what it left pending, so the rate covers the whole way into the rollups.
   As the server does, each runtime runs with its long-lived objects frozen out of the
   garbage collector's sight (``gc.freeze``), and the tables are analyzed after one
   unmeasured round each way (a database in service has planner statistics).

2. **Analytics query latency on a key with 10M usage events.** The big key is built in
   seconds (``bench/_analytics_fill.py``): its rollups are bulk-written from one hour's
   events counted in Python and repeated over the 720 hours of the window, and its raw
   events are generated inside the database (``--no-raw-events`` skips them; the query
   never reads them, and the raw events take minutes to write). A small key gets
   ``--small-events`` (1000) events through the real ledger path. Then
   ``GET /v1/keys/{id}/analytics?period=30d&granularity=hour`` on both keys and
   ``GET /v1/keys/{id}`` (the app's own cost for one read, the floor) are called
   ``--queries`` times, interleaved, over in-process HTTP (httpx's ASGI transport, the whole
   app): p50/p99 and CPU per request of each, and the ratios. Goal: p99 <= 50 ms.

Run::

    .venv/bin/python bench/analytics.py                         # both backends
    .venv/bin/python bench/analytics.py --backends sqlite --no-raw-events --duration 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import os
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import _analytics_fill
import asyncpg
import httpx

from keyplane.api.app import create_app
from keyplane.domain import ids
from keyplane.domain.clock import ManualClock
from keyplane.domain.tenancy import Principal
from keyplane.domain.usage import UsageEntry
from keyplane.services.keys import NewKey
from keyplane.services.runtime import Runtime
from keyplane.services.usage import UsageReport
from keyplane.settings import Settings

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
ROOT_KEY = "kp-bench-root-" + "r" * 32
SECRET = "kp-bench-secret-" + "s" * 32
NOW = datetime(2026, 3, 31, 12, 0, tzinfo=UTC)


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark Keyplane's analytics rollups.")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--database-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--clients", type=int, default=32, help="concurrent reporters (32)")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per round (3)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of off+on (3)")
    parser.add_argument("--events", type=int, default=10_000_000, help="events to write (10M)")
    parser.add_argument(
        "--small-events", type=int, default=1000, help="events of the small key (1000)"
    )
    parser.add_argument(
        "--raw-events",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also write the big key's raw usage events (default; slow on PostgreSQL)",
    )
    parser.add_argument("--queries", type=int, default=200, help="analytics queries timed (200)")
    return parser.parse_args()


@contextlib.asynccontextmanager
async def database(backend: str, url: str) -> AsyncIterator[dict[str, object]]:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as workdir:
            yield {"database_url": f"sqlite:///{Path(workdir) / 'analytics-bench.db'}"}
        return
    schema = f"analytics_bench_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
        try:
            yield {"database_url": url, "database_schema": schema}
        finally:
            await conn.execute(f"DROP SCHEMA {schema} CASCADE")
    finally:
        await conn.close()


async def analyze(db: dict[str, object]) -> None:
    """Refresh the planner's statistics (PostgreSQL's ANALYZE, SQLite's ANALYZE)."""
    if "database_schema" in db:
        conn = await asyncpg.connect(
            str(db["database_url"]), server_settings={"search_path": str(db["database_schema"])}
        )
        try:
            await conn.execute("ANALYZE")
        finally:
            await conn.close()
        return
    path = str(db["database_url"]).removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        conn.execute("ANALYZE")


def settings(db: dict[str, object], **overrides: object) -> Settings:
    values = {
        **db,
        "secret": SECRET,
        "root_key": ROOT_KEY,
        "rollup_flush_seconds": 3600,
        "rollup_prune_seconds": 86_400,
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


async def report_round(
    db: dict[str, object], enabled: bool, clients: int, duration: float
) -> tuple[float, int]:
    """Reports per second through the ledger, rollups ``enabled`` or not, and how many."""
    runtime = await Runtime.start(settings(db, rollups_enabled=enabled))
    # As the server does after its runtime starts (api/app.py, KEYPLANE_GC_FREEZE): what
    # lives as long as the process is out of the collector's sight, so a full collection,
    # which allocations trigger, does not walk all of it again.
    gc.freeze()
    try:
        org_id = runtime.default_project.org_id
        principal = Principal("mk_bench", org_id, None, ("*",))
        issued = await runtime.services.keys.create(
            principal, NewKey(name="bench", project_id=runtime.default_project.id)
        )
        key_id = issued.record.id
        numbers = itertools.count()
        done = 0
        deadline = time.perf_counter() + duration

        async def reporter() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                n = next(numbers)
                await runtime.services.usage.report(
                    principal,
                    UsageReport(
                        key_id=key_id,
                        request_id=f"r{enabled}-{n}-{secrets.token_hex(4)}",
                        cost=1000 + n % 97,
                        input_tokens=n % 500,
                        output_tokens=n % 300,
                        model=f"model-{n % 20}",
                        latency_ms=(n * 37) % 3000,
                        status=500 if n % 50 == 0 else 200,
                        feature=f"feature-{n % 5}",
                    ),
                    None,
                )
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(reporter() for _ in range(clients)))
        # Timed too: folding what the round left pending (a no-op with rollups off), so the
        # rate pays for every report's way into the rollups, not only the ledger's part.
        await runtime.store.analytics.fold()
        return done / (time.perf_counter() - started), done
    finally:
        await runtime.stop()
        gc.unfreeze()


async def fill(
    runtime: Runtime, key_id: str, org_id: str, events: int, batch: int, budget: float
) -> int:
    """Write up to ``events`` through the ledger, spread over the 30 days before NOW."""
    # The 30d/hour window is the 720 hours ending with NOW's: its first starts 719 h before.
    start = NOW - timedelta(hours=719)
    step = timedelta(hours=719) / events
    written = 0
    began = time.perf_counter()
    while written < events and time.perf_counter() - began < budget:
        entries = []
        for n in range(written, min(events, written + batch)):
            entries.append(
                UsageEntry(
                    id=ids.new_id("use"),
                    org_id=org_id,
                    key_id=key_id,
                    idempotency_key=f"fill-{n}",
                    fingerprint="f" * 64,
                    request_id=None,
                    model=f"model-{n % 20}",
                    cost_micros=1000 + n % 97,
                    input_tokens=n % 500,
                    output_tokens=n % 300,
                    latency_ms=(n * 37) % 3000,
                    status=500 if n % 50 == 0 else 200,
                    recorded_at=start + step * n,
                    feature=f"feature-{n % 5}",
                )
            )
        await runtime.store.usage.record(entries)
        written += len(entries)
        if written % (batch * 20) == 0:
            progress(f"{written} events written ({time.perf_counter() - began:.0f} s)")
    return written


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def query_latency(db: dict[str, object], args: argparse.Namespace) -> None:
    clock = ManualClock(NOW)
    app = create_app(settings(db), clock=clock)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://keyplane.bench",
            headers={"Authorization": f"Bearer {ROOT_KEY}"},
        ) as client,
    ):
        runtime: Runtime = app.state.runtime
        big = (await client.post("/v1/keys", json={"name": "big analytics bench"})).json()
        small = (await client.post("/v1/keys", json={"name": "small analytics bench"})).json()
        big_id, org_id = big["data"]["id"], big["data"]["org_id"]
        small_id = small["data"]["id"]
        # The 30d/hour window is the 720 hours ending with NOW's: its first starts 719 h before.
        start = NOW - timedelta(hours=719)
        per_hour = -(-args.events // _analytics_fill.HOURS)
        began = time.perf_counter()
        await _analytics_fill.write_rollups(runtime.store.unit, big_id, start, per_hour)
        if args.raw_events:
            await _analytics_fill.write_events(
                runtime.store.unit, org_id, big_id, start, per_hour, progress
            )
        big_events = per_hour * _analytics_fill.HOURS
        print(
            f"  big key: {big_events:,} usage events over 30 days "
            f"({'rollups and raw events' if args.raw_events else 'rollups only'} "
            f"bulk-written in {time.perf_counter() - began:.0f} s)"
        )
        small_events = await fill(runtime, small_id, org_id, args.small_events, 5000, 600.0)
        print(f"  small key: {small_events:,} usage events, written through the ledger")
        targets = {
            "analytics 30d/hour, big key": (
                f"/v1/keys/{big_id}/analytics?period=30d&granularity=hour",
                big_events,
            ),
            "analytics 30d/hour, small key": (
                f"/v1/keys/{small_id}/analytics?period=30d&granularity=hour",
                small_events,
            ),
            "GET /v1/keys/{id} (floor)": (f"/v1/keys/{big_id}", None),
        }
        for path, expected in targets.values():
            response = await client.get(path)
            assert response.status_code == 200, response.text
            if expected is not None:
                total = response.json()["total_requests"]
                assert total == expected, (total, expected)
        for _ in range(5):  # warm up
            for path, _expected in targets.values():
                await client.get(path)
        timings: dict[str, list[float]] = {label: [] for label in targets}
        cpu: dict[str, float] = dict.fromkeys(targets, 0.0)
        for _ in range(args.queries):
            # Interleaved, so that drift in the machine's load hits all three alike.
            for label, (path, _expected) in targets.items():
                started, cpu_started = time.perf_counter(), time.process_time()
                response = await client.get(path)
                timings[label].append((time.perf_counter() - started) * 1000)
                cpu[label] += time.process_time() - cpu_started
                assert response.status_code == 200, response.text
        # CPU time of this process per request (SQLite's thread included, PostgreSQL's server
        # not): what a request costs when it does not wait for a core on a shared machine.
        for label, samples in timings.items():
            print(
                f"  {label:31} p50 {statistics.median(samples):7.2f} ms"
                f"  p99 {percentile(samples, 0.99):7.2f} ms"
                f"  cpu {cpu[label] / args.queries * 1000:6.2f} ms/request"
            )
        big_p99 = percentile(timings["analytics 30d/hour, big key"], 0.99)
        small_p99 = percentile(timings["analytics 30d/hour, small key"], 0.99)
        floor_p99 = percentile(timings["GET /v1/keys/{id} (floor)"], 0.99)
        print(
            f"  big p99 / small p99: {big_p99 / small_p99:.2f}x; "
            f"big p99 / floor p99: {big_p99 / floor_p99:.2f}x (goal: big p99 <= 50 ms)"
        )


async def main() -> None:
    args = parse_args()
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    for backend in [name.strip() for name in args.backends.split(",") if name.strip()]:
        print(f"\n== {backend}")
        async with database(backend, args.database_url) as db:
            # Migrate once before the rounds, then one unmeasured round each way and the
            # planner's statistics: a database in service has been analyzed (autovacuum), and
            # before that PostgreSQL plans the ledger's lookups for empty tables, which made
            # the reports slower for both sides until autovacuum analyzed them mid-run.
            await (await Runtime.start(settings(db))).stop()
            for enabled in (False, True):
                await report_round(db, enabled, args.clients, 1.0)
            await analyze(db)
            off: list[float] = []
            on: list[float] = []
            cpu: dict[bool, list[float]] = {False: [], True: []}
            for round_number in range(args.rounds):
                progress(f"{backend}: round {round_number + 1} of {args.rounds}")
                # Which goes first alternates: drift in the machine's load within a round
                # then favours neither.
                order = (False, True) if round_number % 2 == 0 else (True, False)
                for enabled in order:
                    cpu_started = time.process_time()
                    rate, reports = await report_round(db, enabled, args.clients, args.duration)
                    (on if enabled else off).append(rate)
                    cpu[enabled].append((time.process_time() - cpu_started) / reports * 1000)
            ratios = [o / f for o, f in zip(on, off, strict=True)]
            print(
                f"  usage reports/s, {args.clients} clients, per round: rollups off "
                f"{', '.join(f'{v:,.0f}' for v in off)}; on {', '.join(f'{v:,.0f}' for v in on)}"
            )
            print(
                f"  on / off per round: {', '.join(f'{r:.2f}' for r in ratios)}; "
                f"median {statistics.median(ratios):.2f} (goal >= 0.90)"
            )
            # This process's CPU per report (SQLite's thread included, PostgreSQL's server
            # not), runtime start and stop included: steadier than the rates on a shared box.
            cpu_off, cpu_on = statistics.median(cpu[False]), statistics.median(cpu[True])
            print(
                f"  CPU ms per report (median of rounds): off {cpu_off:.3f}, on {cpu_on:.3f}, "
                f"on / off {cpu_on / cpu_off:.2f}"
            )
        async with database(backend, args.database_url) as db:
            await query_latency(db, args)


if __name__ == "__main__":
    asyncio.run(main())
