"""Benchmark of usage reports (``POST /v1/usage``). Prints figures; asserts nothing about timings.

For each backend (SQLite in a temp dir, then PostgreSQL in a fresh schema), it starts the real
server on a free port, creates one key with a fully loaded policy through the API, and fires
usage reports at it for ``--duration`` seconds with each number of concurrent clients in
``--clients``. Every report has a request_id never used before, so every one is new and must
be answered 201 once it is committed (group commit: reports that arrive while a transaction is
being written share the next one). Per run it prints reports acknowledged per second, p50/p99
latency, transactions and reports per transaction, and CPU used by server and generator.

At the end of each backend it checks that the ledger (``usage_events``) holds exactly as many
rows as reports were acknowledged with 201, and exits with status 1 if not.

Run::

    .venv/bin/python bench/usage.py                              # SQLite and PostgreSQL
    .venv/bin/python bench/usage.py --backends sqlite --duration 3 --clients 1,16,64
    .venv/bin/python bench/usage.py --database-url postgresql://user@host:5432/db

The server is ``keyplane.api.app.create_app`` under uvicorn with the options ``keyplane serve``
uses, started as ``bench/usage.py --serve``: the same application plus one read-only route,
``GET /_bench/ledger``, which returns the ledger writer's transaction and report counters
(``runtime.ledger.batches`` / ``.reports``), which the API does not expose. Load comes from
``bench/_loadgen.py`` (not wrk: see its docstring for why the ledger check needs it). See
bench/README.md for how to read the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import re
import secrets
import signal
import sqlite3
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
from fastapi import Request  # at module level: FastAPI resolves the route's annotations here
from sqlalchemy import text

# bench/verify.py: this script's directory is the first entry of sys.path.
from verify import (
    LOADGEN_SCRIPT,
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
LEDGER_ROUTE = "/_bench/ledger"
#: The floor app (see its docstring), its table, and the key id its reports name.
FLOOR_SCRIPT = Path(__file__).resolve().with_name("_usage_floor.py")
FLOOR_TABLE = "usage_floor"
FLOOR_KEY_ID = "key_usage_floor"
WARMUP_SECONDS = 1
# The key's policy, in the API's form: one rule of every kind, with limits so high that no
# report or verify in a run comes near them. Reports settle its token windows and budget.
LOADED_POLICY: dict[str, Any] = {
    "models": {"allow": ["gpt-4*", "claude-3-*"], "deny": ["*-vision-*"]},
    "rate_limits": [
        {"name": "per_second", "limit": 1_000_000, "period": "1s"},
        {"name": "per_minute", "limit": 100_000_000, "period": "1m"},
        {"name": "per_day", "limit": 1_000_000_000, "period": "1d"},
    ],
    "token_limits": {
        "input_per_minute": 10**12,
        "output_per_minute": 10**12,
        "total_per_day": 10**12,
    },
    "budget": {"credit_limit": 1_000_000_000, "reset": "monthly", "alert_thresholds": [0.8, 1.0]},
    "network": {
        "ip_allow": ["203.0.113.0/24", "2001:db8::/32"],
        "ip_deny": ["203.0.113.7"],
        "origins": ["https://*.example.com"],
        "user_agent": r"^MyApp/\d+",
    },
}


# -- configuration --------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    cpus = os.cpu_count() or 1
    parser = argparse.ArgumentParser(
        description="Benchmark Keyplane's usage reports (POST /v1/usage) over HTTP."
    )
    parser.add_argument(
        "--backends",
        default="sqlite,postgresql",
        help="comma-separated: sqlite, postgresql (both)",
    )
    parser.add_argument(
        "--database-url",
        default=DEFAULT_POSTGRES_URL,
        help=f"the PostgreSQL server ({DEFAULT_POSTGRES_URL}); a fresh schema is used and dropped",
    )
    parser.add_argument(
        "--clients", default="1,16,64", help="concurrent clients, one run each (1,16,64)"
    )
    parser.add_argument("--duration", type=int, default=5, help="seconds per run (5)")
    parser.add_argument(
        "--processes",
        type=int,
        default=max(1, cpus // 2),
        help="load generator processes (half the CPUs)",
    )
    parser.add_argument(
        "--no-floor",
        dest="floor",
        action="store_false",
        help="skip the floor runs (bench/_usage_floor.py) that Keyplane is compared with",
    )
    # Internal: run the server itself (what the benchmark starts as a subprocess).
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return args
    args.backends = [name.strip() for name in args.backends.split(",") if name.strip()]
    if not args.backends or set(args.backends) - {"sqlite", "postgresql"}:
        parser.error("--backends takes sqlite, postgresql or both")
    if "postgresql" in args.backends and not is_postgresql(args.database_url):
        parser.error("--database-url must be a PostgreSQL URL")
    try:
        args.clients = [int(number) for number in args.clients.split(",")]
    except ValueError:
        parser.error("--clients takes numbers separated by commas, e.g. 1,16,64")
    if not args.clients or min(args.clients) < 1:
        parser.error("--clients takes numbers of at least 1")
    args.duration = max(1, args.duration)
    args.processes = max(1, args.processes)
    return args


def make_target(
    backend: str, args: argparse.Namespace, workdir: Path, name: str = "keyplane-usage-bench"
) -> Target:
    server_secret = secrets.token_urlsafe(48)
    root_key = "kp-bench-root-" + secrets.token_urlsafe(32)
    if backend == "sqlite":
        url = f"sqlite:///{workdir / f'{name}.db'}"
        return Target(url, None, server_secret, root_key)
    schema = f"kp_bench_{secrets.token_hex(6)}"
    return Target(args.database_url, schema, server_secret, root_key)


# -- the server -----------------------------------------------------------------------------------


def serve() -> None:
    """What ``keyplane serve`` does, plus ``GET /_bench/ledger``. Settings come from the env."""
    import uvicorn

    from keyplane.api.app import create_app
    from keyplane.cli.main import server_options
    from keyplane.settings import Settings

    settings = Settings()
    application = create_app(settings)

    async def ledger_counters(request: Request) -> dict[str, int]:
        ledger = request.app.state.runtime.ledger
        return {"batches": ledger.batches, "reports": ledger.reports}

    application.add_api_route(
        LEDGER_ROUTE, ledger_counters, methods=["GET"], include_in_schema=False
    )
    # As `keyplane serve` runs it: its protocol (the head capped, a response written in one
    # call), no uvicorn access log.
    uvicorn.run(application, **server_options(settings))


def server_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (Linux; 0 elsewhere)."""
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def create_key(url: str, root_key: str) -> str:
    """Create the benchmark's key through the API; returns its id."""
    response = httpx.post(
        f"{url}/v1/keys",
        json={"name": "usage bench", "policy": LOADED_POLICY},
        headers={"Authorization": f"Bearer {root_key}"},
        timeout=30,
    )
    if response.status_code != 201:
        raise SystemExit(f"creating the key failed: {response.status_code} {response.text}")
    key_id: str = response.json()["data"]["id"]
    return key_id


