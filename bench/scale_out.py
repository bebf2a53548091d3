"""Benchmark of verify on one and on two instances sharing PostgreSQL and Redis.

Prints figures; asserts nothing about timings. Against one PostgreSQL schema created for the
run and one Redis, it starts real ``keyplane serve`` processes (``KEYPLANE_REDIS_URL`` set, so
limits, reservations and budget counters live in Redis) and creates ``--keys`` keys through
``POST /v1/keys``, each with three rate windows and a budget, all far above anything a run
reaches. Verify bodies are ``{"key": ..., "cost": 0.0001}``, so every verify checks and
consumes the three windows and the budget and holds a reservation (no usage report settles
it). Then:

(a) Redis commands per verify on the warm path: ``INFO commandstats`` before and after
    ``--round-trip-verifies`` verifies sent one at a time to one instance (after its cache is
    warm), broken down by command, next to the same figures for an idle window of the same
    length (what runs in the background). With ``redis-cli`` installed, a ``MONITOR`` over the
    same window also says which client sent each command and which script each ``EVALSHA``
    ran.
(b) one instance under wrk for ``--duration`` seconds: req/s, p50, p99.
(c) two instances, the load split evenly: two wrk processes at once, one per instance, each
    with half the connections. Their req/s add up; the worse p50 and p99 are taken.

Run::

    .venv/bin/python bench/scale_out.py
    .venv/bin/python bench/scale_out.py --duration 3 --keys 200        # quick look

Needs wrk. Inherited ``KEYPLANE_*`` variables are ignored. The servers, the wrk processes, the
schema, the Redis keys of the run's API keys and the temporary directory are cleaned up on
exit, on failure, on Ctrl-C and on SIGTERM. See bench/README.md for how to read the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import json
import os
import platform
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import redis
from sqlalchemy import text

# bench/verify.py and bench/usage.py: this script's directory is the first entry of sys.path.
from usage import server_cpu_seconds
from verify import (
    Generator,
    LoadResult,
    Server,
    Target,
    child_env,
    cpu_model,
    is_postgresql,
    progress,
    provisioned,
    running_server,
)

from keyplane import __version__
from keyplane.settings import to_async_url
from keyplane.store.unit import create_engine

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
# What the limiter names its Redis keys: "<prefix>:{<key id>}:..." (limits/redis.py).
REDIS_KEY_PREFIX = "kp"
CREATE_WORKERS = 8
WARMUP_SECONDS = 2
# The policy of every key, in the API's form: three rate windows and a budget, so high that
# no run is ever refused.
POLICY: dict[str, Any] = {
    "rate_limits": [
        {"name": "s", "limit": 1_000_000, "period": "1s"},
        {"name": "m", "limit": 100_000_000, "period": "1m"},
        {"name": "d", "limit": 1_000_000_000, "period": "1d"},
    ],
    "budget": {"credit_limit": 1_000_000_000},
}
COST = 0.0001


# -- configuration --------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark verify on one and two keyplane instances (PostgreSQL + Redis)."
    )
    parser.add_argument("--keys", type=int, default=1000, help="keys created and verified (1000)")
    parser.add_argument("--duration", type=int, default=5, help="seconds per timed run (5)")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=64,
        help="HTTP connections in total, split over the instances (64)",
    )
    parser.add_argument("--threads", type=int, default=1, help="threads per wrk process (1)")
    parser.add_argument(
        "--round-trip-verifies",
        type=int,
        default=2000,
        help="verifies sent one at a time while Redis commands are counted (2000)",
    )
    parser.add_argument(
        "--database-url",
        default=DEFAULT_POSTGRES_URL,
        help=f"PostgreSQL ({DEFAULT_POSTGRES_URL}); a fresh schema is used and dropped",
    )
    parser.add_argument(
        "--redis-url", default=DEFAULT_REDIS_URL, help=f"Redis ({DEFAULT_REDIS_URL})"
    )
    parser.add_argument(
        "--no-monitor",
        action="store_true",
        help="no MONITOR attribution of the Redis commands, even with redis-cli installed",
    )
    args = parser.parse_args()
    if not is_postgresql(args.database_url):
        parser.error("--database-url must be a PostgreSQL URL: two instances share it")
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed (apt-get install -y wrk)")
    args.keys = max(1, args.keys)
    args.duration = max(1, args.duration)
    args.threads = max(1, args.threads)
    args.concurrency = max(2 * args.threads, args.concurrency)
    args.round_trip_verifies = max(1, args.round_trip_verifies)
    return args


@dataclass(frozen=True)
class SharedTarget(Target):
    """verify.py's target (PostgreSQL schema, secret, root key) plus the shared Redis."""

    redis_url: str = DEFAULT_REDIS_URL

    def env(self) -> dict[str, str]:
        return {**super().env(), "KEYPLANE_REDIS_URL": self.redis_url}


