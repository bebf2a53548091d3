"""In-process verify next to its floor: the same checks written plainly, in the same run.

Issue 17's in-process goals: a plain verify at most 2x its floor, a fully loaded policy at most
4x. Both sides run on one event loop in this process, against the same keys:

* Keyplane: ``Verifier.verify`` of a ``Runtime`` on SQLite (warm cache, the embedded in-memory
  limiter), one ``VerifyRequest`` built per call as the API builds one.
* The floor, plain key: the key's shape (one regex) and CRC32 checksum, its HMAC-SHA256, a dict
  lookup of the digest, the status and tenant checks, a request id, the answer as a tuple.
* The floor, loaded policy (bench/verify.py's ``LOADED_POLICY``, with ``LOADED_CONTEXT``): the
  plain floor, then model globs, IP allow/deny, origin glob, user-agent regex, features,
  operation and provider as precompiled regexes and sets, then three GCRA rate windows, three
  token windows and the monthly budget on integers in dicts, checked all then consumed all,
  with one ``(name, limit, remaining, reset)`` tuple per limit for the answer.

CPU time of the event loop's thread per call (``time.thread_time``: other work on a shared
machine hardly moves it), over alternating bursts of each; the medians of ``--rounds`` rounds
are printed with the ratio Keyplane / floor. A figure, not a test: it asserts nothing.

Run::

    .venv/bin/python bench/verify_floor.py                  # 7 rounds
    .venv/bin/python bench/verify_floor.py --rounds 15 --burst 4000
    .venv/bin/python bench/verify_floor.py --profile plain  # cProfile of Keyplane's side
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import ipaddress
import os
import pstats
import re
import secrets
import statistics
import tempfile
import time
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path

from verify import LOADED_CONTEXT, LOADED_POLICY, Target  # bench/verify.py

from keyplane.domain import base62
from keyplane.domain.crypto import KeyedSha256
from keyplane.domain.policy import RequestContext
from keyplane.domain.tenancy import Principal
from keyplane.services.keys import NewKey
from keyplane.services.runtime import Runtime
from keyplane.services.verify import VerifyRequest

KEY_SHAPE = re.compile(r"([a-z][a-z0-9_-]{0,15})_(live|test)_[0-9A-Za-z]{36}")


# -- the floor ------------------------------------------------------------------------------------


class FloorKey:
    """What the floor keeps per key: the fields its checks read, nothing else."""

    __slots__ = ("id", "org_id", "project_id", "status")

    def __init__(self, key_id: str, org_id: str, project_id: str) -> None:
        self.id, self.org_id, self.project_id, self.status = key_id, org_id, project_id, "active"


class Floor:
    """Plain verify and loaded verify, the least each must do, in straightforward Python."""

    def __init__(self, secret: bytes, keys: dict[str, FloorKey], org_id: str) -> None:
        self._keyed = KeyedSha256(secret)
        self._org_id = org_id
        self._by_digest = {self._digest(key): entry for key, entry in keys.items()}
        self._models_allow = re.compile(r"(?i)gpt-4.*|claude-3-.*")
        self._models_deny = re.compile(r"(?i).*-vision-.*")
        self._ip_allow = [
            ipaddress.ip_network("203.0.113.0/24"),
            ipaddress.ip_network("2001:db8::/32"),
        ]
        self._ip_deny = {ipaddress.ip_address("203.0.113.7")}
        self._origin = re.compile(r"https://[^/]+\.example\.com")
        self._user_agent = re.compile(r"^MyApp/\d+")
        self._features_allow = {"chat_completion", "embeddings", "streaming"}
        self._features_deny = {"vision"}
        self._operations = {"read", "write"}
        self._providers = {"openai", "anthropic"}
        # (limit, period in µs) of the three rate and three token windows
        self._windows = [
            ("per_second", 1_000_000, 1_000_000, "rate"),
            ("per_minute", 100_000_000, 60_000_000, "rate"),
            ("per_day", 1_000_000_000, 86_400_000_000, "rate"),
            ("input_per_minute", 10**12, 60_000_000, "input"),
            ("output_per_minute", 10**12, 60_000_000, "output"),
            ("total_per_day", 10**12, 86_400_000_000, "total"),
        ]
        self._tats: dict[tuple[str, str], int] = {}
        self._spent: dict[str, int] = {}
        self._budget_limit = 10**15

    def _digest(self, key: str) -> str:
        # The same precomputed HMAC as Keyplane's (domain/crypto.py): the ratio counts what
        # Keyplane does beyond the floor, not a technique the floor could use too.
        return self._keyed.hexdigest(key.encode())

    def _lookup(self, key: str) -> FloorKey | None:
        if len(key) > 58:
            return None
        found = KEY_SHAPE.fullmatch(key)
        if found is None:
            return None
        if base62.encode(zlib.crc32(key[:-6].encode()), 6) != key[-6:]:
            return None
        entry = self._by_digest.get(self._digest(key))
        if entry is None or entry.status != "active" or entry.org_id != self._org_id:
            return None
        return entry

    async def plain(self, key: str) -> tuple[bool, str, str] | None:
        entry = self._lookup(key)
        if entry is None:
            return None
        return True, entry.id, "req_" + os.urandom(13).hex()

    async def loaded(self, key: str, context: RequestContext) -> object:
        entry = self._lookup(key)
        if entry is None:
            return None
        model = context.model or ""
        if self._models_deny.fullmatch(model) or not self._models_allow.fullmatch(model):
            return "FORBIDDEN_MODEL"
        ip = ipaddress.ip_address(context.ip or "")
        if ip in self._ip_deny or not any(ip in net for net in self._ip_allow):
            return "IP_NOT_ALLOWED"
        if not self._origin.fullmatch(context.origin or ""):
            return "ORIGIN_NOT_ALLOWED"
        if not self._user_agent.search(context.user_agent or ""):
            return "USER_AGENT_NOT_ALLOWED"
        for feature in context.features:
            if feature in self._features_deny or feature not in self._features_allow:
                return "FEATURE_NOT_ALLOWED"
        if context.operation not in self._operations or context.provider not in self._providers:
            return "NOT_ALLOWED"
        now_us = time.time_ns() // 1000
        states = []
        new_tats = []
        for name, limit, period, counts in self._windows:
            cost = 1 if counts == "rate" else 0
            now = now_us * limit
            tat = self._tats.get((entry.id, name), now)
            base = max(now, tat)
            new_tat = base + cost * period
            if new_tat - now > limit * period:
                return "RATE_LIMITED"
            new_tats.append(new_tat)
            states.append((name, limit, (limit * period - (new_tat - now)) // period, new_tat))
        left = self._budget_limit - self._spent.get(entry.id, 0)
        if left <= 0:
            return "BUDGET_EXCEEDED"
        for (name, *_), new_tat in zip(self._windows, new_tats, strict=True):
            self._tats[(entry.id, name)] = new_tat
        states.append(("budget", self._budget_limit, left, None))
        return True, entry.id, "req_" + os.urandom(13).hex(), states


# -- measuring ------------------------------------------------------------------------------------


async def burst(call: Callable[[str], Awaitable[object]], keys: list[str], calls: int) -> float:
    """CPU µs per call of ``calls`` calls cycling through ``keys``."""
    count = len(keys)
    started = time.thread_time()
    for number in range(calls):
        if await call(keys[number % count]) is None:
            raise SystemExit("a bench key did not verify")
    return (time.thread_time() - started) / calls * 1e6


async def setup(
    args: argparse.Namespace, workdir: Path
) -> tuple[Runtime, Principal, list[str], list[str], Floor]:
    target = Target(
        f"sqlite:///{workdir / 'floor.db'}",
        None,
        secrets.token_urlsafe(48),
        "kp-bench-root-" + secrets.token_urlsafe(32),
    )
    runtime = await Runtime.start(target.settings())
    principal = await runtime.services.management.authenticate(target.root_key)
    keys_service = runtime.services.keys
    plain: list[str] = []
    loaded: list[str] = []
    floor_keys: dict[str, FloorKey] = {}
    for number in range(args.keys):
        issued = await keys_service.create(principal, NewKey(f"plain {number}"))
        plain.append(issued.secret)
        floor_keys[issued.secret] = FloorKey(
            issued.record.id, issued.record.org_id, issued.record.project_id
        )
    for number in range(args.policy_keys):
        issued = await keys_service.create(
            principal, NewKey(f"loaded {number}", policy=LOADED_POLICY)
        )
        loaded.append(issued.secret)
        floor_keys[issued.secret] = FloorKey(
            issued.record.id, issued.record.org_id, issued.record.project_id
        )
    floor = Floor(target.server_secret.encode(), floor_keys, principal.org_id)
    return runtime, principal, plain, loaded, floor


async def measure(args: argparse.Namespace, workdir: Path) -> None:
    runtime, principal, plain, loaded, floor = await setup(args, workdir)
    try:
        verifier = runtime.services.verifier

        async def keyplane_plain(key: str) -> object:
            verdict = await verifier.verify(principal, VerifyRequest(key))
            return verdict if verdict.valid else None

        async def keyplane_loaded(key: str) -> object:
            verdict = await verifier.verify(principal, VerifyRequest(key, context=LOADED_CONTEXT))
            return verdict if verdict.valid else None

        async def floor_loaded(key: str) -> object:
            return await floor.loaded(key, LOADED_CONTEXT)

        pairs = {
            "plain": (keyplane_plain, floor.plain, plain),
            "loaded": (keyplane_loaded, floor_loaded, loaded),
        }
        for ours, theirs, keys in pairs.values():  # warm the cache and the counters
            await burst(ours, keys, len(keys) * 2)
            await burst(theirs, keys, len(keys) * 2)
        if args.profile:
            ours, _, keys = pairs[args.profile]
            profiler = cProfile.Profile()
            profiler.enable()
            await burst(ours, keys, args.burst * 5)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(35)
            return
        figures: dict[str, tuple[list[float], list[float]]] = {n: ([], []) for n in pairs}
        for _ in range(args.rounds):
            for name, (ours, theirs, keys) in pairs.items():
                figures[name][0].append(await burst(ours, keys, args.burst))
                figures[name][1].append(await burst(theirs, keys, args.burst))
        report(args, figures)
    finally:
        await runtime.stop()


def report(args: argparse.Namespace, figures: dict[str, tuple[list[float], list[float]]]) -> None:
    goals = {"plain": 2.0, "loaded": 4.0}
    labels = {
        "plain": "plain key",
        "loaded": "loaded policy (3 rate, 3 token windows, budget, IP, origin, UA, ...)",
    }
    print(
        f"verify in process vs its floor: CPU µs per call, medians of {args.rounds} rounds of"
        f" {args.burst} calls; load average {os.getloadavg()[0]:.1f}"
    )
    print(f"  {'path':<72}{'keyplane':>10}{'floor':>8}{'ratio':>7}  goal")
    for name, (ours, theirs) in figures.items():
        mine, floor = statistics.median(ours), statistics.median(theirs)
        ratio = mine / floor
        print(
            f"  {labels[name]:<72}{mine:>10.1f}{floor:>8.1f}{ratio:>6.2f}x  <= {goals[name]:.0f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=200, help="plain keys (200)")
    parser.add_argument("--policy-keys", type=int, default=16, help="loaded-policy keys (16)")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds (7)")
    parser.add_argument("--burst", type=int, default=2000, help="calls per burst (2000)")
    parser.add_argument("--profile", choices=("plain", "loaded"), help="cProfile Keyplane's side")
    args = parser.parse_args()
    for name in [name for name in os.environ if name.startswith("KEYPLANE_")]:
        del os.environ[name]
    with tempfile.TemporaryDirectory(prefix="keyplane-floor-") as tmp:
        asyncio.run(measure(args, Path(tmp)))


if __name__ == "__main__":
    main()