def ledger_counters(url: str) -> tuple[int, int]:
    """``(transactions, reports)`` the server's ledger writer has committed."""
    response = httpx.get(f"{url}{LEDGER_ROUTE}", timeout=30)
    if response.status_code != 200:
        raise SystemExit(f"{LEDGER_ROUTE}: {response.status_code} {response.text}")
    counters = response.json()
    return counters["batches"], counters["reports"]


# -- the database, read directly ------------------------------------------------------------------


async def _ledger_rows(target: Target, name: str = "usage_events") -> tuple[int, int | None]:
    """Rows in ``usage_events`` (or ``name``), and (PostgreSQL) how many transactions wrote
    them."""
    engine = create_engine(to_async_url(target.url))
    table = name if target.schema is None else f"{target.schema}.{name}"
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()  # noqa: S608
            if target.schema is None:
                return rows, None
            # xmin is the id of the transaction that inserted the row: an independent count
            # of the commits the group-commit writer made (xid has no ordering, hence ::text).
            writers = (
                await conn.execute(text(f"SELECT count(DISTINCT xmin::text) FROM {table}"))  # noqa: S608
            ).scalar_one()
            return rows, writers
    finally:
        await engine.dispose()


def ledger_rows(target: Target, name: str = "usage_events") -> tuple[int, int | None]:
    return asyncio.run(_ledger_rows(target, name))


