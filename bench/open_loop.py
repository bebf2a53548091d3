"""Verify's tail latency next to healthz's, at the same request rate, with an open loop.

A closed-loop generator (each connection waits for its answer before it sends again) slows
down with the server and hides the queueing a real gateway's traffic meets. Here the requests
are due on a fixed schedule whatever the server does (``bench/_loadgen.py --rate``), and each
latency is counted from when its request was due. The steps, on one ``keyplane serve``
(SQLite, the default log level, so the access log is written):

1. the most plain verifies per second it answers, closed loop (``--connections``);
2. half that rate, open loop, for ``POST /v1/verify`` (plain keys) and for ``GET /healthz`` in
   turn: one run of each not counted (the probe at full speed leaves batched writes behind),
   then ``--rounds`` rounds;
3. the medians of p50 and p99 of each, and verify's p99 over healthz's (issue 17's goal: at
   most 2x).

The generator runs on the same machine and takes CPU from the server; both paths pay that
alike. Run::

    .venv/bin/python bench/open_loop.py
    .venv/bin/python bench/open_loop.py --rounds 5 --duration 8
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from http_floor import prepare  # bench/http_floor.py: the same keys and server
from verify import Generator, LoadResult, make_target, provisioned, running_server

GOAL = 2.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1000, help="plain API keys (1000)")
    parser.add_argument("--rounds", type=int, default=3, help="open-loop rounds (3)")
    parser.add_argument("--duration", type=int, default=5, help="seconds per run (5)")
    parser.add_argument("--connections", type=int, default=64, help="connections (64)")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--database-url", help="default: SQLite in a temp dir")
    args = parser.parse_args()
    args.policy_keys = 1  # prepare() makes loaded keys too; one is enough here
    return args


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="kp-open-loop-") as tmp:
        workdir = Path(tmp)
        target = make_target(args, workdir)
        with provisioned(target):
            print(f"filling the database ({args.keys} keys)", file=sys.stderr)
            plain, _loaded, _floor = asyncio.run(prepare(target, args))
            keys_file = workdir / "keys.txt"
            keys_file.write_text("\n".join(plain) + "\n")
            with running_server(replace(target, log_level=args.log_level), workdir) as server:
                closed = Generator(
                    "python", server.url, keys_file, target.root_key, 1, args.connections
                )
                for mode in ("verify", "healthz"):  # warm the cache and the connections
                    closed.run(mode, 2)
                most = closed.run("verify", args.duration, check=True)
                if most.errors or most.invalid:
                    raise SystemExit(f"{most.errors} errors, {most.invalid} not valid")
                rate = most.rate / 2
                print(f"closed loop: {most.rate:,.0f} verifies/s; open loop at {rate:,.0f}/s",
                      file=sys.stderr)  # fmt: skip
                runs: dict[str, list[LoadResult]] = {"verify": [], "healthz": []}
                opened = replace(closed, rate=rate)
                for mode in runs:  # not counted: what the probe at full speed left behind
                    opened.run(mode, 2)
                for round_number in range(args.rounds):
                    print(f"round {round_number + 1}/{args.rounds}", file=sys.stderr)
                    for mode, results in runs.items():
                        result = opened.run(mode, args.duration, check=True)
                        if result.errors or result.invalid:
                            raise SystemExit(f"{mode}: {result.errors} errors")
                        results.append(result)
    print_table(args, most, rate, runs)


def print_table(
    args: argparse.Namespace, most: LoadResult, rate: float, runs: dict[str, list[LoadResult]]
) -> None:
    def median(results: list[LoadResult], field: str) -> float:
        return statistics.median(getattr(r, field) for r in results)

    print()
    print(
        f"2 CPUs, load {os.getloadavg()[0]:.1f}; the most plain verifies/s (closed loop, "
        f"{args.connections} connections): {most.rate:,.0f}; open loop at half: {rate:,.0f}/s "
        f"for {args.duration}s, medians of {args.rounds} rounds; log level {args.log_level}"
    )
    print("| path | achieved req/s | p50 | p99 | p99 per round |")
    print("|---|---|---|---|---|")
    for mode, label in (("verify", "POST /v1/verify, plain key"), ("healthz", "GET /healthz")):
        results = runs[mode]
        rounds = ", ".join(f"{r.p99_us / 1000:.2f}" for r in results)
        print(
            f"| {label} | {median(results, 'rate'):,.0f} | {median(results, 'p50_us') / 1000:.2f}"
            f" ms | {median(results, 'p99_us') / 1000:.2f} ms | {rounds} |"
        )
    ratio = median(runs["verify"], "p99_us") / max(median(runs["healthz"], "p99_us"), 1)
    print(f"verify p99 / healthz p99: {ratio:.2f}x (goal <= {GOAL:.1f}x)")


if __name__ == "__main__":
    main()
