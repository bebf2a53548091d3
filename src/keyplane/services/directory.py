"""The cached view of keys that the data plane reads: record, plan and effective policy.

Two caches share one invalidation: by secret hash (verify) and by id (usage reports). The
effective policy is parsed once per load, not once per request.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from keyplane.domain import gcra
from keyplane.domain.admission import TokenCount, WindowKind
from keyplane.domain.keys import KeyRecord
from keyplane.domain.policy import Policy, merge_documents, parse_policy, token_windows
from keyplane.domain.sealing import unseal
from keyplane.services.cache import TtlCache
from keyplane.settings import Settings
from keyplane.store.base import KeyLookup, SecretMatch


@dataclass(frozen=True, slots=True)
class WindowSpec:
    name: str
    kind: WindowKind
    window: gcra.Window
    #: For token windows: which tokens they count.
    counts: TokenCount | None = None


@dataclass(frozen=True, slots=True)
class KeyEntry:
    match: SecretMatch
    policy: Policy
    windows: tuple[WindowSpec, ...]
    #: The request-signing secret issued with the presented key secret, opened at load so
    #: verify checks signatures without I/O; ``None`` when it has none.
    signing_secret: str | None = None

    @property
    def record(self) -> KeyRecord:
        return self.match.record


#: Compiled policies by their documents: keys on one plan (or with one policy) share them, so
#: a cache miss does not parse and compile the same document again (a loaded policy cost
#: several times the key's read). Bounded; a changed document is another key, never stale.
_COMPILED: dict[str, tuple[Policy, tuple[WindowSpec, ...]]] = {}
COMPILED_POLICIES_MAX = 4096


def build_entry(match: SecretMatch, signing_key: bytes | None = None) -> KeyEntry:
    policy, windows = compiled_policy(match.plan_policy, match.record.policy)
    signing_secret = None
    if match.sealed_signing_secret is not None and signing_key is not None:
        signing_secret = unseal(
            signing_key, match.sealed_signing_secret, match.secret_hash.encode("ascii")
        )
    return KeyEntry(match, policy, windows, signing_secret)


def compiled_policy(
    plan_policy: dict[str, Any] | None, key_policy: dict[str, Any]
) -> tuple[Policy, tuple[WindowSpec, ...]]:
    """The effective policy of a key and its limiter windows, compiled once per distinct pair
    of documents (the compiled forms are immutable, so entries share them)."""
    # JSON text: an exact, hashable image of the two documents (order-sensitive, so equal
    # documents written in another order only miss).
    memo_key = json.dumps((plan_policy, key_policy), separators=(",", ":"))
    found = _COMPILED.get(memo_key)
    if found is None:
        found = compile_documents(plan_policy, key_policy)
        if len(_COMPILED) >= COMPILED_POLICIES_MAX:
            del _COMPILED[next(iter(_COMPILED))]
        _COMPILED[memo_key] = found
    return found


def compile_documents(
    plan_policy: dict[str, Any] | None, key_policy: dict[str, Any]
) -> tuple[Policy, tuple[WindowSpec, ...]]:
    """The effective policy and windows, compiled afresh (the reference for the memo)."""
    document = merge_documents(plan_policy or {}, key_policy)
    policy = parse_policy(document)
    windows = [
        WindowSpec(
            rate.name,
            WindowKind.RATE,
            gcra.Window(rate.limit, rate.period_seconds * gcra.MICROS, rate.burst),
        )
        for rate in policy.rate_limits
    ]
    if policy.token_limits is not None:
        windows.extend(
            WindowSpec(
                name,
                WindowKind.TOKENS,
                gcra.Window(limit, seconds * gcra.MICROS, limit),
                TokenCount(counts),
            )
            for name, limit, seconds, counts in token_windows(policy.token_limits)
        )
    return policy, tuple(windows)


class KeyDirectory:
    def __init__(
        self, store: KeyLookup, settings: Settings, signing_key: bytes | None = None
    ) -> None:
        self._store = store

        async def by_hash(secret_hash: str) -> KeyEntry | None:
            match = await store.find_by_secret(secret_hash)
            return None if match is None else build_entry(match, signing_key)

        async def by_id(key_id: str) -> KeyEntry | None:
            match = await store.find_by_id(key_id)
            return None if match is None else build_entry(match)

        def cache(loader: Callable[[str], Awaitable[KeyEntry | None]]) -> TtlCache[KeyEntry]:
            return TtlCache(
                loader,
                _record_id,
                ttl=settings.cache_ttl_seconds,
                negative_ttl=settings.negative_cache_ttl_seconds,
                max_entries=settings.cache_max_entries,
            )

        self.hashes = cache(by_hash)
        self.ids = cache(by_id)
        #: Told of every invalidation, to pass it on to other instances; awaited, so a write
        #: does not return before its eviction is on its way to them.
        self.on_change: Callable[[str | None, tuple[str, ...]], Awaitable[None]] | None = None

    async def by_hash(self, secret_hash: str) -> KeyEntry | None:
        return await self.hashes.get(secret_hash)

    async def by_id(self, key_id: str) -> KeyEntry | None:
        return await self.ids.get(key_id)

    async def invalidate(self, record_id: str, extra_hashes: tuple[str, ...] = ()) -> None:
        """Forget a changed key, here and (through ``on_change``) on every other instance."""
        self.evict(record_id, extra_hashes)
        if self.on_change is not None:
            await self.on_change(record_id, extra_hashes)

    async def clear(self) -> None:
        """Forget everything: a plan changed, so every key on it has a new effective policy."""
        self.evict(None)
        if self.on_change is not None:
            await self.on_change(None, ())

    def evict(self, record_id: str | None, extra_hashes: tuple[str, ...] = ()) -> None:
        """Forget ``record_id`` (everything when None) in this process only."""
        self.hashes.evict(record_id, extra_hashes)
        self.ids.evict(record_id, () if record_id is None else (record_id,))


def _record_id(entry: KeyEntry) -> str:
    return entry.record.id
