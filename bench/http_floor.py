"""Keyplane's HTTP data plane next to its floor: server CPU per request, as ratios.

Two servers run side by side under the same load generator (``bench/_loadgen.py``, or wrk
when installed): ``keyplane serve`` and the floor (``bench/_floor_app.py``: a raw ASGI app under
the same uvicorn options doing parse + HMAC + dict lookup + the same JSON answer). For each
path (``POST /v1/verify`` with a plain key, with a fully loaded policy and its whole body, and
``GET /healthz``) each server is loaded in turn, and its CPU is read from its own
``/proc/<pid>/stat`` (utime + stime) before and after: CPU per request, not requests per
second, so the load other work puts on the machine mostly cancels out. Rounds alternate the
servers; the medians of ``--rounds`` rounds are printed, with the ratios to the floor.

Run::

    .venv/bin/python bench/http_floor.py                       # SQLite, 3 rounds of 5 s
    .venv/bin/python bench/http_floor.py --rounds 5 --duration 8
    .venv/bin/python bench/http_floor.py --log-level warning   # without the access log
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import httpx

from keyplane import __version__
from keyplane.api.routes.verify import verdict_body
from keyplane.services.keys import NewKey
from keyplane.services.runtime import Runtime

sys.path.insert(0, str(Path(__file__).resolve().parent))
from verify import (  # bench/verify.py: its server and generator helpers
    LOADED_POLICY,
    Generator,
    LoadResult,
    Target,
    bulk_insert,
    choose_generator_kind,
    free_port,
    loaded_request,
    make_target,
    plain_request,
    provisioned,
    running_server,
    stop_process,
    write_bodies,
)

FLOOR_APP = Path(__file__).resolve().parent / "_floor_app.py"
TICKS = os.sysconf("SC_CLK_TCK")
PATHS = (("verify", "POST /v1/verify, plain key"), ("bodies", "POST /v1/verify, loaded policy"),
         ("healthz", "GET /healthz"))  # fmt: skip
GOALS = {"verify": 2.0, "bodies": 2.0, "healthz": 1.5}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1000, help="plain API keys (1000)")
    parser.add_argument("--policy-keys", type=int, default=16, help="loaded-policy keys (16)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; medians are printed (3)")
    parser.add_argument("--duration", type=int, default=5, help="seconds per run (5)")
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections")
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument(
        "--log-level", default="info", help="Keyplane's log level; info writes the access log"
    )
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temp dir")
    return parser.parse_args()


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (its threads included), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


async def prepare(target: Target, args: argparse.Namespace) -> tuple[list[str], list[str], dict]:
    """Fill the database; return plain keys, loaded keys, and the answers the floor gives."""
    runtime = await Runtime.start(target.settings())
    try:
        plain = await bulk_insert(runtime, args.keys, target.server_secret.encode())
        principal = await runtime.services.management.authenticate(target.root_key)
        keys = runtime.services.keys
        loaded = [
            (await keys.create(principal, NewKey(f"loaded {n}", policy=LOADED_POLICY))).secret
            for n in range(args.policy_keys)
        ]
        verifier = runtime.services.verifier
        answers = []
        for key, request in [*((k, plain_request(k)) for k in plain),
                             *((k, loaded_request(k)) for k in loaded)]:  # fmt: skip
            answers.append([key, verdict_body(await verifier.verify(principal, request))])
    finally:
        await runtime.stop()
    floor = {
        "secret": secrets.token_urlsafe(32),
        "answers": answers,
        "health": {"status": "ok", "version": __version__},
    }
    return plain, loaded, floor


@contextmanager
def floor_server(answers_path: Path) -> Iterator[tuple[str, int]]:
    port = free_port()
    process = subprocess.Popen([sys.executable, str(FLOOR_APP), str(answers_path), str(port)])
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(url + "/healthz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        yield url, process.pid
    finally:
        stop_process(process)


@dataclass
class Sample:
    cpu_us: float  # server CPU per request
    rate: float
    p99_us: int


def measure(generator: Generator, pid: int, mode: str, seconds: int) -> Sample:
    before = cpu_seconds(pid)
    result: LoadResult = generator.run(mode, seconds)
    spent = cpu_seconds(pid) - before
    if result.errors:
        raise SystemExit(f"{result.errors} errors in a {mode} run")
    return Sample(spent * 1e6 / max(result.requests, 1), result.rate, result.p99_us)


def main() -> None:
    args = parse_args()
    kind = choose_generator_kind(args.generator)
    with tempfile.TemporaryDirectory(prefix="kp-floor-") as tmp:
        workdir = Path(tmp)
        target = make_target(args, workdir)
        with provisioned(target):
            print(f"filling the database ({args.keys} plain keys, {args.policy_keys} loaded)")
            plain, loaded, floor = asyncio.run(prepare(target, args))
            keys_file = workdir / "keys.txt"
            keys_file.write_text("\n".join(plain) + "\n")
            answers = workdir / "answers.json"
            answers.write_text(json.dumps(floor))
            bodies = workdir / "bodies.txt"
            write_bodies(bodies, loaded, 1)
            env_target = replace(target, log_level=args.log_level)
            with running_server(env_target, workdir) as server, floor_server(answers) as floor_at:
                floor_url, floor_pid = floor_at
                servers = {
                    "keyplane": (server.url, server.process.pid),
                    "floor": (floor_url, floor_pid),
                }
                samples: dict[tuple[str, str], list[Sample]] = {}
                for url, _pid in servers.values():  # warm both caches
                    generator = Generator(kind, url, keys_file, target.root_key, 1,
                                          args.connections, bodies)  # fmt: skip
                    for mode, _ in PATHS:
                        generator.run(mode, 2)
                for round_number in range(args.rounds):
                    print(f"round {round_number + 1}/{args.rounds}", file=sys.stderr)
                    for mode, _ in PATHS:
                        for name, (url, pid) in servers.items():
                            generator = Generator(kind, url, keys_file, target.root_key, 1,
                                                  args.connections, bodies)  # fmt: skip
                            sample = measure(generator, pid, mode, args.duration)
                            samples.setdefault((mode, name), []).append(sample)
    print_table(args, kind, samples)


def print_table(args: argparse.Namespace, kind: str, samples: dict) -> None:
    load = os.getloadavg()[0]
    print()
    print(f"Keyplane {__version__}, {os.cpu_count()} CPUs, load {load:.1f}; generator {kind},"
          f" {args.connections} connections; log level {args.log_level};"
          f" medians of {args.rounds} rounds of {args.duration}s")  # fmt: skip
    print("| path | Keyplane CPU/req | floor CPU/req | ratio (goal) | Keyplane req/s |"
          " floor req/s |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for mode, label in PATHS:
        ours, floor = samples[(mode, "keyplane")], samples[(mode, "floor")]
        cpu = statistics.median(s.cpu_us for s in ours)
        floor_cpu = statistics.median(s.cpu_us for s in floor)
        ratio = cpu / floor_cpu if floor_cpu else float("nan")
        print(f"| {label} | {cpu:.0f} µs | {floor_cpu:.0f} µs | {ratio:.2f}x"
              f" (<= {GOALS[mode]}x) | {statistics.median(s.rate for s in ours):,.0f} |"
              f" {statistics.median(s.rate for s in floor):,.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
