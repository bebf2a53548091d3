"""Benchmark of the key cache's memory per key, and of verify at 1k vs 1M cached keys.

Prints figures; asserts nothing. Three parts, in one run:

(a) bytes per cached key (``tracemalloc``: everything allocated while ``--keys`` keys are
    loaded into ``KeyDirectory``, divided by the count), next to the layout before issue 17
    (one ``KeyEntry`` per key with its ``SecretMatch`` and ``KeyRecord``, in a dict of
    ``(entry, deadline)`` tuples with a set of hashes per record id) for ``--peer-keys`` keys
    built the same way, in the same run. The fixed cost of the hot map of unpacked entries
    (``cache_hot_entries``) is printed apart, and included in the total.
(b) warm verify: ``Verifier.verify`` in process on plain keys picked uniformly at random from
    all the cached keys, with 1k keys cached and with ``--keys`` keys cached (and, to show the
    hot map, with ``--keys`` keys cached but requests drawn from 1k of them), CPU µs per call,
    alternated for ``--rounds`` rounds; the ratio to the 1k figure of the same round.
(c) cold verify: the cache full (capacity = its population), each call a key it does not
    hold: a load, packing, and an insert that evicts one (CLOCK), at 1k and at ``--keys``.

The key store is an in-memory stand-in that builds a fresh answer (new strings, new
datetimes, as a database driver does) on every call, so the figures are the cache and entry
layer's, not the database's (``bench/cold_verify.py`` measures that part).

Run::

    .venv/bin/python bench/cache_memory.py                  # 1M keys (about 3 minutes)
    .venv/bin/python bench/cache_memory.py --keys 200000 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import statistics
import sys
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from typing import Any

from keyplane.domain.clock import SystemClock
from keyplane.domain.crypto import key_digest
from keyplane.domain.keyformat import KeyKind, generate
from keyplane.domain.keys import Environment, KeyRecord
from keyplane.domain.tenancy import Principal
from keyplane.services.directory import KeyDirectory, build_entry
from keyplane.services.last_used import LastUsedRecorder
from keyplane.services.verify import Verifier, VerifyRequest
from keyplane.settings import Settings
from keyplane.store.base import SecretMatch

SECRET = b"bench-server-secret-0123456789abcdef"
ORG = "org_01m908s5h02qds4kdfrzwb1jh2"
PROJECT = "proj_01m908s5h03vayc6q6f4t8hwqt"
CREATOR = "mk_01m908s5h03vayc6q6f4t8hwqz"
BORN = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)


class Population:
    """``count`` plain keys: their presented secrets and digests."""

    def __init__(self, count: int) -> None:
        self.secrets = [generate(KeyKind.LIVE).text for _ in range(count)]
        self.hashes = [key_digest(SECRET, secret) for secret in self.secrets]
        self.index = {digest: number for number, digest in enumerate(self.hashes)}


def _fresh(text: str) -> str:
    # A new string object with the same text, as a driver decodes each row anew.
    return (text + " ")[:-1]


class StandInStore:
    """The two reads the directory makes, answered from memory with fresh objects."""

    def __init__(self, population: Population) -> None:
        self._population = population

    def match(self, number: int) -> SecretMatch:
        digest = self._population.hashes[number]
        secret = self._population.secrets[number]
        when = BORN + timedelta(seconds=number)
        record = KeyRecord(
            id=f"key_01m908s5h{number:017d}",
            org_id=_fresh(ORG),
            project_id=_fresh(PROJECT),
            hash=_fresh(digest),
            start=secret[:12],
            end=secret[-4:],
            name=f"customer {number} production",
            environment=Environment.LIVE,
            created_at=when,
            updated_at=when + timedelta(days=1),
            last_used_at=when + timedelta(days=2),
            scopes=("verify",),
            created_by=_fresh(CREATOR),
            policy={},
            metadata={},
        )
        return SecretMatch(record, None, None, None, None, digest)

    async def find_by_secret(self, secret_hash: str) -> SecretMatch | None:
        number = self._population.index.get(secret_hash)
        return None if number is None else self.match(number)

    async def find_by_id(self, key_id: str) -> SecretMatch | None:
        return None


def directory_for(population: Population, capacity: int) -> KeyDirectory:
    settings = Settings(cache_max_entries=capacity, cache_ttl_seconds=3600.0)
    return KeyDirectory(StandInStore(population), settings)  # type: ignore[arg-type]


async def fill(directory: KeyDirectory, hashes: list[str]) -> None:
    for digest in hashes:
        await directory.by_hash(digest)


async def bytes_per_key(population: Population, count: int) -> tuple[float, float]:
    """(bytes per key with everything, the hot map's share in bytes) for ``count`` keys."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    directory = directory_for(population, count)
    await fill(directory, population.hashes[:count])
    gc.collect()
    total = tracemalloc.get_traced_memory()[0] - before
    hot_before = tracemalloc.get_traced_memory()[0]
    directory._hot_hashes.clear()
    gc.collect()
    hot = hot_before - tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del directory
    return total / count, hot


def bytes_per_key_before(population: Population, count: int) -> float:
    """The layout before issue 17, built the same way (see the module docstring)."""
    store = StandInStore(population)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    entries: dict[str, tuple[Any, float]] = {}
    hashes_of: dict[str, set[str]] = {}
    for number in range(count):
        digest = _fresh(population.hashes[number])
        entry = build_entry(store.match(number))
        entries[digest] = (entry, time.monotonic() + 30.0)
        hashes_of.setdefault(entry.record.id, set()).add(digest)
    gc.collect()
    total = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del entries, hashes_of
    return total / count


def verifier_for(directory: KeyDirectory) -> Verifier:
    async def touch(_: Any) -> None:
        return None

    return Verifier(
        directory,
        SystemClock(),
        SECRET,
        LastUsedRecorder(touch, 3600.0),
        None,  # type: ignore[arg-type]  # plain keys: no admission reaches the limiter
        timedelta(seconds=30),
    )


PRINCIPAL = Principal("mk_bench", ORG, None, ("verify",))


async def cpu_per_verify(verifier: Verifier, secrets: list[str]) -> float:
    """CPU µs per verify over ``secrets``, each verified once, in the order given."""
    requests = [VerifyRequest(secret, request_id="req_bench") for secret in secrets]
    started = time.process_time()
    for request in requests:
        verdict = await verifier.verify(PRINCIPAL, request)
        if not verdict.valid:
            raise SystemExit(f"bench key refused: {verdict.code}")
    return (time.process_time() - started) / len(requests) * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--peer-keys", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--cold-calls", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    big, small, rounds = args.keys, args.small, args.rounds
    extra = args.cold_calls * rounds
    print(f"python {sys.version.split()[0]}; generating {big + extra:,} keys ...", flush=True)
    population = Population(big + extra)

    print("\n(a) memory per cached key (tracemalloc)")
    per_key, hot = await bytes_per_key(population, big)
    before = bytes_per_key_before(population, min(args.peer_keys, big))
    hot_entries = Settings().cache_hot_entries
    print(f"  packed cache, {big:,} keys: {per_key:,.0f} B/key in all")
    print(
        f"    of which the hot map ({hot_entries:,} unpacked entries): {hot / 1e6:,.1f} MB "
        f"= {hot / big:,.0f} B/key here; without it {per_key - hot / big:,.0f} B/key"
    )
    print(f"  before (KeyEntry per key), {min(args.peer_keys, big):,} keys: {before:,.0f} B/key")
    print(f"  ratio packed/before: {per_key / before:.2f}x (goal: at most 600 B/key)")

    print("\n(b, c) verify CPU per call, 1k vs many cached keys (medians, µs)")
    small_dir = directory_for(population, small)
    big_dir = directory_for(population, big)
    await fill(small_dir, population.hashes[:small])
    await fill(big_dir, population.hashes[:big])
    small_verifier, big_verifier = verifier_for(small_dir), verifier_for(big_dir)
    pick = random.Random(17)
    figures: dict[str, list[float]] = {}
    cold_next = big

    def note(name: str, value: float) -> None:
        figures.setdefault(name, []).append(value)

    for round_number in range(rounds):
        note(
            "warm 1k",
            await cpu_per_verify(
                small_verifier, pick.choices(population.secrets[:small], k=args.calls)
            ),
        )
        note(
            f"warm {big:,}",
            await cpu_per_verify(
                big_verifier, pick.choices(population.secrets[:big], k=args.calls)
            ),
        )
        note(
            f"warm {big:,}, 1k of them asked",
            await cpu_per_verify(
                big_verifier, pick.choices(population.secrets[:small], k=args.calls)
            ),
        )
        fresh = population.secrets[cold_next : cold_next + args.cold_calls]
        cold_next += args.cold_calls
        note("cold 1k", await cpu_per_verify(small_verifier, fresh))
        note(f"cold {big:,}", await cpu_per_verify(big_verifier, fresh))
        print(
            f"  round {round_number + 1}: "
            + ", ".join(f"{k} {v[-1]:.1f}" for k, v in figures.items()),
            flush=True,
        )

    medians = {name: statistics.median(values) for name, values in figures.items()}
    for name, value in medians.items():
        floor = medians["cold 1k"] if name.startswith("cold") else medians["warm 1k"]
        print(f"  {name:<32} {value:8.1f} µs   {value / floor:.2f}x the 1k figure")
    print("  goal: at most 1.2x, warm and cold")


if __name__ == "__main__":
    asyncio.run(main())
