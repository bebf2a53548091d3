"""Benchmark of Keyplane's verify hot path. Prints figures; asserts nothing about timings.

What it measures, against one database pre-filled with ``--keys`` API keys (bulk-inserted
straight into ``api_keys`` / ``api_key_secrets`` through SQLAlchemy Core):

(a) in process: ``Verifier.verify`` called in a loop on one event loop, over a sample of
    ``--sample`` distinct keys. The first pass over the sample is the *cold* figure (every
    call misses the cache and queries the database); then the sample is verified over and
    over for ``--duration`` seconds on the warm cache (calls/s, µs per call, cache hit rate).
(b) over HTTP: the real server (``keyplane serve``, a subprocess on a free port) under load
    from a separate generator process (``wrk`` with ``bench/wrk_verify.lua`` when installed,
    else ``bench/_loadgen.py``): ``POST /v1/verify`` rotating through the sample keys, and
    ``GET /healthz`` with the same generator and settings, for throughput and p50/p99
    latency, and the verify/healthz ratios.
(c) a fully loaded policy: ``--policy-keys`` keys created through ``KeyService`` with every
    kind of rule (models, three rate windows, token windows, a monthly budget, IP, origin and
    user-agent rules, features, operations, data access and routing; limits no run comes
    near), verified with a request context that passes
    them all. In process: warm calls/s with the context only, then also with a cost and
    token estimate (each such call holds a reservation until a usage report settles it or it
    times out; this benchmark sends no usage reports). Over HTTP: ``POST /v1/verify`` with
    the full body (``bench/wrk_verify.lua`` in its ``bodies`` mode), next to the plain-key figures.

Run::

    .venv/bin/python bench/verify.py                      # 100k keys, SQLite in a temp dir
    .venv/bin/python bench/verify.py --keys 5000 --duration 3
    .venv/bin/python bench/verify.py --skip-policy        # only the plain-key figures
    .venv/bin/python bench/verify.py --database-url postgresql://postgres@127.0.0.1:5432/test

With PostgreSQL the tables go in a fresh schema (``KEYPLANE_DATABASE_SCHEMA``) that is created
for the run and dropped afterwards. Temporary files and the server are cleaned up on exit,
including Ctrl-C. See bench/README.md for how to read the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import hashlib
import itertools
import json
import os
import platform
import random
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

import httpx
from sqlalchemy import insert, text

from keyplane import __version__
from keyplane.domain import ids, keyformat, request_signing
from keyplane.domain.crypto import key_digest
from keyplane.domain.policy import RequestContext
from keyplane.domain.tenancy import Principal
from keyplane.errors import ConfigurationError
from keyplane.services.keys import NewKey
from keyplane.services.runtime import Runtime
from keyplane.services.verify import VerifyRequest
from keyplane.settings import Settings, to_async_url
from keyplane.store.tables import api_key_secrets, api_keys
from keyplane.store.unit import create_engine

BENCH_DIR = Path(__file__).resolve().parent
WRK_SCRIPT = BENCH_DIR / "wrk_verify.lua"
LOADGEN_SCRIPT = BENCH_DIR / "_loadgen.py"
INSERT_CHUNK = 5_000
# Long enough that nothing expires during a run: the "warm" figures are pure cache hits.
CACHE_TTL_SECONDS = 3600
SERVER_START_TIMEOUT = 60.0

# The fully loaded policy, in storage form (budget in micro-credits, periods in seconds): one
# rule of every kind verify evaluates, with limits high enough that no run is ever refused.
LOADED_POLICY: dict[str, object] = {
    "models": {"allow": ["gpt-4*", "claude-3-*"], "deny": ["*-vision-*"]},
    "rate_limits": [
        {"name": "per_second", "limit": 1_000_000, "period": 1},
        {"name": "per_minute", "limit": 100_000_000, "period": 60},
        {"name": "per_day", "limit": 1_000_000_000, "period": 86_400},
    ],
    "token_limits": {
        "input_per_minute": 10**12,
        "output_per_minute": 10**12,
        "total_per_day": 10**12,
    },
    "budget": {
        "credit_limit_micros": 10**15,
        "reset": "monthly",
        "alert_thresholds": [0.8, 1.0],
    },
    "network": {
        "ip_allow": ["203.0.113.0/24", "2001:db8::/32"],
        "ip_deny": ["203.0.113.7"],
        "origins": ["https://*.example.com"],
        "user_agent": r"^MyApp/\d+",
    },
    "features": {"allow": ["chat_completion", "embeddings", "streaming"], "deny": ["vision"]},
    "advanced_features": {"batch_processing": True, "priority_queue": False},
    "data_access": {"log_requests": True, "log_responses": False},
    "operations": ["read", "write"],
    "routing": {"allowed_providers": ["openai", "anthropic"], "fallback_allowed": True},
}
# LOADED_POLICY plus three cost windows and a per-request cap (``costs``), beside the budget:
# four budget counters per verify instead of one.
COSTS_POLICY: dict[str, object] = {
    **LOADED_POLICY,
    "costs": {
        "per_request_max_micros": 10**12,
        "per_hour_max_micros": 10**15,
        "per_day_max_micros": 10**15,
        "per_month_max_micros": 10**15,
        "alert_threshold": 0.8,
    },
}
# Issue 16's whole policy: COSTS_POLICY (LOADED_POLICY, which has the feature, operation and
# routing rules, plus three cost windows) with signed requests (HMAC-SHA256, timestamp, nonce)
# and the transport rules: HTTPS, a country allow list, user-agent globs and domains.
SIGNED_POLICY: dict[str, object] = {
    **COSTS_POLICY,
    "network": {
        **LOADED_POLICY["network"],  # type: ignore[dict-item]
        "require_https": True,
        "countries_allow": ["DE", "FR", "US"],
        "user_agents": ["MyApp/*"],
        "domains": ["*.example.com"],
    },
    "signing": {"required": True, "max_timestamp_age": 300, "require_nonce": True},
}
_SIGNED_COUNTER = itertools.count()  # nonces unique across every maker
_SIGNED_BODY_SHA256 = hashlib.sha256(b'{"model":"gpt-4o"}').hexdigest()
# A request that passes every rule of LOADED_POLICY, and what it reserves.
LOADED_CONTEXT = RequestContext(
    model="gpt-4o",
    ip="203.0.113.5",
    origin="https://app.example.com",
    user_agent="MyApp/1.2",
    features=("chat_completion", "streaming"),
    operation="write",
    provider="openai",
)
LOADED_COST_MICROS = 100  # 0.0001 credits
# Alternating slices comparing the loaded policy with and without cost windows.
COMPARE_ROUNDS = 6
LOADED_TOKENS_IN, LOADED_TOKENS_OUT = 10, 5


# -- configuration --------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    cpus = os.cpu_count() or 1
    parser = argparse.ArgumentParser(
        description="Benchmark Keyplane's verify path (in process and over HTTP)."
    )
    parser.add_argument("--keys", type=int, default=100_000, help="API keys stored (100000)")
    parser.add_argument(
        "--sample", type=int, default=10_000, help="distinct keys verified (10000, <= --keys)"
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per timed run (10)")
    parser.add_argument(
        "--concurrency", type=int, default=64, help="HTTP connections held open (64)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=max(1, cpus // 2),
        help="wrk threads / load generator processes (half the CPUs)",
    )
    parser.add_argument(
        "--database-url",
        help="PostgreSQL URL to use instead of a temporary SQLite file "
        "(e.g. postgresql://postgres@127.0.0.1:5432/test); a fresh schema is used and dropped",
    )
    parser.add_argument(
        "--generator",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="HTTP load generator: wrk if installed (auto), or the Python fallback",
    )
    parser.add_argument("--skip-http", action="store_true", help="only measure in process")
    parser.add_argument(
        "--http-rounds",
        type=int,
        default=3,
        help="alternating HTTP runs of the loaded and the combined policy (3; 0: none)",
    )
    parser.add_argument(
        "--policy-keys",
        type=int,
        default=10,
        help="keys with the fully loaded policy, created through KeyService (10)",
    )
    parser.add_argument(
        "--skip-policy", action="store_true", help="only the plain keys (no loaded policy)"
    )
    args = parser.parse_args()
    if args.database_url is not None and not is_postgresql(args.database_url):
        parser.error("--database-url is for PostgreSQL; SQLite runs in a temp dir by default")
    args.sample = max(1, min(args.sample, args.keys))
    args.duration = max(1, args.duration)
    args.threads = max(1, min(args.threads, args.concurrency))
    args.policy_keys = max(1, args.policy_keys)
    return args


def is_postgresql(url: str) -> bool:
    try:
        return to_async_url(url).startswith("postgresql")
    except ConfigurationError:
        return False


@dataclass(frozen=True)
class Target:
    """The database under test and the secrets the in-process runtime and server share."""

    url: str
    schema: str | None
    server_secret: str
    root_key: str
    #: ``info`` writes the access log (the default of a deployment); ``warning`` does not.
    log_level: str = "warning"

    def env(self) -> dict[str, str]:
        """``KEYPLANE_*`` settings, used both for the in-process Runtime and the server."""
        values = {
            "KEYPLANE_DATABASE_URL": self.url,
            "KEYPLANE_SECRET": self.server_secret,
            "KEYPLANE_ROOT_KEY": self.root_key,
            "KEYPLANE_LOG_LEVEL": self.log_level,
            "KEYPLANE_CACHE_TTL_SECONDS": str(CACHE_TTL_SECONDS),
        }
        if self.schema is not None:
            values["KEYPLANE_DATABASE_SCHEMA"] = self.schema
        return values

    def settings(self) -> Settings:
        fields = {name.removeprefix("KEYPLANE_").lower(): v for name, v in self.env().items()}
        return Settings(**fields)  # type: ignore[arg-type]


def make_target(args: argparse.Namespace, workdir: Path) -> Target:
    server_secret = secrets.token_urlsafe(48)
    root_key = "kp-bench-root-" + secrets.token_urlsafe(32)
    if args.database_url is None:
        url = f"sqlite:///{workdir / 'keyplane-bench.db'}"
        return Target(url, None, server_secret, root_key)
    schema = f"kp_bench_{secrets.token_hex(6)}"
    return Target(args.database_url, schema, server_secret, root_key)


async def _run_ddl(url: str, statement: str) -> None:
    engine = create_engine(to_async_url(url))
    try:
        async with engine.begin() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


@contextlib.contextmanager
def provisioned(target: Target) -> Iterator[None]:
    """Create the PostgreSQL schema for the run and drop it afterwards (SQLite: nothing)."""
    if target.schema is None:
        yield
        return
    asyncio.run(_run_ddl(target.url, f"CREATE SCHEMA {target.schema}"))
    try:
        yield
    finally:
        asyncio.run(_run_ddl(target.url, f"DROP SCHEMA {target.schema} CASCADE"))


# -- (a) filling the database and verifying in process --------------------------------------------


@dataclass
class Passes:
    """Calls made by :func:`verify_passes`, with the rate at the start and at the end."""

    calls: int
    seconds: float
    hit_rate: float
    first_rate: float
    last_rate: float
    edge_seconds: float  # how long "the start" and "the end" are

    @property
    def figures(self) -> tuple[int, float, float]:
        return self.calls, self.seconds, self.hit_rate


@dataclass
class PolicyResult:
    keys: int
    create_seconds: float
    cold: Passes
    context_only: Passes
    reserving: Passes
    reservation_timeout: int
    #: The reserving run on keys that also have three cost windows (COSTS_POLICY).
    costs: Passes
    #: Seconds per call, the best of alternating slices: loaded policy, and with cost windows.
    best_loaded: float
    best_costs: float
    #: SIGNED_POLICY, context only (each call a fresh nonce, signed before the timed run).
    signed: Passes | None = None
    #: Median µs per call, loaded then signed, from short alternating bursts (see
    #: :func:`interleaved`): on a shared machine, load drift hits both alike.
    interleaved: tuple[float, float] | None = None
    #: The same with each call's cost and token estimate: every budget and cost window reserves.
    interleaved_reserving: tuple[float, float] | None = None
    #: The SIGNED_POLICY keys and their signing secrets, for the HTTP comparison.
    signed_secrets: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclass
class InProcessResult:
    insert_seconds: float
    database_version: str
    cold: Passes
    warm: Passes
    policy: PolicyResult | None


def key_rows(
    count: int, runtime: Runtime, server_secret: bytes
) -> Iterator[tuple[str, dict[str, object], dict[str, object]]]:
    """``(plaintext key, api_keys row, api_key_secrets row)`` for ``count`` new active keys."""
    project = runtime.default_project
    now = datetime.now(UTC)
    for number in range(count):
        parsed = keyformat.generate(keyformat.KeyKind.LIVE, project.key_prefix)
        digest = key_digest(server_secret, parsed.text)
        key_id = ids.new_id("key")
        key_row: dict[str, object] = {
            "id": key_id,
            "org_id": project.org_id,
            "project_id": project.id,
            "hash": digest,
            "start": parsed.start,
            "end": parsed.end,
            "name": f"bench key {number}",
            "environment": "live",
            "tags": [],
            "meta": {},
            "scopes": [],
            "policy": {},
            "status": "active",
            "created_at": now,
            "updated_at": now,
        }
        secret_row: dict[str, object] = {
            "hash": digest,
            "key_id": key_id,
            "created_at": now,
            "valid_until": None,
        }
        yield parsed.text, key_row, secret_row


async def bulk_insert(runtime: Runtime, count: int, server_secret: bytes) -> list[str]:
    """Insert ``count`` keys in chunks, bypassing the services; returns the plaintext keys."""
    keys: list[str] = []
    rows = key_rows(count, runtime, server_secret)
    async with runtime.store.engine.begin() as conn:
        while True:
            chunk = list(itertools.islice(rows, INSERT_CHUNK))
            if not chunk:
                break
            keys.extend(key for key, _, _ in chunk)
            await conn.execute(insert(api_keys), [key_row for _, key_row, _ in chunk])
            await conn.execute(insert(api_key_secrets), [secret for _, _, secret in chunk])
    return keys


async def database_version(runtime: Runtime) -> str:
    if runtime.store.engine.dialect.name == "sqlite":
        return f"SQLite {sqlite3.sqlite_version}"
    async with runtime.store.engine.connect() as conn:
        version = (await conn.execute(text("SHOW server_version"))).scalar()
    return f"PostgreSQL {version}"


def plain_request(key: str) -> VerifyRequest:
    return VerifyRequest(key)


def loaded_request(key: str) -> VerifyRequest:
    """Context, cost and tokens: the call holds a reservation until it is settled or expires."""
    return VerifyRequest(
        key,
        context=LOADED_CONTEXT,
        cost=LOADED_COST_MICROS,
        tokens_in=LOADED_TOKENS_IN,
        tokens_out=LOADED_TOKENS_OUT,
    )


def context_request(key: str) -> VerifyRequest:
    """The loaded request without cost or tokens: every rule is checked, nothing is held."""
    return VerifyRequest(key, context=LOADED_CONTEXT)


async def verify_passes(
    runtime: Runtime,
    principal: Principal,
    sample: list[str],
    duration: float,
    make_request: Callable[[str], VerifyRequest] = plain_request,
) -> Passes:
    """Verify the sample over and over, at least once and until ``duration`` has passed.

    Every verdict must be valid. The requests are built inside the timed loop, as the API
    route builds one per call.
    """
    verifier, cache = runtime.services.verifier, runtime.directory.hashes
    hits, misses = cache.hits, cache.misses
    calls = 0
    started = time.perf_counter()
    deadline = started + duration
    progress_points = [(0.0, 0)]  # (seconds since start, calls so far), after every pass
    while True:
        for key in sample:
            verdict = await verifier.verify(principal, make_request(key))
            if not verdict.valid:
                raise SystemExit(f"bench key did not verify: {verdict.code}")
        calls += len(sample)
        finished = time.perf_counter()
        progress_points.append((finished - started, calls))
        if finished >= deadline:
            break
    lookups = (cache.hits - hits) + (cache.misses - misses)
    seconds = finished - started
    edge = min(1.0, seconds / 4)
    first = next(point for point in progress_points if point[0] >= edge)
    last = max((point for point in progress_points if point[0] <= seconds - edge), default=first)
    return Passes(
        calls=calls,
        seconds=seconds,
        hit_rate=(cache.hits - hits) / max(1, lookups),
        first_rate=first[1] / first[0] if first[0] else 0.0,
        last_rate=(calls - last[1]) / (seconds - last[0]) if seconds > last[0] else 0.0,
        edge_seconds=edge,
    )


async def measure_policy(
    runtime: Runtime, principal: Principal, args: argparse.Namespace
) -> tuple[list[str], PolicyResult]:
    """Create the loaded-policy keys through KeyService, then time verify on them."""
    progress(f"creating {args.policy_keys} keys with the fully loaded policy")
    started = time.perf_counter()
    keys = [
        (
            await runtime.services.keys.create(
                principal, NewKey(f"loaded {n}", policy=LOADED_POLICY)
            )
        ).secret
        for n in range(args.policy_keys)
    ]
    create_seconds = time.perf_counter() - started
    progress(
        f"verifying them in process (context only, then with cost and tokens,"
        f" {args.duration}s each)"
    )
    # The first call on a key loads it and seeds its budget counter from the ledger.
    cold = await verify_passes(runtime, principal, keys, 0, context_request)
    # Context only first: the reserving run leaves reservations behind that the other would
    # then walk past (see README, "Reading the figures").
    context_only = await verify_passes(runtime, principal, keys, args.duration, context_request)
    reserving = await verify_passes(runtime, principal, keys, args.duration, loaded_request)
    timeout = runtime.settings.reservation_timeout_seconds
    progress(f"the same with three cost windows ({args.policy_keys} more keys)")
    cost_keys = [
        (
            await runtime.services.keys.create(principal, NewKey(f"costs {n}", policy=COSTS_POLICY))
        ).secret
        for n in range(args.policy_keys)
    ]
    await verify_passes(runtime, principal, cost_keys, 0, context_request)  # load and seed
    costs = await verify_passes(runtime, principal, cost_keys, args.duration, loaded_request)
    # On a shared machine two runs seconds apart see different loads: compare the two
    # policies in short alternating slices, the best slice of each.
    slices: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(COMPARE_ROUNDS):
        for with_costs in (False, True):
            passes = await verify_passes(
                runtime,
                principal,
                cost_keys if with_costs else keys,
                args.duration / COMPARE_ROUNDS,
                loaded_request,
            )
            slices[with_costs].append(passes.seconds / passes.calls)
    progress(f"verifying {args.policy_keys} keys with signing and transport rules")
    secrets_of: dict[str, str] = {}
    for n in range(args.policy_keys):
        issued = await runtime.services.keys.create(
            principal, NewKey(f"signed {n}", policy=SIGNED_POLICY)
        )
        assert issued.signing_secret is not None
        secrets_of[issued.secret] = issued.signing_secret
    # Signed ahead of the timed run, as clients sign them: the figure is the server's cost.
    make_inline = signed_request_maker(secrets_of)
    per_key = args.duration * 1000 + 10  # past ~10,000 calls/s the rest are signed inline
    presigned = {
        key: collections.deque(make_inline(key) for _ in range(per_key)) for key in secrets_of
    }

    def make_signed(key: str) -> VerifyRequest:
        pool = presigned[key]
        return pool.popleft() if pool else make_inline(key)  # inline past the pool

    await verify_passes(runtime, principal, list(secrets_of), 0, make_signed)  # load them
    signed = await verify_passes(runtime, principal, list(secrets_of), args.duration, make_signed)
    alternating = await interleaved(runtime, principal, keys, secrets_of)
    progress("the same alternating bursts, each call with a cost and token estimate")
    reserving_pair = await interleaved(runtime, principal, keys, secrets_of, reserving=True)
    return keys, PolicyResult(
        len(keys),
        create_seconds,
        cold,
        context_only,
        reserving,
        timeout,
        costs,
        min(slices[False]),
        min(slices[True]),
        signed,
        alternating,
        signed_secrets=secrets_of,
        interleaved_reserving=reserving_pair,
    )


async def interleaved(
    runtime: Runtime,
    principal: Principal,
    loaded: list[str],
    secrets_of: dict[str, str],
    reserving: bool = False,
) -> tuple[float, float]:
    """Median µs per call of the loaded and the signed policy, from 60 alternating bursts.

    Separate timed runs drift apart on a loaded machine (2x either way was seen); alternating
    short bursts puts both under the same load. Requests are built before each burst.
    """
    verifier = runtime.services.verifier
    make_signed = signed_request_maker(secrets_of)
    loaded_times: list[float] = []
    signed_times: list[float] = []
    for _ in range(60):
        plain = [
            (loaded_request if reserving else context_request)(key)
            for _ in range(20)
            for key in loaded
        ]
        signed = [make_signed(key) for _ in range(20) for key in secrets_of]
        if reserving:
            signed = [
                dataclasses.replace(
                    request,
                    cost=LOADED_COST_MICROS,
                    tokens_in=LOADED_TOKENS_IN,
                    tokens_out=LOADED_TOKENS_OUT,
                )
                for request in signed
            ]
        for requests, times in ((plain, loaded_times), (signed, signed_times)):
            started = time.perf_counter()
            for request in requests:
                if not (await verifier.verify(principal, request)).valid:
                    raise SystemExit("an interleaved bench request did not verify")
            times.append((time.perf_counter() - started) / len(requests) * 1e6)
    return statistics.median(loaded_times), statistics.median(signed_times)


def signed_request_maker(secrets_of: dict[str, str]) -> Callable[[str], VerifyRequest]:
    """Requests that pass SIGNED_POLICY, each with a fresh nonce, signed as a client would."""
    counter = _SIGNED_COUNTER

    def make(key: str) -> VerifyRequest:
        now = str(int(time.time()))
        nonce = f"bench-nonce-{next(counter):016d}"
        signature = request_signing.sign(
            secrets_of[key], "POST", "/v1/chat", "", now, nonce, _SIGNED_BODY_SHA256
        )
        signed = request_signing.signed_request(
            signature, "POST", "/v1/chat", "", now, nonce, _SIGNED_BODY_SHA256
        )
        context = dataclasses.replace(LOADED_CONTEXT, scheme="https", country="DE", signed=signed)
        return VerifyRequest(key, context=context)

    return make


async def fill_and_measure(
    target: Target, args: argparse.Namespace
) -> tuple[list[str], list[str], InProcessResult]:
    """Start a Runtime (which migrates), fill the database, and time ``Verifier.verify``.

    Returns the plain sample keys, the loaded-policy keys (none with ``--skip-policy``) and
    the in-process figures.
    """
    runtime = await Runtime.start(target.settings())
    try:
        server_secret = target.server_secret.encode("utf-8")
        progress(f"inserting {args.keys:,} keys")
        started = time.perf_counter()
        keys = await bulk_insert(runtime, args.keys, server_secret)
        insert_seconds = time.perf_counter() - started
        sample = random.sample(keys, args.sample)
        principal = await runtime.services.management.authenticate(target.root_key)
        progress(
            f"verifying {len(sample):,} keys in process (cold, then warm for {args.duration}s)"
        )
        cold = await verify_passes(runtime, principal, sample, 0)
        warm = await verify_passes(runtime, principal, sample, args.duration)
        policy_keys: list[str] = []
        policy = None
        if not args.skip_policy:
            policy_keys, policy = await measure_policy(runtime, principal, args)
        version = await database_version(runtime)
    finally:
        await runtime.stop()
    return sample, policy_keys, InProcessResult(insert_seconds, version, cold, warm, policy)


# -- (b) the real server under HTTP load ----------------------------------------------------------


@dataclass
class LoadResult:
    requests: int
    seconds: float
    p50_us: int
    p90_us: int
    p99_us: int
    max_us: int
    errors: int
    checked: int
    invalid: int

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def free_port() -> int:
    """A free TCP port: any, or the first free one of ``BENCH_PORTS`` (``8300-8399``) or of
    the hundred from ``BENCH_PORT_BASE`` when set, for machines where each user of the
    benchmarks keeps to a range of its own."""
    wanted = os.environ.get("BENCH_PORTS")
    base = os.environ.get("BENCH_PORT_BASE")
    if not wanted and base:
        wanted = f"{int(base)}-{int(base) + 99}"
    if wanted:
        low, _, high = wanted.partition("-")
        for candidate in range(int(low), int(high or low) + 1):
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", candidate))
                except OSError:
                    continue
                return candidate
        raise SystemExit(f"no free port in BENCH_PORTS={wanted}")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without inherited ``KEYPLANE_*`` settings, plus ``extra``."""
    env = {name: v for name, v in os.environ.items() if not name.startswith("KEYPLANE_")}
    env.update(extra)
    return env