async def _database_version(target: Target) -> str:
    if target.schema is None:
        return f"SQLite {sqlite3.sqlite_version} (file in a temp dir, WAL, synchronous=FULL)"
    engine = create_engine(to_async_url(target.url))
    try:
        async with engine.connect() as conn:
            version = (await conn.execute(text("SHOW server_version"))).scalar()
            sync = (await conn.execute(text("SHOW synchronous_commit"))).scalar()
    finally:
        await engine.dispose()
    return f"PostgreSQL {version} (schema {target.schema}, synchronous_commit={sync})"


# -- load -----------------------------------------------------------------------------------------


@dataclass
class Run:
    clients: int
    acked: int
    errors: int
    seconds: float
    p50_us: int
    p99_us: int
    max_us: int
    generator_cpu: float
    server_cpu: float
    batches: int
    reports: int
    rows: int

    @property
    def rate(self) -> float:
        return self.acked / self.seconds if self.seconds else 0.0

    @property
    def ledger_ok(self) -> bool:
        return self.rows == self.acked == self.reports


def load(
    server: Server, key_id: str, target: Target, clients: int, seconds: int, processes: int
) -> tuple[dict[str, int], float]:
    """One closed-loop run of ``clients`` connections: the generator's figures, and the CPU
    seconds the server used meanwhile."""
    command = [sys.executable, str(LOADGEN_SCRIPT), "--url", server.url, "--mode", "usage"]
    command += ["--key-id", key_id, "--processes", str(min(processes, clients))]
    command += ["--concurrency", str(clients), "--duration", str(seconds)]
    cpu = server_cpu_seconds(server.process.pid)
    completed = subprocess.run(
        command,
        env=child_env({"KEYPLANE_BENCH_ROOT_KEY": target.root_key}),
        capture_output=True,
        text=True,
    )
    cpu = server_cpu_seconds(server.process.pid) - cpu
    match = re.search(r"^KEYPLANE_BENCH (.*)$", completed.stdout, re.MULTILINE)
    if completed.returncode != 0 or match is None:
        raise SystemExit(
            f"load generator failed ({completed.returncode}):\n"
            f"{completed.stdout[-2000:]}{completed.stderr[-2000:]}"
        )
    return {name: int(v) for name, v in (p.split("=", 1) for p in match.group(1).split())}, cpu


def fire(
    server: Server, key_id: str, target: Target, clients: int, seconds: int, processes: int
) -> Run:
    """One closed-loop run of ``clients`` connections; counters read before and after."""
    batches, reports = ledger_counters(server.url)
    rows, _ = ledger_rows(target)
    figures, cpu = load(server, key_id, target, clients, seconds, processes)
    # The generator waited for every answer it was owed, so everything acknowledged is
    # committed by now; anything sent but not acknowledged shows up in errors.
    after_batches, after_reports = ledger_counters(server.url)
    after_rows, _ = ledger_rows(target)
    return Run(
        clients=clients,
        acked=figures["checked"] - figures["invalid"],
        errors=figures["errors"],
        seconds=figures["duration_us"] / 1_000_000,
        p50_us=figures["p50_us"],
        p99_us=figures["p99_us"],
        max_us=figures["max_us"],
        generator_cpu=figures["cpu_us"] / 1_000_000,
        server_cpu=cpu,
        batches=after_batches - batches,
        reports=after_reports - reports,
        rows=after_rows - rows,
    )


@dataclass
class BackendResult:
    backend: str
    description: str
    warmup: Run
    runs: list[Run]
    rows: int
    writers: int | None
    batches: int
    floor: list[FloorRun]

    @property
    def acked(self) -> int:
        return self.warmup.acked + sum(run.acked for run in self.runs)

    @property
    def ledger_ok(self) -> bool:
        return self.rows == self.acked and (self.writers is None or self.writers == self.batches)


