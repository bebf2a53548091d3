"""The cached view of keys that the data plane reads: record, plan and effective policy.

Two caches share one invalidation: by secret hash (verify) and by id (usage reports). The
effective policy is parsed once per load, not once per request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

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


def build_entry(match: SecretMatch, signing_key: bytes | None = None) -> KeyEntry:
    document = merge_documents(match.plan_policy or {}, match.record.policy)
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
    signing_secret = None
    if match.sealed_signing_secret is not None and signing_key is not None:
        signing_secret = unseal(
            signing_key, match.sealed_signing_secret, match.secret_hash.encode("ascii")
        )
    return KeyEntry(match, policy, tuple(windows), signing_secret)


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
