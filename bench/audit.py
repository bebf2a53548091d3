"""What the audit log costs: management writes with and without the audit writer, and verify
throughput with and without a failed-authentication flood, each pair in the same run.

In process (no HTTP), on SQLite by default or on ``--database-url``:

1. Write latency: rounds of key create + update + revoke, alternating between the runtime as
   built (the audit writer appends each change's entry in its transaction) and the same
   runtime with the audit writer taken off the unit of work. Prints the median latency of
   each operation both ways and the ratio (goal: at most 1.15), and the median ratio of
   each audited round to the unaudited round next to it (steadier on a busy machine).
2. Verify throughput: verifies of a valid key for ``--duration`` seconds, alone, then with
   ``--flood`` failed management authentications interleaved (each one is counted for the
   audit log: a counter increment, written later as a few aggregated entries), and with the
   flood not counted; the three take turns in ten slices. Prints the rates and their ratios
   (goal: a drop of at most 5%), and how many entries the flood made.

Figures depend on the machine; nothing is asserted. Run it on an otherwise idle box.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from keyplane.domain.changes import Origin
from keyplane.domain.tenancy import Principal
from keyplane.errors import AuthenticationError
from keyplane.services.keys import NewKey
from keyplane.services.runtime import Runtime
from keyplane.services.verify import VerifyRequest
from keyplane.settings import Settings


async def write_latency(runtime: Runtime, rounds: int) -> None:
    keys = runtime.services.keys
    caller = Principal(
        "mk_bench", runtime.default_project.org_id, None, ("*",), name="bench",
        origin=Origin.of("203.0.113.7", "bench", None),
    )  # fmt: skip
    writers = runtime.store.unit.journal_writers
    audit_writer = runtime.store.audit.append
    samples: dict[tuple[bool, str], list[float]] = {}
    for index in range(rounds):
        # Alternate, so drift (a warming cache, a growing table) hits both sides alike.
        audited = index % 2 == 0
        if audited and audit_writer not in writers:
            writers.append(audit_writer)
        if not audited and audit_writer in writers:
            writers.remove(audit_writer)
        started = time.perf_counter()
        key_id = (await keys.create(caller, NewKey(name=f"k{index}"))).record.id
        updated = time.perf_counter()
        await keys.update(caller, key_id, {"name": f"u{index}"})
        revoked = time.perf_counter()
        await keys.revoke(caller, key_id, "bench")
        ended = time.perf_counter()
        for op, seconds in (
            ("create", updated - started),
            ("update", revoked - updated),
            ("revoke", ended - revoked),
        ):
            samples.setdefault((audited, op), []).append(seconds)
    if audit_writer not in writers:
        writers.append(audit_writer)
    print(f"management writes, {rounds // 2} rounds each way (median ms):")
    for op in ("create", "update", "revoke"):
        with_audit = statistics.median(samples[(True, op)]) * 1000
        without = statistics.median(samples[(False, op)]) * 1000
        print(
            f"  {op:7s} with audit {with_audit:7.3f}   without {without:7.3f}   "
            f"ratio {with_audit / without:5.3f}  (goal <= 1.15)"
        )
    # Each audited round next to the unaudited round after it: on a busy machine the load
    # moves between rounds far more than the audit costs, and a pair sees the same load.
    rounds_with = [sum(ops) for ops in zip(*(samples[(True, op)] for op in OPS), strict=True)]
    rounds_without = [sum(ops) for ops in zip(*(samples[(False, op)] for op in OPS), strict=True)]
    paired = [a / b for a, b in zip(rounds_with, rounds_without, strict=False)]
    print(
        f"  all three, median of {len(paired)} paired rounds: ratio "
        f"{statistics.median(paired):5.3f}  (goal <= 1.15)"
    )


OPS = ("create", "update", "revoke")


async def verify_throughput(runtime: Runtime, duration: float, flood: int) -> None:
    caller = Principal("mk_bench", runtime.default_project.org_id, None, ("*",), name="bench")
    issued = await runtime.services.keys.create(caller, NewKey(name="verified"))
    request = VerifyRequest(issued.secret)
    verifier = runtime.services.verifier
    management = runtime.services.management
    for _ in range(200):  # warm the cache
        await verifier.verify(caller, request)

    async def run(seconds: float, every: int | None) -> tuple[int, float, int]:
        done = failed = 0
        deadline = time.perf_counter() + seconds
        started = time.perf_counter()
        while time.perf_counter() < deadline:
            await verifier.verify(caller, request)
            done += 1
            if every is not None and done % every == 0:
                origin = Origin.of(f"198.51.100.{failed % 200}", "scanner", None)
                try:
                    await management.authenticate(f"kp_guess_{failed}", origin)
                except AuthenticationError:
                    failed += 1
        return done, time.perf_counter() - started, failed

    # Spread the flood over the run: one failed authentication every ``every`` verifies.
    done, took, _ = await run(min(duration, 1.0), None)
    every = max(1, int(done / took * duration / flood))
    # The three cases take turns in short slices, so a change in the machine's load hits all
    # three alike (the floor: the same flood with nothing counted for the audit log, which
    # is what rejecting the bad tokens costs by itself).
    security = management._security
    totals = {case: [0, 0.0] for case in ("alone", "audited", "unaudited")}
    failures = 0
    slices = 10
    for _ in range(slices):
        for case in totals:
            management._security = None if case == "unaudited" else security
            done, took, failed = await run(duration / slices, None if case == "alone" else every)
            totals[case][0] += done
            totals[case][1] += took
            failures += failed if case == "audited" else 0
    management._security = security
    entries = await runtime.security.flush()
    alone, flooded, unaudited = (int(n) / t for n, t in totals.values())
    print(f"verify throughput, {duration:.0f} s each in {slices} alternating slices:")
    print(f"  alone                         {alone:10.0f} verifies/s")
    print(f"  auth flood, audited           {flooded:10.0f} verifies/s  ({failures} failures)")
    print(f"  auth flood, not audited       {unaudited:10.0f} verifies/s")
    print(f"  ratio flood/alone             {flooded / alone:10.3f}  (goal >= 0.95)")
    print(f"  ratio audited/not audited     {flooded / unaudited:10.3f}  (the audit's share)")
    print(f"  the flood became {entries} audit entries (100 sources kept + 1 overflow)")


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="kp-audit-bench-") as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'keyplane.db'}"
        settings = Settings(  # type: ignore[call-arg]
            database_url=url,
            database_schema=args.schema,
            secret=os.urandom(24).hex(),
            root_key="bench-root-" + os.urandom(16).hex(),
            last_used_flush_seconds=3600,
            audit_flush_seconds=3600,
        )
        runtime = await Runtime.start(settings)
        try:
            print(f"load average at start: {os.getloadavg()[0]:.2f}; database: {url.split(':')[0]}")
            await write_latency(runtime, args.rounds)
            await verify_throughput(runtime, args.duration, args.flood)
        finally:
            await runtime.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--schema", default=None, help="PostgreSQL schema (must exist)")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--flood", type=int, default=10_000)
    args = parser.parse_args()
    if args.rounds < 2:
        parser.error("--rounds: at least 2 (rounds alternate with and without the audit log)")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