def measure(backend: str, args: argparse.Namespace, workdir: Path) -> BackendResult:
    """Start the server on a fresh database, create the key, and run every client count."""
    target = make_target(backend, args, workdir)
    serve_command = [sys.executable, str(Path(__file__).resolve()), "--serve"]
    with provisioned(target), running_server(target, workdir, serve_command) as server:
        description = asyncio.run(_database_version(target))
        key_id = create_key(server.url, target.root_key)
        progress(f"{backend}: warm-up, 1 client for {WARMUP_SECONDS}s")
        warmup = fire(server, key_id, target, 1, WARMUP_SECONDS, args.processes)
        runs = []
        for clients in args.clients:
            progress(f"{backend}: {clients} client(s) for {args.duration}s")
            runs.append(fire(server, key_id, target, clients, args.duration, args.processes))
        batches, _ = ledger_counters(server.url)
        rows, writers = ledger_rows(target)
    floor = measure_floor(backend, args, workdir) if args.floor else []
    return BackendResult(backend, description, warmup, runs, rows, writers, batches, floor)


# -- the floor ------------------------------------------------------------------------------------


@dataclass
class FloorRun:
    """One run against bench/_usage_floor.py: the least a durable report can cost here."""

    clients: int
    acked: int
    seconds: float
    server_cpu: float
    rows: int

    @property
    def rate(self) -> float:
        return self.acked / self.seconds if self.seconds else 0.0

    @property
    def cpu_per_report_us(self) -> float:
        return self.server_cpu / self.acked * 1e6 if self.acked else 0.0


def measure_floor(backend: str, args: argparse.Namespace, workdir: Path) -> list[FloorRun]:
    """The same runs against the floor app, on its own SQLite file or PostgreSQL schema."""
    target = make_target(backend, args, workdir, name="usage-floor")
    command = [sys.executable, str(FLOOR_SCRIPT)]
    with provisioned(target), running_server(target, workdir, command) as server:
        progress(f"{backend} floor: warm-up, 1 client for {WARMUP_SECONDS}s")
        load(server, FLOOR_KEY_ID, target, 1, WARMUP_SECONDS, args.processes)
        runs = []
        for clients in args.clients:
            progress(f"{backend} floor: {clients} client(s) for {args.duration}s")
            before, _ = ledger_rows(target, FLOOR_TABLE)
            figures, cpu = load(
                server, FLOOR_KEY_ID, target, clients, args.duration, args.processes
            )
            after, _ = ledger_rows(target, FLOOR_TABLE)
            runs.append(
                FloorRun(
                    clients,
                    acked=figures["checked"] - figures["invalid"],
                    seconds=figures["duration_us"] / 1_000_000,
                    server_cpu=cpu,
                    rows=after - before,
                )
            )
    return runs


# -- report ---------------------------------------------------------------------------------------


def run_row(label: str, run: Run) -> str:
    per_txn = run.reports / run.batches if run.batches else 0.0
    cpu_per_report = run.server_cpu / run.acked * 1e6 if run.acked else 0.0
    ledger = f"+{run.rows:,} {'ok' if run.ledger_ok else 'MISMATCH'}"
    return (
        f"  {label:>8}{run.rate:>11,.0f}{run.p50_us / 1000:>9.2f}{run.p99_us / 1000:>9.2f}"
        f"{run.max_us / 1000:>9.1f}{run.acked:>9,}{run.errors:>7,}{run.batches:>8,}"
        f"{per_txn:>9.1f}{run.server_cpu / run.seconds:>8.0%}{cpu_per_report:>8,.0f}"
        f"{run.generator_cpu / run.seconds:>8.0%}  {ledger}"
    )