@dataclass(frozen=True)
class Server:
    url: str
    process: subprocess.Popen[bytes]


@contextlib.contextmanager
def running_server(
    target: Target, workdir: Path, command: list[str] | None = None
) -> Iterator[Server]:
    """``keyplane serve`` (or ``command``) on a free port; stopped on exit.

    The server reads its settings from the environment: ``target.env()`` plus host and port.
    """
    if command is None:
        command = [str(Path(sys.executable).with_name("keyplane")), "serve"]
    port = free_port()
    log_path = workdir / "server.log"
    env = child_env({**target.env(), "KEYPLANE_HOST": "127.0.0.1", "KEYPLANE_PORT": str(port)})
    with log_path.open("wb") as log:
        # Own session: a Ctrl-C in the terminal reaches us, and we stop the server in order.
        process = subprocess.Popen(command, env=env, stdout=log, stderr=log, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(process, url, log_path)
        yield Server(url, process)
    finally:
        stop_process(process)
        report_server_log(log_path)


def wait_until_ready(server: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"keyplane serve exited early:\n{log_path.read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200:
                return
        time.sleep(0.1)
    raise SystemExit(f"keyplane serve not ready after {SERVER_START_TIMEOUT:.0f}s")


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def report_server_log(log_path: Path) -> None:
    """Show what the server logged: at level warning, anything at all is worth a look."""
    lines = log_path.read_text(errors="replace").splitlines() if log_path.exists() else []
    if lines:
        progress(f"the server logged {len(lines)} line(s); first ones:")
        for line in lines[:5]:
            print("    " + line[:300], file=sys.stderr)


@dataclass(frozen=True)
class Generator:
    """One load generator configuration, applied identically to every endpoint."""

    kind: str  # "wrk" or "python"
    url: str
    keys_file: Path
    root_key: str
    threads: int
    connections: int
    #: Full verify bodies, one JSON document per line (mode "bodies").
    bodies_file: Path | None = None
    #: Open loop at this many requests per second (bench/_loadgen.py only); None: closed.
    rate: float | None = None

    @property
    def description(self) -> str:
        if self.kind == "wrk":
            version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout
            name = version.split("Copyright")[0].strip() or "wrk"
            return f"{name}, {self.threads} thread(s)"
        return f"Python asyncio HTTP/1.1 client (bench/_loadgen.py), {self.threads} process(es)"

    def command(self, mode: str, seconds: int, check: bool) -> list[str]:
        """``mode``: "verify" (plain keys), "bodies" (loaded-policy bodies) or "healthz"."""
        if self.kind == "wrk":
            if self.rate is not None:
                raise SystemExit("an open loop (rate) needs bench/_loadgen.py, not wrk")
            script = WRK_SCRIPT
            command = ["wrk", "-t", str(self.threads), "-c", str(self.connections)]
            command += ["-d", f"{seconds}s", "--timeout", "10s", "-s", str(script), self.url]
            source = self.bodies_file if mode == "bodies" else self.keys_file
            command += ["--", mode, str(source), str(self.threads)]
            return [*command, "check"] if check else command
        command = [sys.executable, str(LOADGEN_SCRIPT), "--url", self.url, "--mode", mode]
        command += ["--keys-file", str(self.keys_file), "--processes", str(self.threads)]
        if self.bodies_file is not None:
            command += ["--bodies-file", str(self.bodies_file)]
        command += ["--concurrency", str(self.connections), "--duration", str(seconds)]
        if self.rate is not None:
            command += ["--rate", f"{self.rate:.1f}"]
        return [*command, "--check"] if check else command

    def run(self, mode: str, seconds: int, check: bool = False) -> LoadResult:
        env = child_env({"KEYPLANE_BENCH_ROOT_KEY": self.root_key})
        completed = subprocess.run(
            self.command(mode, seconds, check), env=env, capture_output=True, text=True
        )
        match = re.search(r"^KEYPLANE_BENCH (.*)$", completed.stdout, re.MULTILINE)
        if completed.returncode != 0 or match is None:
            raise SystemExit(
                f"load generator failed ({completed.returncode}):\n"
                f"{completed.stdout[-2000:]}{completed.stderr[-2000:]}"
            )
        figures = dict(pair.split("=", 1) for pair in match.group(1).split())
        return LoadResult(
            requests=int(figures["requests"]),
            seconds=int(figures["duration_us"]) / 1_000_000,
            p50_us=int(figures["p50_us"]),
            p90_us=int(figures["p90_us"]),
            p99_us=int(figures["p99_us"]),
            max_us=int(figures["max_us"]),
            errors=int(figures["errors"]),
            checked=int(figures["checked"]),
            invalid=int(figures["invalid"]),
        )


def choose_generator_kind(wanted: str) -> str:
    have_wrk = shutil.which("wrk") is not None
    if wanted == "wrk" and not have_wrk:
        raise SystemExit("--generator wrk: wrk is not installed (apt-get install -y wrk)")
    if wanted == "auto":
        return "wrk" if have_wrk else "python"
    return wanted


def warm_server(
    generator: Generator, sample_size: int, mode: str = "verify", seconds: int = 3
) -> LoadResult:
    """Load every sample key into the server's cache, checking each verdict is valid.

    The generator walks the keys in order, so one run with at least ``sample_size`` requests
    has touched them all; the first run also tells how long such a run needs.
    """
    for _ in range(4):
        result = generator.run(mode, seconds, check=True)
        if result.invalid:
            raise SystemExit(f"{result.invalid} of {result.checked} verify answers not valid")
        if result.requests >= sample_size:
            return result
        seconds = int(sample_size / max(result.rate, 1.0) * 1.5) + 1
    raise SystemExit("could not warm the server's cache: too few requests per run")


@dataclass
class HttpResult:
    generator: str
    warmup: LoadResult
    verify: LoadResult
    healthz: LoadResult
    loaded_warmup: LoadResult | None
    loaded: LoadResult | None
    combined_warmup: LoadResult | None = None
    #: Alternating runs, (loaded policy, combined policy) per round: see :func:`measure_combined`.
    rounds: list[tuple[LoadResult, LoadResult]] = dataclasses.field(default_factory=list)


def loaded_body(key: str) -> str:
    """The HTTP form of :func:`loaded_request`, on one line."""
    context = LOADED_CONTEXT
    return json.dumps(
        {
            "key": key,
            "model": context.model,
            "ip": context.ip,
            "origin": context.origin,
            "user_agent": context.user_agent,
            "cost": LOADED_COST_MICROS / 1_000_000,
            "tokens": {"input": LOADED_TOKENS_IN, "output": LOADED_TOKENS_OUT},
            "features": list(context.features),
            "operation": context.operation,
            "provider": context.provider,
        }
    )


def combined_bodies(secrets_of: dict[str, str], count: int) -> list[str]:
    """``count`` bodies that pass SIGNED_POLICY over HTTP: the loaded body (with its cost and
    token estimate, so the three cost windows reserve) plus scheme, country and a signature
    with a nonce of its own, signed now as a client would. Each body verifies once."""
    keys = list(secrets_of)
    now = str(int(time.time()))
    bodies = []
    for n in range(count):
        key = keys[n % len(keys)]
        nonce = f"http-nonce-{next(_SIGNED_COUNTER):016d}"
        signature = request_signing.sign(
            secrets_of[key], "POST", "/v1/chat", "", now, nonce, _SIGNED_BODY_SHA256
        )
        body = json.loads(loaded_body(key))
        body |= {
            "scheme": "https",
            "country": "DE",
            "signature": {
                "signature": signature,
                "method": "POST",
                "path": "/v1/chat",
                "query": "",
                "timestamp": now,
                "nonce": nonce,
                "body_sha256": _SIGNED_BODY_SHA256,
            },
        }
        bodies.append(json.dumps(body))
    return bodies


def measure_combined(
    generator: Generator, args: argparse.Namespace, secrets_of: dict[str, str], workdir: Path
) -> tuple[LoadResult, list[tuple[LoadResult, LoadResult]]]:
    """The loaded policy and the combined one (SIGNED_POLICY) over HTTP, in alternating runs.

    Runs minutes apart drift on a shared machine; alternating puts each pair under the same
    load, and the summary shows every pair's ratio. Each combined run gets a file of fresh
    signed bodies, three times as many as the loaded run before it served (a reused nonce
    would be refused, and cheaper).
    """
    path = workdir / "combined-bodies.txt"

    def with_bodies(count: int) -> Generator:
        path.write_text("\n".join(combined_bodies(secrets_of, max(count, args.threads))) + "\n")
        return dataclasses.replace(generator, bodies_file=path)

    progress("HTTP: warming the server's cache with the combined-policy keys")
    warmup = warm_server(with_bodies(20_000), len(secrets_of), "bodies", seconds=1)
    rounds = []
    for number in range(args.http_rounds):
        progress(f"HTTP round {number + 1}/{args.http_rounds}: loaded, then combined policy")
        # Both checked (the same generator work): a combined answer that is not VALID, say a
        # nonce reused because the file ran out, shows in the summary.
        loaded = generator.run("bodies", args.duration, check=True)
        combined = with_bodies(int(loaded.rate * args.duration * 3) + 1000).run(
            "bodies", args.duration, check=True
        )
        rounds.append((loaded, combined))
    return warmup, rounds


def write_bodies(path: Path, keys: list[str], threads: int) -> int:
    """One loaded body per key, repeated until every generator thread has at least one."""
    bodies = [loaded_body(key) for key in keys]
    while len(bodies) < threads:
        bodies += bodies
    path.write_text("\n".join(bodies) + "\n")
    return len(bodies)


def measure_http(
    target: Target,
    args: argparse.Namespace,
    sample: list[str],
    policy_keys: list[str],
    workdir: Path,
    signed_secrets: dict[str, str],
) -> HttpResult:
    keys_file = workdir / "sample-keys.txt"
    keys_file.write_text("\n".join(sample) + "\n")
    bodies_file = workdir / "loaded-bodies.txt"
    bodies = write_bodies(bodies_file, policy_keys, args.threads) if policy_keys else 0
    kind = choose_generator_kind(args.generator)
    with running_server(target, workdir) as server:
        generator = Generator(
            kind,
            server.url,
            keys_file,
            target.root_key,
            args.threads,
            args.concurrency,
            bodies_file if bodies else None,
        )
        progress(f"HTTP: warming the server's cache with {generator.description}")
        warmup = warm_server(generator, len(sample))
        progress(f"HTTP: GET /healthz for {args.duration}s")
        generator.run("healthz", 1)  # connection set-up and first-request costs, discarded
        healthz = generator.run("healthz", args.duration)
        progress(f"HTTP: POST /v1/verify for {args.duration}s")
        verify = generator.run("verify", args.duration)
        loaded_warmup = loaded = None
        if bodies:
            progress("HTTP: warming the server's cache with the loaded-policy keys")
            # A few keys: one second touches them all, and leaves fewer reservations behind.
            loaded_warmup = warm_server(generator, bodies, "bodies", seconds=1)
            progress(f"HTTP: POST /v1/verify, loaded policy, for {args.duration}s")
            loaded = generator.run("bodies", args.duration)
        result = HttpResult(generator.description, warmup, verify, healthz, loaded_warmup, loaded)
        if bodies and signed_secrets and args.http_rounds:
            result.combined_warmup, result.rounds = measure_combined(
                generator, args, signed_secrets, workdir
            )
        return result


# -- report ---------------------------------------------------------------------------------------


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def machine_lines(args: argparse.Namespace, target: Target, inproc: InProcessResult) -> list[str]:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    where = "file in a temp dir" if target.schema is None else f"schema {target.schema}"
    return [
        f"machine     {usable} CPUs usable (nproc), {cpu_model()}, {platform.system()},"
        f" load average {args.load_average:.2f} at start",
        f"python      {platform.python_implementation()} {platform.python_version()},"
        f" keyplane {__version__}",
        f"database    {inproc.database_version} ({where})",
        f"keys        {args.keys:,} stored (bulk insert {inproc.insert_seconds:.1f} s),"
        f" sample of {args.sample:,} distinct keys, cache TTL {CACHE_TTL_SECONDS} s",
    ]


def rate_line(label: str, calls: int, seconds: float, hit_rate: float) -> str:
    rate = calls / seconds
    return (
        f"  {label:<28}{rate:>12,.0f} calls/s{seconds / calls * 1e6:>10.1f} µs/call"
        f"   hit rate {hit_rate:6.1%}   ({calls:,} calls in {seconds:.2f} s)"
    )


def policy_lines(policy: PolicyResult) -> list[str]:
    def edges(passes: Passes) -> str:
        return (
            f"first {passes.edge_seconds:.2g} s {passes.first_rate:,.0f} calls/s,"
            f" last {passes.edge_seconds:.2g} s {passes.last_rate:,.0f} calls/s"
        )

    reserving = policy.reserving
    per_call, costs_per_call = policy.best_loaded, policy.best_costs
    return [
        f"fully loaded policy: {policy.keys} keys (created through KeyService in"
        f" {policy.create_seconds:.2f} s): models, 3 rate windows, 3 token windows,",
        "  monthly budget with alerts, IP allow/deny, origin and user-agent rules,"
        " features, operations, data access, routing",
        rate_line("cold (load + budget seed)", *policy.cold.figures),
        rate_line("warm, context only", *policy.context_only.figures),
        f"      {edges(policy.context_only)}",
        rate_line("warm, + cost and tokens", *reserving.figures),
        f"      {edges(reserving)}",
        f"      each call holds a reservation (no usage report settles it; timeout"
        f" {policy.reservation_timeout} s): {reserving.calls:,} held at the end,"
        f" {reserving.calls // policy.keys:,} per key",
        rate_line("warm, + 3 cost windows", *policy.costs.figures),
        f"      {edges(policy.costs)}",
        f"      the same request on keys that also have costs.per_hour_max, per_day_max,"
        f" per_month_max, best of {COMPARE_ROUNDS} alternating slices each:",
        f"      {costs_per_call * 1e6:.1f} µs/call vs {per_call * 1e6:.1f}"
        f" ({costs_per_call / per_call - 1:+.0%}; goal: at most +25%)",
        *(
            []
            if policy.signed is None
            else [
                "signed policy: the loaded policy + three cost windows + signing (timestamp,"
                " nonce), HTTPS, countries, user-agent globs, domains",
                rate_line("warm, context only, signed", *policy.signed.figures),
                f"      {edges(policy.signed)}",
                f"      vs the loaded policy, context only: "
                f"{_rate(policy.signed) / _rate(policy.context_only):.2f}x the calls/s",
            ]
        ),
        *(
            []
            if policy.interleaved is None
            else [
                f"  alternating bursts (60 x 200 calls each): loaded {policy.interleaved[0]:.1f}"
                f" µs/call, signed {policy.interleaved[1]:.1f} µs/call (medians):"
                f" {policy.interleaved[1] / policy.interleaved[0]:.2f}x the time"
                " (goal: at most 1.25x)",
            ]
        ),
        *(
            []
            if policy.interleaved_reserving is None
            else [
                "  the same, each call with cost and tokens (every budget and cost window"
                f" reserves): loaded {policy.interleaved_reserving[0]:.1f} µs/call, signed"
                f" {policy.interleaved_reserving[1]:.1f} µs/call:"
                f" {policy.interleaved_reserving[1] / policy.interleaved_reserving[0]:.2f}x"
                " the time (goal: at most 1.25x)",
            ]
        ),
    ]


def _rate(passes: Passes) -> float:
    return passes.calls / passes.seconds


def load_row(name: str, result: LoadResult) -> str:
    return (
        f"  {name:<26}{result.rate:>10,.0f}{result.p50_us / 1000:>9.2f}"
        f"{result.p90_us / 1000:>9.2f}{result.p99_us / 1000:>9.2f}{result.max_us / 1000:>9.1f}"
        f"{result.requests:>11,}{result.errors:>8,}"
    )


def ratio(label: str, top: LoadResult, bottom: LoadResult) -> str:
    return (
        f"  {label:<26}throughput {top.rate / max(bottom.rate, 1e-9):.2f}x,"
        f" p99 {top.p99_us / max(bottom.p99_us, 1):.2f}x"
    )


def http_lines(args: argparse.Namespace, http: HttpResult) -> list[str]:
    verify, healthz, loaded = http.verify, http.healthz, http.loaded
    lines = [
        "HTTP: real server (keyplane serve, 1 process), load from a separate process",
        f"  generator: {http.generator}, {args.concurrency} connections, {args.duration} s per run",
        f"  {'endpoint':<26}{'req/s':>10}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}"
        f"{'requests':>11}{'errors':>8}",
        load_row("POST /v1/verify", verify),
        load_row("GET /healthz", healthz),
    ]
    if loaded is not None:
        lines.append(load_row("POST /v1/verify, loaded", loaded))
    lines.append(ratio("verify/healthz", verify, healthz))
    if loaded is not None:
        lines.append(ratio("loaded/plain verify", loaded, verify))
    lines.append(
        f"  warm-up: {http.warmup.checked:,} verify answers checked, all valid"
        f" ({http.warmup.rate:,.0f} req/s while loading the cache)"
    )
    lines += combined_lines(http)
    if http.loaded_warmup is not None:
        lines.append(
            f"  loaded warm-up: {http.loaded_warmup.checked:,} answers checked, all valid;"
            f" the loaded run starts with that many reservations held"
        )
    if verify.errors or healthz.errors or (loaded is not None and loaded.errors):
        lines.append("  WARNING: the generator saw errors (non-2xx, timeouts or socket errors)")
    return lines


def combined_lines(http: HttpResult) -> list[str]:
    """Each alternating round, loaded then combined policy, and the slowdown they show."""
    if not http.rounds:
        return []
    lines = [
        "  combined policy (loaded + signing + transport + three cost windows), over HTTP,"
        " alternating with the loaded policy:"
    ]
    slowdowns = []
    for number, (loaded, combined) in enumerate(http.rounds, 1):
        lines.append(load_row(f"round {number}: loaded", loaded))
        lines.append(load_row(f"round {number}: combined", combined))
        slowdowns.append(loaded.rate / max(combined.rate, 1e-9))
    lines.append(
        "  combined vs loaded: "
        + ", ".join(f"{value:.2f}x" for value in slowdowns)
        + f" the time per request (median {statistics.median(slowdowns):.2f}x;"
        " goal: at most 1.25x)"
    )
    if http.combined_warmup is not None:
        lines.append(
            f"  combined warm-up: {http.combined_warmup.checked:,} answers checked, all valid"
        )
    checked = sum(loaded.checked + combined.checked for loaded, combined in http.rounds)
    invalid = sum(loaded.invalid + combined.invalid for loaded, combined in http.rounds)
    lines.append(f"  rounds: {checked:,} answers checked, {invalid:,} not VALID")
    if any(combined.errors for _, combined in http.rounds):
        lines.append("  WARNING: the generator saw errors in a combined run")
    return lines


def print_summary(
    args: argparse.Namespace, target: Target, inproc: InProcessResult, http: HttpResult | None
) -> None:
    rule = "-" * 96
    lines = [rule, "Keyplane verify benchmark", rule]
    lines += machine_lines(args, target, inproc)
    lines += [
        "",
        "in process: Verifier.verify, sequential calls on one event loop",
        rate_line("cold (first load, DB query)", *inproc.cold.figures),
        rate_line("warm (cache)", *inproc.warm.figures),
        "",
    ]
    if inproc.policy is not None:
        lines += [*policy_lines(inproc.policy), ""]
    lines += ["HTTP: skipped (--skip-http)"] if http is None else http_lines(args, http)
    if (os.cpu_count() or 1) <= 2 and http is not None:
        lines.append("  note: server and generator share 2 CPUs; HTTP figures are a lower bound")
    lines.append(rule)
    print("\n".join(lines), flush=True)


# -- main -----------------------------------------------------------------------------------------


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="keyplane-bench-") as tmp:
        workdir = Path(tmp)
        target = make_target(args, workdir)
        with provisioned(target):
            sample, policy_keys, inproc = asyncio.run(fill_and_measure(target, args))
            signed = {} if inproc.policy is None else inproc.policy.signed_secrets
            http = (
                None
                if args.skip_http
                else measure_http(target, args, sample, policy_keys, workdir, signed)
            )
        print_summary(args, target, inproc, http)


def main() -> None:
    args = parse_args()
    # Other work on the machine skews every figure; the summary says how busy it was.
    args.load_average = os.getloadavg()[0]
    # Only the settings this script chooses apply, in process and in the server alike.
    for name in [name for name in os.environ if name.startswith("KEYPLANE_")]:
        del os.environ[name]
    signal.signal(signal.SIGTERM, _terminate)
    try:
        run(args)
    except KeyboardInterrupt:
        progress("interrupted; server stopped and temporary files removed")
        sys.exit(130)


if __name__ == "__main__":
    main()
