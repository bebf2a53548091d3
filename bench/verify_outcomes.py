"""Benchmark of verify-outcome counting: the verify path with it on vs off. Asserts no timings.

Verify outcomes are counted in memory per (key, minute, code) on the verify path and flushed in
batches (``services/analytics.py``); ``KEYPLANE_ROLLUPS_ENABLED=false`` turns the counting off.
Two runtimes on one SQLite database, one with counting off (the floor) and one with it on,
take turns (order alternating per round) verifying ``--verifications`` times, in process
(``Verifier.verify``, no HTTP: the HTTP layer would hide the difference), over ``--keys``
keys so the counts have many rows. It prints verifications per CPU second of each, per
round, and the ratio on/off (goal of issue 14: unchanged within noise), and the cost of the
counting step alone (``VerdictRecorder.record``) next to a bare dict increment.

Run::

    .venv/bin/python bench/verify_outcomes.py
    .venv/bin/python bench/verify_outcomes.py --rounds 5 --verifications 20000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from keyplane.domain.clock import SystemClock
from keyplane.domain.tenancy import Principal
from keyplane.services.analytics import VerdictRecorder
from keyplane.services.keys import NewKey
from keyplane.services.runtime import Runtime
from keyplane.services.verify import VerifyRequest
from keyplane.settings import Settings

SECRET = "kp-bench-secret-" + "s" * 32


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark verify-outcome counting.")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of off+on (3)")
    parser.add_argument("--verifications", type=int, default=10_000, help="per run (10000)")
    parser.add_argument("--keys", type=int, default=100, help="keys verified in turn (100)")
    return parser.parse_args()


def settings(path: Path, counting: bool) -> Settings:
    return Settings(
        database_url=f"sqlite:///{path}",
        secret=SECRET,  # type: ignore[arg-type]
        rollups_enabled=counting,
        # Counted in memory for the whole run: the flush is not what is measured here.
        rollup_flush_seconds=3600,
        rollup_prune_seconds=86_400,
    )


async def run(path: Path, counting: bool, secrets: list[str], verifications: int) -> float:
    """Verifications per CPU second of this process."""
    runtime = await Runtime.start(settings(path, counting))
    try:
        principal = Principal("mk_bench", runtime.default_project.org_id, None, ("*",))
        verifier = runtime.services.verifier
        requests = [VerifyRequest(key=secret) for secret in secrets]
        for request in requests:  # warm the key cache
            assert (await verifier.verify(principal, request)).valid
        started = time.process_time()
        for n in range(verifications):
            await verifier.verify(principal, requests[n % len(requests)])
        return verifications / (time.process_time() - started)
    finally:
        await runtime.stop()


def record_cost(keys: int) -> tuple[float, float]:
    """Nanoseconds per ``VerdictRecorder.record`` and per bare dict increment."""
    recorder = VerdictRecorder(None, 3600)  # type: ignore[arg-type]  # never flushed here
    # The verifier passes the time it read for its decision: no clock read of its own.
    now = SystemClock().now()
    ids = [f"key_{n:026d}" for n in range(keys)]
    rounds = 200_000
    started = time.perf_counter()
    for n in range(rounds):
        recorder.record(ids[n % keys], "VALID", now)
    per_record = (time.perf_counter() - started) / rounds * 1e9
    counts: dict[tuple[str, str], int] = {}
    started = time.perf_counter()
    for n in range(rounds):
        slot = (ids[n % keys], "VALID")
        counts[slot] = counts.get(slot, 0) + 1
    per_increment = (time.perf_counter() - started) / rounds * 1e9
    return per_record, per_increment


async def main() -> None:
    args = parse_args()
    load = os.getloadavg()
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    with tempfile.TemporaryDirectory() as workdir:
        path = Path(workdir) / "verify-outcomes.db"
        runtime = await Runtime.start(settings(path, True))
        try:
            principal = Principal("mk_bench", runtime.default_project.org_id, None, ("*",))
            secrets = [
                (
                    await runtime.services.keys.create(
                        principal, NewKey(name=f"bench {n}", project_id=runtime.default_project.id)
                    )
                ).secret
                for n in range(args.keys)
            ]
        finally:
            await runtime.stop()
        rates: dict[bool, list[float]] = {False: [], True: []}
        for round_number in range(args.rounds):
            order = (False, True) if round_number % 2 == 0 else (True, False)
            for counting in order:
                rates[counting].append(await run(path, counting, secrets, args.verifications))
    ratios = [on / off for on, off in zip(rates[True], rates[False], strict=True)]
    print(
        f"verifications per CPU second, {args.verifications:,} per run, {args.keys} keys: "
        f"counting off {', '.join(f'{v:,.0f}' for v in rates[False])}; "
        f"on {', '.join(f'{v:,.0f}' for v in rates[True])}"
    )
    print(
        f"on / off per round: {', '.join(f'{r:.3f}' for r in ratios)}; "
        f"median {statistics.median(ratios):.3f} (goal: 1.00 within noise)"
    )
    per_record, per_increment = record_cost(args.keys)
    print(
        f"VerdictRecorder.record {per_record:.0f} ns (given the verify's time); "
        f"bare dict increment {per_increment:.0f} ns; ratio {per_record / per_increment:.1f}x"
    )


if __name__ == "__main__":
    asyncio.run(main())