# -- keys -----------------------------------------------------------------------------------------


def create_keys(url: str, root_key: str, count: int, key_ids: list[str]) -> list[str]:
    """Create ``count`` keys through the API; returns their plaintext, fills ``key_ids``."""

    def create(client: httpx.Client, number: int) -> tuple[str, str]:
        response = client.post(
            f"{url}/v1/keys", json={"name": f"scale-out bench {number}", "policy": POLICY}
        )
        if response.status_code != 201:
            raise SystemExit(
                f"POST /v1/keys answered {response.status_code}: {response.text[:2000]}"
            )
        body = response.json()
        return body["key"], body["data"]["id"]

    headers = {"Authorization": f"Bearer {root_key}"}
    with (
        httpx.Client(headers=headers, timeout=30) as client,
        ThreadPoolExecutor(CREATE_WORKERS) as pool,
    ):
        created = list(pool.map(lambda number: create(client, number), range(count)))
    key_ids.extend(key_id for _, key_id in created)
    return [key for key, _ in created]


def verify_body(key: str) -> str:
    return json.dumps({"key": key, "cost": COST})


def forget_redis_keys(redis_url: str, key_ids: list[str]) -> int:
    """Unlink what the run left in Redis: every key under the hash tag of one of its API keys."""
    if not key_ids:
        return 0
    ours = set(key_ids)
    start = len(REDIS_KEY_PREFIX) + 2  # past "<prefix>:{"
    client = redis.Redis.from_url(redis_url)
    dropped = 0
    try:
        batch: list[bytes] = []
        for name in client.scan_iter(match=f"{REDIS_KEY_PREFIX}:{{*", count=1000):
            tag = name[start:].split(b"}", 1)[0].decode(errors="replace")
            if tag in ours:
                batch.append(name)
            if len(batch) >= 1000:
                dropped += client.unlink(*batch)
                batch = []
        if batch:
            dropped += client.unlink(*batch)
    finally:
        client.close()
    return dropped


# -- load with wrk --------------------------------------------------------------------------------


def probe(url: str, root_key: str, key: str) -> str:
    """One verify, for the error text when the generator saw something other than valid."""
    try:
        response = httpx.post(
            f"{url}/v1/verify",
            content=verify_body(key),
            headers={"Authorization": f"Bearer {root_key}", "Content-Type": "application/json"},
            timeout=10,
        )
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    return f"{response.status_code} {response.text[:2000]}"


