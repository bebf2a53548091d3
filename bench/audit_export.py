"""Benchmark of audit log exports: rate and peak memory for a large log. Asserts nothing.

``--entries`` audit entries (default 1,000,000) are bulk-inserted straight into ``audit_log``
of a fresh SQLite file (or the PostgreSQL database of ``--database-url``), in batches, with
the time it takes. Then, for each format of ``--formats``, a fresh process starts the
Keyplane runtime on that database, reads its resident set size while idle, resets the
kernel's high-water mark (``/proc/self/clear_refs``), exports every entry through the same
service the API streams from (``AuditReader.export``, pages of 5,000 entries, include_pii
false), throws the bytes away as they come, and reads the high-water mark again.

Printed for each format, beside a floor measured in the same process:

- export rate (entries/s) next to the rate of reading the same pages from the store without
  writing any file (the floor: what the database and the row mapping cost alone), and
  their ratio;
- peak RSS during the export next to the idle RSS of the same process, and their ratio. A
  streaming export keeps this near 1 whatever ``--entries`` is; holding 1,000,000 entries
  would take gigabytes.

Run::

    .venv/bin/python bench/audit_export.py                          # 1,000,000 on SQLite
    .venv/bin/python bench/audit_export.py --entries 100000 --formats csv
    .venv/bin/python bench/audit_export.py --database-url postgresql://postgres@127.0.0.1/test
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert

from keyplane.domain.tenancy import Principal
from keyplane.services.audit_read import EXPORT_PAGE, AuditQuery
from keyplane.services.runtime import Runtime
from keyplane.settings import Settings, to_async_url
from keyplane.store.audit_query import AuditFilter
from keyplane.store.database import Database
from keyplane.store.migrate import migrate
from keyplane.store.tables import audit_log

BATCH = 10_000
ACTIONS = ("key.created", "key.updated", "key.rotated", "key.revoked", "auth.failed")
SECRET = "bench-server-secret-" + "z" * 24


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


async def _fill(url: str, schema: str | None, entries: int) -> tuple[str, float]:
    """Insert ``entries`` rows for the default org; its id and the seconds it took."""
    settings = Settings(database_url=url, database_schema=schema, secret=SECRET)
    runtime = await Runtime.start(settings)
    org_id = runtime.default_project.org_id
    # Entries the runtime's first start recorded (the default organization) keep their place.
    base = await runtime.store.audit_query.head_seq(org_id)
    await runtime.stop()
    db = Database.from_url(to_async_url(url), schema)
    started = time.perf_counter()
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    try:
        for first in range(base + 1, base + entries + 1, BATCH):
            rows = [
                {
                    "org_id": org_id,
                    "seq": seq,
                    "id": f"aud_{seq:026d}",
                    "occurred_at": t0 + timedelta(seconds=seq),
                    "project_id": None,
                    "actor_type": "management_key",
                    "actor_id": "mk_" + "0" * 26,
                    "actor_name": "ops",
                    "actor_ip": f"203.0.{seq % 256}.{seq % 251}",
                    "actor_user_agent": "curl/8.5.0",
                    "request_id": f"req-{seq}",
                    "action": ACTIONS[seq % len(ACTIONS)],
                    "target_type": "key",
                    "target_id": f"key_{seq % 5000:026d}",
                    "outcome": "success",
                    "details": {"changes": {"name": {"from": f"n{seq}", "to": f"n{seq + 1}"}}},
                    "count": 1,
                    "prev_hash": f"{seq - 1:064x}",
                    "hash": f"{seq:064x}",
                }
                for seq in range(first, min(first + BATCH, base + entries + 1))
            ]
            async with db.engine.begin() as conn:
                await conn.execute(insert(audit_log), rows)
            if (first - base) // BATCH % 20 == 19:
                print(f"  inserted {first - base + len(rows) - 1:,}", file=sys.stderr, flush=True)
    finally:
        await db.close()
    return org_id, time.perf_counter() - started


async def _measure(url: str, schema: str | None, fmt: str) -> dict[str, float]:
    """In this (fresh) process: idle RSS, then one export's rate and peak RSS, then the
    floor (the same pages read without a file)."""
    settings = Settings(database_url=url, database_schema=schema, secret=SECRET)
    runtime = await Runtime.start(settings)
    try:
        reader = runtime.services.audit_read
        store = runtime.store.audit_query
        caller = Principal("root", runtime.default_project.org_id, None, ("*",), is_root=True)
        # Warm up: import pyarrow and open a connection before the idle reading.
        warm = await reader.export(caller, AuditQuery(), fmt)
        async for _ in warm.chunks:
            break
        idle = _rss_kib("VmRSS")
        reset = _reset_peak()
        started = time.perf_counter()
        export = await reader.export(caller, AuditQuery(), fmt)
        size = 0
        async for chunk in export.chunks:
            size += len(chunk)
        seconds = time.perf_counter() - started
        peak = _rss_kib("VmHWM") if reset else _rss_kib("VmRSS")
        head = await store.head_seq(caller.org_id)
        where = AuditFilter(caller.org_id)
        started = time.perf_counter()
        after, read = 0, 0
        while True:
            rows = await store.scan(where, after, head, EXPORT_PAGE)
            read += len(rows)
            if len(rows) < EXPORT_PAGE:
                break
            after = rows[-1]["seq"]
        floor_seconds = time.perf_counter() - started
    finally:
        await runtime.stop()
    return {
        "entries": read,
        "bytes": size,
        "seconds": seconds,
        "floor_seconds": floor_seconds,
        "idle_kib": idle,
        "peak_kib": peak,
        "peak_is_hwm": float(reset),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--formats", default="csv,json,parquet")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--measure", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--schema", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure is not None:  # the child process
        result = asyncio.run(_measure(args.database_url, args.schema, args.measure))
        print(json.dumps(result))
        return
    with tempfile.TemporaryDirectory(prefix="kp-audit-bench-") as workdir:
        url = args.database_url or f"sqlite:///{workdir}/audit.db"
        schema = None
        if url.startswith("postgresql"):
            schema = f"kp_bench_audit_{os.getpid()}"
            asyncio.run(_create_schema(url, schema))
        try:
            asyncio.run(_migrate(url, schema))
            print(f"inserting {args.entries:,} entries ({url.split(':')[0]}) ...", flush=True)
            _, fill_seconds = asyncio.run(_fill(url, schema, args.entries))
            print(
                f"bulk insert: {args.entries:,} entries in {fill_seconds:.1f} s "
                f"({args.entries / fill_seconds:,.0f} entries/s)"
            )
            for fmt in args.formats.split(","):
                command = [sys.executable, __file__, "--measure", fmt, "--database-url", url]
                if schema:
                    command += ["--schema", schema]
                output = subprocess.run(command, capture_output=True, text=True, check=True)
                r = json.loads(output.stdout.strip().splitlines()[-1])
                rate = r["entries"] / r["seconds"]
                floor = r["entries"] / r["floor_seconds"]
                peak_name = "peak RSS (VmHWM)" if r["peak_is_hwm"] else "RSS after"
                print(
                    f"{fmt:8} {r['entries']:,} entries, {r['bytes'] / 1e6:,.1f} MB in "
                    f"{r['seconds']:.1f} s: {rate:,.0f} entries/s | floor (store pages only) "
                    f"{floor:,.0f} entries/s | ratio {rate / floor:.2f}\n"
                    f"{'':8} {peak_name} {r['peak_kib'] / 1024:,.1f} MiB | idle RSS "
                    f"{r['idle_kib'] / 1024:,.1f} MiB | ratio {r['peak_kib'] / r['idle_kib']:.2f}"
                )
        finally:
            if schema:
                asyncio.run(_drop_schema(url, schema))


async def _migrate(url: str, schema: str | None) -> None:
    db = Database.from_url(to_async_url(url), schema)
    try:
        await migrate(db.engine)
    finally:
        await db.close()


async def _create_schema(url: str, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
    finally:
        await conn.close()


async def _drop_schema(url: str, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
    finally:
        await conn.close()


if __name__ == "__main__":
    main()
