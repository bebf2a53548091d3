"""Benchmark: how long folding a backlog of wide pending rows holds the event loop.

The ledger keeps one ``usage_analytics_pending`` row per group commit, and a group commit holds
up to ``KEYPLANE_USAGE_BATCH_MAX`` reports, each its own (key, minute, model, feature) cell at
worst. A fold decodes and merges the rows it takes on the event loop, so what one fold
transaction takes bounds how long every other request waits (``FOLD_BUDGET``).

For each backend this writes ``--rows`` group commits of ``--width`` reports, every report a
distinct cell (``--keys`` keys, distinct models and features, within the per-key cap), folds
them while a ticker measures the event loop's longest stall, then does the same with the
budget lifted (one transaction takes ``FOLD_CHUNK`` pending rows whatever their width). It
prints the longest stall and the fold's wall time of each, and their ratios. The same
backlog, the same run: only the budget differs. (Pending rows are split at
``PENDING_ROW_CELLS`` cells either way; before that split, a 5,000-report commit was one row.)

Run::

    .venv/bin/python bench/fold_stall.py
    .venv/bin/python bench/fold_stall.py --backends sqlite --rows 100 --width 500
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from datetime import timedelta

# bench/analytics.py: this script's directory is the first entry of sys.path.
from analytics import DEFAULT_POSTGRES_URL, NOW, ROOT_KEY, SECRET, database, progress

from keyplane.domain import ids
from keyplane.domain.tenancy import Principal
from keyplane.domain.usage import UsageEntry
from keyplane.services.keys import NewKey
from keyplane.services.runtime import Runtime
from keyplane.settings import Settings
from keyplane.store import analytics as store_analytics


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--database-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--rows", type=int, default=40, help="group commits (40)")
    parser.add_argument("--width", type=int, default=500, help="reports (cells) per commit")
    parser.add_argument("--keys", type=int, default=50, help="keys the reports spread over")
    return parser.parse_args()


async def backlog(runtime: Runtime, keys: list[str], rows: int, width: int, seed: int) -> None:
    """``rows`` group commits of ``width`` reports, each report a cell of its own."""
    org_id = runtime.default_project.org_id
    for row in range(rows):
        entries = []
        for n in range(width):
            cell = row * width + n
            entries.append(
                UsageEntry(
                    id=ids.new_id("use"),
                    org_id=org_id,
                    key_id=keys[cell % len(keys)],
                    idempotency_key=f"{seed}-{cell}",
                    fingerprint="f" * 64,
                    request_id=None,
                    # Models and features within the per-key cap: every cell a row of its own.
                    model=f"model-{cell // len(keys) % 90}",
                    feature=f"feature-{cell // len(keys) // 90 % 90}",
                    cost_micros=1000,
                    input_tokens=10,
                    output_tokens=20,
                    latency_ms=cell % 900,
                    status=200,
                    recorded_at=NOW - timedelta(minutes=cell % 600),
                )
            )
        await runtime.store.usage.record(entries)


async def fold_with_ticker(runtime: Runtime) -> tuple[float, float]:
    """Fold everything pending; the longest event-loop stall meanwhile and the wall time."""
    longest = 0.0
    folding = True

    async def ticker() -> None:
        nonlocal longest
        last = time.perf_counter()
        while folding:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            longest = max(longest, now - last)
            last = now

    ticking = asyncio.create_task(ticker())
    started = time.perf_counter()
    await runtime.store.analytics.fold(wait=False)
    wall = time.perf_counter() - started
    folding = False
    await ticking
    return longest, wall


async def measure(db: dict[str, object], args: argparse.Namespace) -> None:
    runtime = await Runtime.start(
        Settings(
            **db,  # type: ignore[arg-type]
            secret=SECRET,
            root_key=ROOT_KEY,
            rollup_fold_seconds=3600,  # only this bench folds
            rollup_flush_seconds=3600,
            rollup_prune_seconds=86_400,
        )
    )
    try:
        principal = Principal("mk_bench", runtime.default_project.org_id, None, ("*",))
        keys = [
            (
                await runtime.services.keys.create(
                    principal, NewKey(name=f"k{i}", project_id=runtime.default_project.id)
                )
            ).record.id
            for i in range(args.keys)
        ]
        budget = store_analytics.FOLD_BUDGET
        results = {}
        for seed, (label, value) in enumerate((("budget", budget), ("no budget", 10**12))):
            progress(f"{label}: writing {args.rows} x {args.width} cells")
            await backlog(runtime, keys, args.rows, args.width, seed)
            # As the server does (KEYPLANE_GC_FREEZE): a full collection does not walk what
            # lives as long as the process, so it is not counted as the fold's stall.
            gc.collect()
            gc.freeze()
            store_analytics.FOLD_BUDGET = value
            try:
                results[label] = await fold_with_ticker(runtime)
            finally:
                store_analytics.FOLD_BUDGET = budget
                gc.unfreeze()
        (stall, wall), (peer_stall, peer_wall) = results["budget"], results["no budget"]
        cells = args.rows * args.width
        print(f"  {args.rows} group commits x {args.width} reports, each its own cell ({cells:,})")
        print(
            f"  longest event-loop stall: budget {stall * 1000:.1f} ms, "
            f"no budget {peer_stall * 1000:.1f} ms, ratio {stall / peer_stall:.2f}"
        )
        print(
            f"  fold wall time: budget {wall:.2f} s, no budget {peer_wall:.2f} s, "
            f"ratio {wall / peer_wall:.2f}"
        )
    finally:
        await runtime.stop()


async def main() -> None:
    args = parse_args()
    for backend in [name.strip() for name in args.backends.split(",") if name.strip()]:
        print(f"\n== {backend}")
        async with database(backend, args.database_url) as db:
            await measure(db, args)


if __name__ == "__main__":
    asyncio.run(main())