def run_together(
    generators: list[Generator], mode: str, seconds: int, check: bool = False
) -> list[LoadResult]:
    """Run one wrk per generator at the same time; their results, in order."""
    env = child_env({"KEYPLANE_BENCH_ROOT_KEY": generators[0].root_key})
    processes: list[subprocess.Popen[str]] = []
    try:
        for generator in generators:
            processes.append(
                subprocess.Popen(
                    generator.command(mode, seconds, check),
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        outputs = [process.communicate() for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    results = []
    for process, (stdout, stderr) in zip(processes, outputs, strict=True):
        match = re.search(r"^KEYPLANE_BENCH (.*)$", stdout, re.MULTILINE)
        if process.returncode != 0 or match is None:
            raise SystemExit(
                f"wrk failed ({process.returncode}):\n{stdout[-2000:]}{stderr[-2000:]}"
            )
        figures = {name: int(v) for name, v in (p.split("=", 1) for p in match.group(1).split())}
        results.append(
            LoadResult(
                requests=figures["requests"],
                seconds=figures["duration_us"] / 1_000_000,
                p50_us=figures["p50_us"],
                p90_us=figures["p90_us"],
                p99_us=figures["p99_us"],
                max_us=figures["max_us"],
                errors=figures["errors"],
                checked=figures["checked"],
                invalid=figures["invalid"],
            )
        )
    return results


def warm(generator: Generator, keys: list[str]) -> LoadResult:
    """Verify every key on the generator's instance (its cache), checking every answer."""
    seconds = WARMUP_SECONDS
    for _ in range(4):
        [result] = run_together([generator], "bodies", seconds, check=True)
        if result.invalid or result.errors:
            raise SystemExit(
                f"warm-up on {generator.url}: {result.invalid} of {result.checked} verify"
                f" answers not valid, {result.errors} errors; one verify now answers:"
                f" {probe(generator.url, generator.root_key, keys[0])}"
            )
        if result.requests >= len(keys):
            return result
        seconds = int(len(keys) / max(result.rate, 1.0) * 1.5) + 1
    raise SystemExit("could not warm the server's cache: too few requests per run")


@dataclass
class Timed:
    """One timed wrk run against one instance, with the CPU its server and Redis used."""

    connections: int
    load: LoadResult
    server_cpu: float  # share of one core
    redis_cpu: float  # share of one core, the whole Redis server


def redis_cpu_seconds(client: redis.Redis) -> float:
    cpu = client.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def timed_run(
    generators: list[Generator], servers: list[Server], client: redis.Redis, seconds: int
) -> list[Timed]:
    """A discarded 1-second run, then the timed one; all generators at once."""
    run_together(generators, "bodies", 1)
    server_cpu = [server_cpu_seconds(server.process.pid) for server in servers]
    redis_cpu = redis_cpu_seconds(client)
    started = time.perf_counter()
    results = run_together(generators, "bodies", seconds)
    wall = time.perf_counter() - started
    redis_share = (redis_cpu_seconds(client) - redis_cpu) / wall
    return [
        Timed(
            generator.connections,
            result,
            (server_cpu_seconds(server.process.pid) - cpu) / wall,
            redis_share,
        )
        for generator, server, result, cpu in zip(
            generators, servers, results, server_cpu, strict=True
        )
    ]


# -- Redis commands per verify --------------------------------------------------------------------


def commandstats(client: redis.Redis) -> dict[str, int]:
    """Calls per command since Redis started (``cmdstat_evalsha`` -> ``evalsha``)."""
    return {
        name.removeprefix("cmdstat_"): int(stats["calls"])
        for name, stats in client.info("commandstats").items()
    }


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    changed = {name: calls - before.get(name, 0) for name, calls in after.items()}
    return {name: calls for name, calls in changed.items() if calls}


def script_names() -> dict[str, str]:
    """SHA1 -> name of the limiter's Lua scripts, to tell admit from sweep in MONITOR."""
    try:
        from keyplane.limits.scripts import scripts as limiter_scripts

        scripts = limiter_scripts()
        return {
            getattr(scripts, field.name).sha: field.name for field in dataclasses.fields(scripts)
        }
    except (ImportError, AttributeError, TypeError):  # the limiter changed: SHA prefixes then
        return {}


def redis_peer_ports(pid: int, redis_port: int) -> set[int]:
    """Local ports of the process's TCP connections to ``redis_port`` (Linux /proc)."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, remote, inode = fields[1], fields[2], fields[9]
                if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == redis_port:
                    ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


MONITOR_LINE = re.compile(r'^\d+\.\d+ \[\d+ ([^\]]+)\] "([^"]*)"(?: "([^"]*)")?')


@dataclass
class Monitored:
    """What MONITOR saw during the verifies, by who sent it."""

    instance: dict[str, int]  # command (evalsha: "evalsha <script>") -> calls
    in_scripts: dict[str, int]
    others: dict[str, int]  # other clients of the same Redis (this script's INFO included)


def read_monitor(path: Path, instance_ports: set[int]) -> Monitored:
    names = script_names()
    seen = Monitored({}, {}, {})
    with path.open(errors="replace") as lines:
        for line in lines:
            match = MONITOR_LINE.match(line)
            if match is None:
                continue
            client, command, first = match.group(1), match.group(2).lower(), match.group(3)
            if command == "evalsha" and first:
                command = f"evalsha {names.get(first, first[:8])}"
            if client == "lua":
                bucket = seen.in_scripts
            else:
                port = client.rsplit(":", 1)[-1]
                bucket = (
                    seen.instance if port.isdigit() and int(port) in instance_ports else seen.others
                )
            bucket[command] = bucket.get(command, 0) + 1
    return seen


@dataclass
class RoundTrips:
    verifies: int
    seconds: float
    during: dict[str, int]  # commandstats delta over the verifies
    idle: dict[str, int]  # commandstats delta over an idle window of the same length
    idle_seconds: float
    monitored: Monitored | None
    monitor_note: str
    keys: int  # keys holding reservations: the instance sweeps each of them once a second
    idle_server_cpu: float  # instance A's share of one core during the idle window
    idle_redis_cpu: float  # Redis's share of one core during the idle window


@contextlib.contextmanager
def monitoring(redis_url: str, path: Path, wanted: bool) -> Iterator[str]:
    """``redis-cli monitor`` writing to ``path`` while the block runs; yields a note."""
    cli = shutil.which("redis-cli")
    if not wanted or cli is None:
        yield "MONITOR: skipped" + (" (--no-monitor)" if not wanted else " (no redis-cli)")
        return
    with path.open("w") as out:
        process = subprocess.Popen(
            [cli, "-u", redis_url, "monitor"], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not path.read_text(errors="replace").strip():
            if process.poll() is not None:
                break
            time.sleep(0.05)
        first = path.read_text(errors="replace").strip().split("\n", 1)[0]
        if process.poll() is not None or not first.startswith("OK"):
            yield f"MONITOR: skipped (redis-cli monitor said {first[:200]!r})"
            return
        yield ""
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def measure_round_trips(
    server: Server,
    target: SharedTarget,
    keys: list[str],
    args: argparse.Namespace,
    client: redis.Redis,
    workdir: Path,
) -> RoundTrips:
    """Count Redis commands over sequential verifies on a warm instance, then while idle."""
    headers = {"Authorization": f"Bearer {target.root_key}", "Content-Type": "application/json"}
    bodies = [verify_body(key) for key in keys]
    redis_port = client.connection_pool.connection_kwargs.get("port", 6379)
    with httpx.Client(base_url=server.url, headers=headers, timeout=10) as http:

        def verify(body: str) -> None:
            response = http.post("/v1/verify", content=body)
            if response.status_code != 200 or response.json().get("valid") is not True:
                raise SystemExit(
                    f"POST /v1/verify answered {response.status_code}: {response.text[:2000]}"
                )

        # Warm-up: the HTTP connection, the server's Redis connections, the script cache.
        for body in itertools.islice(itertools.cycle(bodies), 200):
            verify(body)
        monitor_path = workdir / "monitor.txt"
        with monitoring(args.redis_url, monitor_path, not args.no_monitor) as note:
            before = commandstats(client)
            started = time.perf_counter()
            for body in itertools.islice(itertools.cycle(bodies), args.round_trip_verifies):
                verify(body)
            seconds = time.perf_counter() - started
            during = delta(commandstats(client), before)
            instance_ports = redis_peer_ports(server.process.pid, redis_port)
    monitored = None if note else read_monitor(monitor_path, instance_ports)
    # The same length with no request at all: what the instance (its reservation sweep,
    # once a second) and any other client of this Redis do in the background.
    before = commandstats(client)
    server_cpu = server_cpu_seconds(server.process.pid)
    redis_cpu = redis_cpu_seconds(client)
    idle_started = time.perf_counter()
    time.sleep(seconds)
    idle = delta(commandstats(client), before)
    idle_seconds = time.perf_counter() - idle_started
    idle_server_cpu = (server_cpu_seconds(server.process.pid) - server_cpu) / idle_seconds
    idle_redis_cpu = (redis_cpu_seconds(client) - redis_cpu) / idle_seconds
    return RoundTrips(
        args.round_trip_verifies,
        seconds,
        during,
        idle,
        idle_seconds,
        monitored,
        note,
        len(keys),
        idle_server_cpu,
        idle_redis_cpu,
    )


# -- the run --------------------------------------------------------------------------------------


@dataclass
class Result:
    created: int
    create_seconds: float
    database: str
    redis_version: str
    generator: str
    round_trips: RoundTrips
    single: Timed
    pair: list[Timed]
    logs: dict[str, list[str]]


async def _database_version(target: Target) -> str:
    engine = create_engine(to_async_url(target.url))
    try:
        async with engine.connect() as conn:
            version = (await conn.execute(text("SHOW server_version"))).scalar()
    finally:
        await engine.dispose()
    return f"PostgreSQL {version} (schema {target.schema})"


def server_log(workdir: Path) -> list[str]:
    path = workdir / "server.log"
    return path.read_text(errors="replace").splitlines() if path.exists() else []


def measure(
    target: SharedTarget, args: argparse.Namespace, tmp: Path, key_ids: list[str]
) -> Result:
    dir_a, dir_b = tmp / "a", tmp / "b"
    dir_a.mkdir()
    dir_b.mkdir()
    client = redis.Redis.from_url(args.redis_url)
    try:
        redis_version = str(client.info("server")["redis_version"])
        with provisioned(target):
            database = asyncio.run(_database_version(target))
            with running_server(target, dir_a) as server_a:
                progress(f"creating {args.keys:,} keys through POST /v1/keys")
                started = time.perf_counter()
                keys = create_keys(server_a.url, target.root_key, args.keys, key_ids)
                create_seconds = time.perf_counter() - started
                bodies_file = tmp / "bodies.txt"
                lines = [verify_body(key) for key in keys]
                while len(lines) < args.threads:
                    lines += lines
                bodies_file.write_text("\n".join(lines) + "\n")

                def generator(server: Server, connections: int) -> Generator:
                    return Generator(
                        "wrk",
                        server.url,
                        bodies_file,
                        target.root_key,
                        args.threads,
                        connections,
                        bodies_file,
                    )

                whole_a = generator(server_a, args.concurrency)
                progress("instance A: warming its cache (every key, every answer checked)")
                warm(whole_a, keys)
                progress(
                    f"instance A: {args.round_trip_verifies:,} verifies one at a time,"
                    " counting Redis commands, then an idle window as long"
                )
                round_trips = measure_round_trips(server_a, target, keys, args, client, tmp)
                progress(f"1 instance: {args.concurrency} connections for {args.duration}s")
                [single] = timed_run([whole_a], [server_a], client, args.duration)
                with running_server(target, dir_b) as server_b:
                    half_a = args.concurrency - args.concurrency // 2
                    half_b = args.concurrency // 2
                    pair_generators = [generator(server_a, half_a), generator(server_b, half_b)]
                    progress("instance B: warming its cache (every key, every answer checked)")
                    warm(pair_generators[1], keys)
                    progress(f"2 instances: {half_a} + {half_b} connections for {args.duration}s")
                    pair = timed_run(pair_generators, [server_a, server_b], client, args.duration)
                description = whole_a.description
        # running_server has stopped both: their logs are complete.
        logs = {"A": server_log(dir_a), "B": server_log(dir_b)}
    finally:
        client.close()
    return Result(
        len(keys),
        create_seconds,
        database,
        redis_version,
        description,
        round_trips,
        single,
        pair,
        logs,
    )


# -- report ---------------------------------------------------------------------------------------


def load_row(label: str, timed: Timed) -> str:
    load = timed.load
    return (
        f"  {label:<28}{load.rate:>10,.0f}{load.p50_us / 1000:>9.2f}{load.p99_us / 1000:>9.2f}"
        f"{load.max_us / 1000:>9.1f}{load.requests:>11,}{load.errors:>8,}"
        f"{timed.server_cpu:>9.0%}{timed.redis_cpu:>10.0%}"
    )


def throughput_lines(result: Result) -> list[str]:
    single, pair = result.single, result.pair
    rate = sum(timed.load.rate for timed in pair)
    p50 = max(timed.load.p50_us for timed in pair)
    p99 = max(timed.load.p99_us for timed in pair)
    worst = max(timed.load.max_us for timed in pair)
    requests = sum(timed.load.requests for timed in pair)
    errors = sum(timed.load.errors for timed in pair)
    lines = [
        "verify throughput: POST /v1/verify, wrk per instance, closed loop",
        f"  {'setup':<28}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'requests':>11}"
        f"{'errors':>8}{'srv CPU':>9}{'Redis CPU':>10}",
        load_row(f"1 instance ({single.connections} conns)", single),
        load_row(f"2 instances: A ({pair[0].connections} conns)", pair[0]),
        load_row(f"             B ({pair[1].connections} conns)", pair[1]),
        f"  {'             A + B':<28}{rate:>10,.0f}{p50 / 1000:>9.2f}{p99 / 1000:>9.2f}"
        f"{worst / 1000:>9.1f}{requests:>11,}{errors:>8,}"
        f"{sum(timed.server_cpu for timed in pair):>9.0%}{pair[0].redis_cpu:>10.0%}",
        f"  2 instances / 1 instance: throughput {rate / max(single.load.rate, 1e-9):.2f}x,"
        f" p99 {p99 / max(single.load.p99_us, 1):.2f}x"
        " (A + B: req/s summed, p50, p99 and max the worse of the two)",
    ]
    if single.load.errors or errors:
        lines.append("  WARNING: wrk saw errors (non-2xx, timeouts or socket errors)")
    return lines


def per_verify(calls: float, verifies: int) -> str:
    # round() then + 0.0: no "-0.000" for a difference that is zero to three decimals.
    return f"{round(calls / verifies, 3) + 0.0:.3f}"


#: What instance A sends to Redis on its own, once a second: the reservation sweep.
BACKGROUND = ("scan", "evalsha sweep")


def round_trip_lines(trips: RoundTrips) -> list[str]:
    n = trips.verifies
    # The idle window is scaled to the verify window's length before it is subtracted.
    scale = trips.seconds / trips.idle_seconds if trips.idle_seconds else 1.0
    names = sorted(
        set(trips.during) | set(trips.idle),
        key=lambda name: (-trips.during.get(name, 0), name),
    )
    lines = [
        f"Redis commands on the warm path: {n:,} verifies sent one at a time to instance A"
        f" ({trips.seconds:.2f} s, {n / trips.seconds:,.0f} verifies/s"
        + (", MONITOR on)" if trips.monitored is not None else ")"),
        "  INFO commandstats of the whole Redis server: it counts the commands run inside Lua",
        "  scripts (redis.call) too, and those of every client. idle: a window as long with no",
        "  request (instance A's once-a-second reservation sweep, anyone else using this Redis);",
        "  net: during - idle, the idle window scaled to the same length.",
        f"  idle window: instance A used {trips.idle_server_cpu:.0%} of a core, Redis"
        f" {trips.idle_redis_cpu:.0%}, with no request coming in",
        f"  {'command':<24}{'during':>10}{'per verify':>12}{'idle':>10}{'net per verify':>16}",
    ]
    for name in names:
        during, idle = trips.during.get(name, 0), trips.idle.get(name, 0)
        lines.append(
            f"  {name:<24}{during:>10,}{per_verify(during, n):>12}{idle:>10,}"
            f"{per_verify(during - idle * scale, n):>16}"
        )
    during_total, idle_total = sum(trips.during.values()), sum(trips.idle.values())
    lines.append(
        f"  {'total':<24}{during_total:>10,}{per_verify(during_total, n):>12}{idle_total:>10,}"
        f"{per_verify(during_total - idle_total * scale, n):>16}"
    )
    scripts = sum(trips.during.get(name, 0) for name in ("evalsha", "eval"))
    idle_scripts = sum(trips.idle.get(name, 0) for name in ("evalsha", "eval"))
    lines += [
        f"  EVALSHA + EVAL per verify: {per_verify(scripts, n)} as counted,"
        f" {per_verify(scripts - idle_scripts * scale, n)} net of the idle window.",
        "  The sweep comes in bursts, one EVALSHA per key holding reservations (here"
        f" {trips.keys:,}) once a second,",
        "  so a window can hold one burst more or less than the other: the net figures of the",
        "  sweep's commands (evalsha and what its script runs) can be off by up to"
        f" {trips.keys / n:.2f} per verify.",
    ]
    monitored = trips.monitored
    if monitored is None:
        lines.append(f"  {trips.monitor_note}")
        return lines

    def listing(counts: dict[str, int]) -> str:
        ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        return ", ".join(f"{name} {calls:,} ({calls / n:.3f}/verify)" for name, calls in ordered)

    sent = sum(monitored.instance.values())
    for_verifies = {
        name: calls for name, calls in monitored.instance.items() if name not in BACKGROUND
    }
    lines += [
        "  MONITOR, by sender (redis-cli monitor, from just before to just after the window,",
        "  so a little wider; EVALSHA by script; MONITOR itself slows Redis, hence verifies/s):",
        f"    sent by instance A ({sent:,}, {sent / n:.3f}/verify): "
        + (listing(monitored.instance) or "nothing"),
        f"    run inside scripts ({sum(monitored.in_scripts.values()):,}): "
        + (listing(monitored.in_scripts) or "nothing"),
        f"    sent by other clients ({sum(monitored.others.values()):,}; this script's INFO"
        " included): " + (listing(monitored.others) or "nothing"),
        f"  => commands instance A sent per verify, without its background sweep"
        f" ({', '.join(BACKGROUND)}): {sum(for_verifies.values()) / n:.3f}"
        f" ({listing(for_verifies) or 'nothing'})",
    ]
    return lines


def log_lines(logs: dict[str, list[str]]) -> list[str]:
    lines = []
    for name, log in logs.items():
        if log:
            lines.append(f"server log of instance {name}: {len(log)} line(s) at warning or above")
            lines += [f"    {line[:300]}" for line in log[:20]]
    return lines


def print_summary(args: argparse.Namespace, result: Result, load_start: float) -> None:
    rule = "-" * 104
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()
    lines = [
        rule,
        "Keyplane scale-out benchmark: verify on 1 and 2 instances sharing PostgreSQL and Redis",
        rule,
        f"machine     {usable} CPUs usable (nproc; os.cpu_count {os.cpu_count()}), {cpu_model()},"
        f" {platform.system()}",
        f"load        average {load_start:.2f} at start; at end {load[0]:.2f} / {load[1]:.2f} /"
        f" {load[2]:.2f} (1 / 5 / 15 min)",
        f"python      {platform.python_implementation()} {platform.python_version()},"
        f" keyplane {__version__}",
        f"database    {result.database}",
        f"redis       Redis {result.redis_version}, {args.redis_url}",
        "servers     keyplane serve, 1 process each, KEYPLANE_REDIS_URL set, log level warning,"
        " cache TTL 3600 s",
        f"keys        {result.created:,} created with POST /v1/keys in"
        f" {result.create_seconds:.1f} s; policy: rate windows 1e6/1s, 1e8/1m, 1e9/1d,"
        " budget 1e9 credits",
        f'verify      {{"key": ..., "cost": {COST}}}, cycling through every key; each valid'
        " verify holds a reservation (no usage report settles it)",
        f"generator   {result.generator} per wrk process, {args.concurrency} connections in"
        f" total, {args.duration} s per run after a discarded 1 s run",
        "",
        *throughput_lines(result),
        "",
        *round_trip_lines(result.round_trips),
    ]
    logs = log_lines(result.logs)
    if logs:
        lines += ["", *logs]
    if (os.cpu_count() or 1) <= 2:
        lines += [
            "",
            f"note: {os.cpu_count()} CPUs for everything: the instances, wrk, Redis and"
            " PostgreSQL compete for them.",
            "      Two instances cannot get a core each here, so the 2 / 1 ratio is a lower"
            " bound on what a second",
            "      instance adds on a machine of its own; the figures describe this box, not"
            " the design's ceiling.",
        ]
    lines.append(rule)
    print("\n".join(lines), flush=True)


# -- main -----------------------------------------------------------------------------------------


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run(args: argparse.Namespace) -> None:
    load_start = os.getloadavg()[0]
    target = SharedTarget(
        args.database_url,
        f"kp_bench_{secrets.token_hex(6)}",
        secrets.token_urlsafe(48),
        "kp-bench-root-" + secrets.token_urlsafe(32),
        redis_url=args.redis_url,  # by name: Target's own fields (log_level) come first
    )
    key_ids: list[str] = []
    with tempfile.TemporaryDirectory(prefix="keyplane-scale-bench-") as tmp:
        try:
            result = measure(target, args, Path(tmp), key_ids)
        finally:
            # The servers are stopped by now: nothing writes these keys any more.
            with contextlib.suppress(redis.RedisError):
                dropped = forget_redis_keys(args.redis_url, key_ids)
                progress(f"removed {dropped:,} Redis keys of the run's {len(key_ids):,} API keys")
    print_summary(args, result, load_start)


def main() -> None:
    args = parse_args()
    # Only the settings this script chooses apply, in the servers and in its own reads.
    for name in [name for name in os.environ if name.startswith("KEYPLANE_")]:
        del os.environ[name]
    signal.signal(signal.SIGTERM, _terminate)
    try:
        run(args)
    except KeyboardInterrupt:
        progress("interrupted; servers stopped, schema dropped, temporary files removed")
        sys.exit(130)


if __name__ == "__main__":
    main()