def backend_lines(result: BackendResult) -> list[str]:
    lines = [
        result.description,
        f"  {'clients':>8}{'reports/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'acked':>9}"
        f"{'errors':>7}{'txns':>8}{'rep/txn':>9}{'srv CPU':>8}{'µs/rep':>8}{'gen CPU':>8}"
        "  ledger",
        run_row("warm-up", result.warmup),
        *(run_row(str(run.clients), run) for run in result.runs),
        f"  ledger check: {result.rows:,} rows in usage_events,"
        f" {result.acked:,} reports acknowledged with 201 (warm-up included):"
        f" {'OK' if result.rows == result.acked else 'MISMATCH'}",
    ]
    if result.writers is not None:
        lines.append(
            f"  transactions: the rows carry {result.writers:,} distinct xmin,"
            f" the server counted {result.batches:,} ledger commits:"
            f" {'OK' if result.writers == result.batches else 'MISMATCH'}"
        )
    if result.floor:
        lines += [
            "  floor (bench/_usage_floor.py: the JSON parsed, then a group-committed INSERT;"
            " nothing else), same database engine, same uvicorn options:",
            f"  {'clients':>8}{'reports/s':>11}{'µs/rep':>8}{'rows':>9}   Keyplane µs/rep, ratio",
        ]
        mine = {run.clients: run for run in result.runs}
        for floor in result.floor:
            ours = mine[floor.clients]
            ours_us = ours.server_cpu / ours.acked * 1e6 if ours.acked else 0.0
            ratio = ours_us / floor.cpu_per_report_us if floor.cpu_per_report_us else 0.0
            rows = "ok" if floor.rows == floor.acked else "MISMATCH"
            lines.append(
                f"  {floor.clients:>8}{floor.rate:>11,.0f}{floor.cpu_per_report_us:>8,.0f}"
                f"{rows:>9}   {ours_us:,.0f} µs, {ratio:.2f}x"
            )
    errors = result.warmup.errors + sum(run.errors for run in result.runs)
    if errors:
        lines.append("  WARNING: the generator saw errors (non-2xx, timeouts or socket errors)")
    return lines


def print_summary(args: argparse.Namespace, results: list[BackendResult], load: float) -> None:
    rule = "-" * 112
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    lines = [
        rule,
        "Keyplane usage-report benchmark: POST /v1/usage, every report new",
        rule,
        f"machine     {usable} CPUs usable (nproc), {cpu_model()}, {platform.system()},"
        f" load average {load:.2f} at start",
        f"python      {platform.python_implementation()} {platform.python_version()},"
        f" keyplane {__version__}",
        "server      1 process: keyplane's app under uvicorn as keyplane serve runs it,"
        f" plus GET {LEDGER_ROUTE} (the ledger's commit counters)",
        f"generator   bench/_loadgen.py, {args.processes} process(es), closed loop,"
        f" {args.duration} s per run; it waits for every answer it is owed",
        "report      {cost 0.01, 100 + 50 tokens, model gpt-4o, unique request_id}, one key"
        " with a fully loaded policy (budget, token windows)",
    ]
    for result in results:
        lines += ["", *backend_lines(result)]
    if (os.cpu_count() or 1) <= 2:
        lines += [
            "",
            "note: server, generator (and PostgreSQL) share 2 CPUs; figures are a lower bound",
        ]
    lines.append(rule)
    print("\n".join(lines), flush=True)


# -- main -----------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> bool:
    load = os.getloadavg()[0]
    results = []
    with tempfile.TemporaryDirectory(prefix="keyplane-usage-bench-") as tmp:
        for backend in args.backends:
            workdir = Path(tmp) / backend
            workdir.mkdir()
            results.append(measure(backend, args, workdir))
    print_summary(args, results, load)
    return all(result.ledger_ok for result in results)


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    args = parse_args()
    if args.serve:
        serve()
        return
    # Only the settings this script chooses apply, in the server and in its own reads.
    for name in [name for name in os.environ if name.startswith("KEYPLANE_")]:
        del os.environ[name]
    signal.signal(signal.SIGTERM, _terminate)
    try:
        ok = run(args)
    except KeyboardInterrupt:
        progress("interrupted; server stopped and temporary files removed")
        sys.exit(130)
    if not ok:
        progress("the ledger does not match the reports acknowledged")
        sys.exit(1)


if __name__ == "__main__":
    main()
