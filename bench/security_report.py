"""Benchmark of the security report at scale. Prints figures; asserts nothing about timings.

Builds ``--keys`` keys (1M by default) in a SQLite file (bulk inserts with the stdlib driver
straight into the migrated schema: the report reads rows, it does not care how they came), in
one organization, spread over 4 plans and 6 key policies, both environments, a tenth revoked,
ages up to 400 days, some never used, some expiring soon. Then, on the same runtime and
engine:

- **floor**: a bare ``SELECT id, policy, scopes, last_used_at FROM api_keys`` of the org's
  rows, fetched whole through SQLAlchemy (what any pass over the keys must at least pay);
- **report**: ``services.security_reports.report`` (all categories, default thresholds,
  100 issues listed), as ``GET /v1/reports/security`` calls it.

Each is timed ``--rounds`` times, alternated; the best and median are printed. Goal: the
report under 5 s at 1M keys on SQLite.

Run::

    .venv/bin/python bench/security_report.py
    .venv/bin/python bench/security_report.py --keys 200000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text

from keyplane.domain.clock import ManualClock
from keyplane.domain.security_report import Thresholds
from keyplane.domain.tenancy import Principal
from keyplane.services.runtime import Runtime
from keyplane.settings import Settings

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
_POLICIES = [
    {},
    {"budget": {"credit_limit_micros": 10_000_000, "reset": "monthly"}},
    {"rate_limits": [{"name": "rpm", "limit": 60, "period_seconds": 60}]},
    {"network": {"ip_allow": ["10.0.0.0/8"]}},
    {"budget": {"credit_limit_micros": None}},
    {"models": {"allow": ["gpt-*"]}},
]
_PLANS = [
    {},
    {"budget": {"credit_limit_micros": 50_000_000, "reset": "monthly"}},
    {"rate_limits": [{"name": "rps", "limit": 10, "period_seconds": 1}]},
    {"network": {"origins": ["https://app.example.com"]}},
]


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _when(moment: datetime) -> str:
    # SQLAlchemy's SQLite DateTime storage format (naive UTC), so SQL comparisons order.
    return moment.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def fill(path: Path, org_id: str, project_id: str, count: int) -> None:
    rng = random.Random(7)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous=OFF")
    plan_ids = []
    for index, policy in enumerate(_PLANS):
        plan_id = f"plan_bench{index:020d}"
        plan_ids.append(plan_id)
        conn.execute(
            "INSERT INTO plans (id, org_id, name, description, policy, created_at, updated_at)"
            " VALUES (?, ?, ?, NULL, ?, ?, ?)",
            (plan_id, org_id, f"plan{index}", json.dumps(policy), _when(NOW), _when(NOW)),
        )
    policies = [json.dumps(policy) for policy in _POLICIES]
    scopes = ["[]", '["read"]', '["*"]', '["read:*"]']
    key_sql = (
        'INSERT INTO api_keys (id, org_id, project_id, hash, start, "end", name, environment,'
        " tags, metadata, scopes, status, expires_at, created_at, updated_at, last_used_at,"
        " plan_id, policy) VALUES (?, ?, ?, ?, ?, ?, ?, ?, '[]', '{}', ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    hash_sql = (
        "INSERT INTO api_key_secrets (hash, key_id, created_at, valid_until) VALUES (?, ?, ?, NULL)"
    )
    batch = 50_000
    for start in range(0, count, batch):
        keys = []
        secrets_ = []
        for number in range(start, min(start + batch, count)):
            key_id = f"key_{number:026d}"
            digest = f"{number:064x}"
            created = NOW - timedelta(days=rng.randrange(400), seconds=rng.randrange(86400))
            rotated = created + timedelta(days=rng.randrange(30)) if number % 3 else created
            used = None if number % 5 == 0 else NOW - timedelta(days=rng.randrange(200))
            expires = NOW + timedelta(days=rng.randrange(1, 60)) if number % 17 == 0 else None
            keys.append(
                (
                    key_id,
                    org_id,
                    project_id,
                    digest,
                    "kp_live_abcd",
                    "wxyz",
                    f"key {number}",
                    "live" if number % 4 else "test",
                    scopes[number % len(scopes)],
                    "revoked" if number % 10 == 0 else "active",
                    None if expires is None else _when(expires),
                    _when(created),
                    _when(rotated),
                    None if used is None else _when(used),
                    plan_ids[number % len(plan_ids)] if number % 2 else None,
                    policies[number % len(policies)],
                )
            )
            secrets_.append((digest, key_id, _when(min(rotated, NOW))))
        conn.executemany(key_sql, keys)
        conn.executemany(hash_sql, secrets_)
        conn.commit()
        progress(f"{min(start + batch, count)} keys written")
    conn.execute("ANALYZE")
    conn.commit()
    conn.close()


async def floor(runtime: Runtime, org_id: str) -> float:
    started = time.perf_counter()
    async with runtime.store.unit.read() as conn:
        rows = (
            await conn.execute(
                text("SELECT id, policy, scopes, last_used_at FROM api_keys WHERE org_id = :org"),
                {"org": org_id},
            )
        ).all()
    elapsed = time.perf_counter() - started
    assert rows
    return elapsed


async def report(runtime: Runtime, principal: Principal) -> tuple[float, int, dict[str, int]]:
    started = time.perf_counter()
    result = await runtime.services.security_reports.report(principal, Thresholds(), limit=100)
    return time.perf_counter() - started, result.keys_scanned, result.counts


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="kp-report-bench-") as tmp:
        path = Path(tmp) / "keyplane.db"
        settings = Settings(  # type: ignore[call-arg]
            database_url=f"sqlite:///{path}",
            secret=os.urandom(24).hex(),
            root_key="bench-root-" + os.urandom(16).hex(),
            last_used_flush_seconds=3600,
            audit_flush_seconds=3600,
        )
        runtime = await Runtime.start(settings, clock=ManualClock(NOW))
        project = runtime.default_project
        await runtime.stop()
        started = time.perf_counter()
        fill(path, project.org_id, project.id, args.keys)
        progress(f"filled {args.keys} keys in {time.perf_counter() - started:.1f} s")
        runtime = await Runtime.start(settings, clock=ManualClock(NOW))
        principal = Principal("mk_bench", project.org_id, None, ("*",), name="bench")
        try:
            floors, reports = [], []
            counts: dict[str, int] = {}
            scanned = 0
            for _ in range(args.rounds):
                floors.append(await floor(runtime, project.org_id))
                elapsed, scanned, counts = await report(runtime, principal)
                reports.append(elapsed)
            print(f"load average at start: {os.getloadavg()[0]:.2f}; SQLite; {args.keys} keys")
            print(
                f"  floor (bare SELECT of 4 columns)  best {min(floors):6.2f} s"
                f"  median {statistics.median(floors):6.2f} s"
            )
            print(
                f"  security report                   best {min(reports):6.2f} s"
                f"  median {statistics.median(reports):6.2f} s  (goal < 5 s)"
            )
            ratio = statistics.median(reports) / statistics.median(floors)
            print(f"  ratio report/floor (medians)      {ratio:6.2f}")
            print(f"  keys scanned {scanned}; counts {counts}")
        finally:
            await runtime.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
