"""Benchmark of vault leases (acquire + release). Prints figures; asserts nothing about timings.

The same workload on Keyplane (in process, on SQLite and on PostgreSQL) and on the
``api-service-handler`` package (seed 002, from PyPI, its ``use_key`` on its SQLite backend):
``--credentials`` credentials of one provider with no limits; then, for each number of
concurrent clients in ``--clients``, that many asyncio tasks lease a credential, check the
secret, and give it back, in a loop, for ``--duration`` seconds. It prints leases per second
for each and the ratio Keyplane / api-service-handler.

The other package runs in a virtualenv of its own (``--ash-venv``, created on first use with
``pip install api-service-handler[sqlite]==<--ash-version>``), as a subprocess running
bench/_ash_vault.py, so that its dependencies cannot clash with Keyplane's. The ``compat``
side runs the very same script in Keyplane's virtualenv with its one import changed to
Keyplane's drop-in (``keyplane.compat.api_service_handler``, on SQLite): what a user who
migrates by changing that import gets.

Run::

    .venv/bin/python bench/vault.py                            # SQLite, PostgreSQL, compat, ASH
    .venv/bin/python bench/vault.py --duration 2 --backends compat,ash --rotate 0
    .venv/bin/python bench/vault.py --duration 3 --clients 1,16 --backends sqlite
    .venv/bin/python bench/vault.py --database-url postgresql://user@host:5432/db

What a Keyplane lease does, on every backend: it joins the vault's group commit, so the
leases and releases of concurrent clients share a transaction that locks the matching
credentials, counts their live leases, picks for each lease by strategy, opens its sealed
secret (AES-256-GCM, twice: the data key, then the secret), inserts the leases, counts the
uses and deletes the released leases. Every lease and release is durable when it returns
(SQLite ``synchronous=FULL``). See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

# bench/verify.py: this script's directory is the first entry of sys.path.
from verify import cpu_model, is_postgresql, progress

from keyplane.domain.envelope import Keyring, MasterKey, credential_aad, rewrap, seal, unseal
from keyplane.services.vault import MAX_BULK, NewCredential
from keyplane.services.vault_rotation import rotate_master
from keyplane.settings import Settings
from keyplane.store.database import Database
from keyplane.vault import Vault, open_vault

HERE = Path(__file__).resolve().parent
ASH_SCRIPT = HERE / "_ash_vault.py"
COMPAT_MODULE = "keyplane.compat.api_service_handler.client"
DEFAULT_ASH_VENV = Path(tempfile.gettempdir()) / "keyplane-bench-ash-venv"
PROVIDER = "openai"
ENVIRONMENT = "production"
SECRET_PREFIX = "sk-bench-"  # noqa: S105 - a fake, for the check


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark vault leases (acquire + release).")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per timed run (5)")
    parser.add_argument(
        "--clients",
        type=lambda text: [int(part) for part in text.split(",")],
        default=[1, 16],
        help="comma-separated numbers of concurrent clients, one run each (1,16)",
    )
    parser.add_argument("--credentials", type=int, default=10, help="credentials stored (10)")
    parser.add_argument(
        "--backends",
        default="sqlite,postgresql,compat,ash",
        help="which sides, in order: sqlite, postgresql, compat, ash (all four)",
    )
    parser.add_argument(
        "--database-url",
        default="postgresql://postgres@127.0.0.1:5432/test",
        help="PostgreSQL server; the run uses a fresh schema it creates and drops",
    )
    parser.add_argument(
        "--rotate",
        type=int,
        default=2000,
        help="credentials sealed, then re-wrapped by a master key rotation, per Keyplane "
        "backend (2000; 0 skips)",
    )
    parser.add_argument("--ash-venv", type=Path, default=DEFAULT_ASH_VENV)
    parser.add_argument("--ash-version", default="0.1.10")
    args = parser.parse_args()
    if not is_postgresql(args.database_url):
        parser.error("--database-url must be a PostgreSQL URL")
    args.backends = [name.strip() for name in args.backends.split(",") if name.strip()]
    unknown = set(args.backends) - {"sqlite", "postgresql", "compat", "ash"}
    if unknown:
        parser.error(f"unknown backends: {', '.join(sorted(unknown))}")
    return args


@dataclass
class Run:
    clients: int
    leases: int
    seconds: float
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.leases / self.seconds if self.seconds else 0.0


# -- Keyplane ---------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def keyplane_vault(
    backend: str, args: argparse.Namespace
) -> AsyncIterator[tuple[Vault, Settings, MasterKey]]:
    with tempfile.TemporaryDirectory(prefix="kp-vault-bench-") as tmp:
        schema = None
        url = f"sqlite:///{Path(tmp) / 'keyplane.db'}"
        if backend == "postgresql":
            url, schema = args.database_url, f"kp_bench_{secrets.token_hex(6)}"
            await _postgres(url, f"CREATE SCHEMA {schema}")
        master = MasterKey.generate()
        settings = Settings(
            database_url=url,
            database_schema=schema,
            vault_key=master.to_base64(),  # type: ignore[arg-type]
        )
        try:
            async with open_vault(settings) as vault:
                yield vault, settings, master
        finally:
            if schema is not None:
                await _postgres(url, f"DROP SCHEMA {schema} CASCADE")


async def _postgres(url: str, statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@dataclass
class Rotation:
    credentials: int
    added: int
    add_seconds: float
    rotate_seconds: float


async def measure_keyplane(
    backend: str, args: argparse.Namespace
) -> tuple[str, list[Run], Rotation | None]:
    async with keyplane_vault(backend, args) as (vault, settings, master):
        for index in range(args.credentials):
            await vault.add(
                PROVIDER,
                f"bench-{index}",
                f"{SECRET_PREFIX}{index:04d}-" + "x" * 40,
                environment=ENVIRONMENT,
            )

        async def one() -> None:
            async with vault.use_key(PROVIDER, environment=ENVIRONMENT) as credential:
                if not credential.secret.startswith(SECRET_PREFIX):
                    raise AssertionError("a lease returned the wrong secret")

        for _ in range(20):  # warm-up: pool connections, statement caches
            await one()
        runs = []
        for clients in args.clients:
            progress(f"keyplane {backend}: {clients} clients for {args.duration:g}s")
            runs.append(await timed(one, clients, args.duration))
        rotation = await measure_rotation(vault, settings, master, args) if args.rotate else None
        return await database_version(backend, args), runs, rotation


async def measure_rotation(
    vault: Vault, settings: Settings, old: MasterKey, args: argparse.Namespace
) -> Rotation:
    """Seal ``--rotate`` more credentials (through the bulk add), then re-wrap them all."""
    progress(f"adding {args.rotate:,} credentials, then rotating the master key")
    started = time.perf_counter()
    for start in range(0, args.rotate, MAX_BULK):
        batch = [
            NewCredential(provider="custom", alias=f"rot-{n}", secret=f"{SECRET_PREFIX}rot-{n}")
            for n in range(start, min(args.rotate, start + MAX_BULK))
        ]
        await vault.service.add_many(vault.principal, batch)
    added = time.perf_counter() - started
    db = Database.from_settings(settings)
    try:
        started = time.perf_counter()
        report = await rotate_master(db.sealed_secrets, Keyring(MasterKey.generate(), [old]))
        rotated = time.perf_counter() - started
    finally:
        await db.close()
    if not report.complete or report.failed:
        raise SystemExit(f"rotation incomplete: {report}")
    return Rotation(report.rewrapped, args.rotate, added, rotated)


async def database_version(backend: str, args: argparse.Namespace) -> str:
    if backend == "sqlite":
        return f"sqlite {sqlite3.sqlite_version}"  # the library aiosqlite drives
    import asyncpg

    conn = await asyncpg.connect(args.database_url)
    try:
        return f"postgresql {await conn.fetchval('show server_version')}"
    finally:
        await conn.close()


async def timed(one: Callable[[], Awaitable[None]], clients: int, duration: float) -> Run:
    done = 0
    errors: Counter[str] = Counter()
    deadline = time.perf_counter() + duration

    async def client() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            try:
                await one()
                done += 1
            except Exception as exc:  # counted and printed: the figure is void if any
                errors[type(exc).__name__] += 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return Run(clients, done, time.perf_counter() - started, dict(errors))


# -- api-service-handler ----------------------------------------------------------------------


def ash_python(args: argparse.Namespace) -> Path:
    python = args.ash_venv / "bin" / "python"
    wanted = f"api-service-handler[sqlite]=={args.ash_version}"
    if not python.exists():
        progress(f"creating {args.ash_venv} with {wanted}")
        subprocess.run([sys.executable, "-m", "venv", str(args.ash_venv)], check=True)
    probe = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.metadata as m; print(m.version('api-service-handler'))",
        ],
        capture_output=True,
        text=True,
    )
    if probe.stdout.strip() != args.ash_version:
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", wanted], check=True)
    return python


def measure_ash(args: argparse.Namespace, drop_in: bool = False) -> list[Run]:
    """The seed's package in its venv, or (``drop_in``) the same script on Keyplane's."""
    python = Path(sys.executable) if drop_in else ash_python(args)
    module = COMPAT_MODULE if drop_in else "api_service_handler.client"
    progress(f"{module} sqlite: {args.clients} clients")
    result = subprocess.run(
        [
            str(python),
            str(ASH_SCRIPT),
            "--module",
            module,
            "--credentials",
            str(args.credentials),
            "--clients",
            ",".join(str(c) for c in args.clients),
            "--duration",
            str(args.duration),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        sys.stderr.write(result.stderr)
        raise SystemExit("api-service-handler side failed")
    runs = []
    for line in result.stdout.splitlines():
        data = json.loads(line)
        runs.append(Run(data["clients"], data["ops"], data["seconds"], data["errors"]))
    return runs


# -- report -----------------------------------------------------------------------------------


def print_summary(
    args: argparse.Namespace, results: dict[str, list[Run]], notes: list[str]
) -> None:
    print()
    print(
        f"vault leases (acquire + release), {args.credentials} credentials, no limits, "
        f"{args.duration:g}s per run"
    )
    print(f"cpu: {cpu_model()} x{os.cpu_count()}, load average {os.getloadavg()[0]:.2f}")
    for note in notes:
        print(note)
    names = list(results)
    ratios = [name for name in names if name != "ash"] if "ash" in results else []
    width = max(16, *(len(name) + 2 for name in [*names, *(f"{n}/ash" for n in ratios)]))
    print(
        f"{'clients':>8}"
        + "".join(f"{name:>{width}}" for name in names)
        + "".join(f"{name + '/ash':>{width}}" for name in ratios)
    )
    for index, clients in enumerate(args.clients):
        row = f"{clients:>8}"
        for name in names:
            row += f"{f'{results[name][index].rate:,.0f} lease/s':>{width}}"
        ash = results["ash"][index].rate if ratios else 0.0
        for name in ratios:
            text = f"{results[name][index].rate / ash:.2f}x" if ash else "-"
            row += f"{text:>{width}}"
        print(row)
    for name in names:
        for run in results[name]:
            if run.errors:
                print(f"errors in {name}, {run.clients} clients: {run.errors} (figure void)")


def envelope_rates(seconds: float = 0.5) -> dict[str, float]:
    """Single-core rates of the pure envelope operations, to set the database figures against."""
    old, new = MasterKey.generate(), MasterKey.generate()
    keyring, rotating = Keyring(old), Keyring(new, [old])
    aad = credential_aad("org_bench", "cred_bench")
    token = seal(keyring, SECRET_PREFIX + "x" * 48, aad)
    operations: dict[str, Callable[[], object]] = {
        "seal": lambda: seal(keyring, SECRET_PREFIX + "x" * 48, aad),
        "unseal": lambda: unseal(keyring, token, aad),
        "rewrap": lambda: rewrap(rotating, token, aad),
    }
    rates = {}
    for name, operation in operations.items():
        done, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            for _ in range(100):
                operation()
            done += 100
        rates[name] = done / elapsed
    return rates


def main() -> None:
    args = parse_args()
    results: dict[str, list[Run]] = {}
    notes: list[str] = []
    rotations: dict[str, Rotation] = {}
    for backend in args.backends:
        if backend == "ash":
            results["ash"] = measure_ash(args)
            notes.append(
                f"ash: api-service-handler {args.ash_version}, sqlite backend, "
                "encrypt_keys=True, round_robin, use_key"
            )
        elif backend == "compat":
            results["compat"] = measure_ash(args, drop_in=True)
            notes.append(
                "compat: bench/_ash_vault.py with its import changed to "
                f"{COMPAT_MODULE} (sqlite, same settings)"
            )
        else:
            version, runs, rotation = asyncio.run(measure_keyplane(backend, args))
            results[f"keyplane-{backend}"] = runs
            notes.append(
                f"keyplane-{backend}: {version}, in process (open_vault + use_key), round_robin"
            )
            if rotation is not None:
                rotations[backend] = rotation
    print_summary(args, results, notes)
    rates = envelope_rates()
    print(
        "envelope, one core: "
        + ", ".join(f"{name} {rate:,.0f}/s ({1e6 / rate:.0f} µs)" for name, rate in rates.items())
    )
    for backend, rotation in rotations.items():
        print(
            f"master key rotation, keyplane-{backend}: {rotation.credentials:,} credentials "
            f"re-wrapped in {rotation.rotate_seconds:.2f}s "
            f"({rotation.credentials / rotation.rotate_seconds:,.0f}/s, batches of 500); "
            f"sealing and adding {rotation.added:,} of them took {rotation.add_seconds:.2f}s "
            f"({rotation.added / rotation.add_seconds:,.0f}/s)"
        )


if __name__ == "__main__":
    main()
