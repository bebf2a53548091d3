"""The cached view of keys that the data plane reads: record, plan and effective policy.

Two caches share one invalidation: by secret hash (verify) and by id (usage reports). The
effective policy is parsed once per distinct plan and key policy, not once per key or request.

The caches hold keys packed (``services/key_pack.py``, about 500 bytes each); the most
recently used ones are also kept unpacked, as :class:`KeyEntry` objects, in a small hot map
(``cache_hot_entries``), so a busy key is unpacked once. A hot entry is only served while the
cache still holds the very packed key it was made from: an eviction or a reload replaces the
packed key, and the stale hot entry is then never used.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any

from keyplane.domain import gcra
from keyplane.domain.admission import TokenCount, WindowKind
from keyplane.domain.frozen import fast_init
from keyplane.domain.keys import KeyRecord
from keyplane.domain.policy import Policy, merge_documents, parse_policy, token_windows
from keyplane.domain.sealing import unseal
from keyplane.services.cache import MISSING, Missing, TtlCache
from keyplane.services.clock_map import ClockMap
from keyplane.services.key_pack import PackedKey, ShapeBook, pack, unpack
from keyplane.settings import Settings
from keyplane.store.base import KeyLookup, SecretMatch


@dataclass(frozen=True, slots=True)
class WindowSpec:
    name: str
    kind: WindowKind
    window: gcra.Window
    #: For token windows: which tokens they count.
    counts: TokenCount | None = None


# Built on every unpacking of a cached key outside the hot map.
@fast_init
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
    """The entry of ``match`` built directly (the reference the packed path must agree with)."""
    policy, windows = compile_policy(match.plan_policy, match.record.policy)
    return KeyEntry(match, policy, windows, open_signing_secret(match, signing_key))


def compile_policy(
    plan_policy: dict[str, Any] | None, key_policy: dict[str, Any]
) -> tuple[Policy, tuple[WindowSpec, ...]]:
    """The effective policy of a key (its plan's merged with its own) and its windows."""
    policy = parse_policy(merge_documents(plan_policy or {}, key_policy))
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


def open_signing_secret(match: SecretMatch, signing_key: bytes | None) -> str | None:
    if match.sealed_signing_secret is None or signing_key is None:
        return None
    return unseal(signing_key, match.sealed_signing_secret, match.secret_hash.encode("ascii"))


def _compact_hash(secret_hash: str) -> object:
    # A hex digest as its bytes: 65 bytes per cached key instead of 113. Only the canonical
    # (lowercase) form is compacted, so two different strings never share an entry; anything
    # else (a test's placeholder) is kept as given.
    try:
        raw = bytes.fromhex(secret_hash)
    except ValueError:
        return secret_hash
    return raw if raw.hex() == secret_hash else secret_hash


class KeyDirectory:
    def __init__(
        self, store: KeyLookup, settings: Settings, signing_key: bytes | None = None
    ) -> None:
        self._store = store
        self._book = ShapeBook(compile_policy)
        book = self._book

        async def by_hash(secret_hash: str) -> PackedKey | None:
            match = await store.find_by_secret(secret_hash)
            if match is None:
                return None
            return pack(
                match, book.shape(match), open_signing_secret(match, signing_key), secret_hash
            )

        async def by_id(key_id: str) -> PackedKey | None:
            match = await store.find_by_id(key_id)
            return None if match is None else pack(match, book.shape(match), None, None)

        def cache(
            loader: Callable[[str], Awaitable[PackedKey | None]], compact: bool
        ) -> TtlCache[PackedKey]:
            return TtlCache(
                loader,
                _record_id,
                ttl=settings.cache_ttl_seconds,
                negative_ttl=settings.negative_cache_ttl_seconds,
                max_entries=settings.cache_max_entries,
                compact_key=_compact_hash if compact else None,
            )

        self.hashes = cache(by_hash, compact=True)
        self.ids = cache(by_id, compact=False)
        hot = max(1, settings.cache_hot_entries)
        # Keyed as the caches store their keys (a secret hash as its 32 bytes).
        self._hot_hashes: ClockMap[Hashable, tuple[PackedKey, KeyEntry]] = ClockMap(hot)
        self._hot_ids: ClockMap[Hashable, tuple[PackedKey, KeyEntry]] = ClockMap(hot)
        #: Told of every invalidation, to pass it on to other instances; awaited, so a write
        #: does not return before its eviction is on its way to them.
        self.on_change: Callable[[str | None, tuple[str, ...]], Awaitable[None]] | None = None

    async def by_hash(self, secret_hash: str) -> KeyEntry | None:
        packed = await self.hashes.get(secret_hash)
        if packed is None:
            return None
        return _unpacked(self._hot_hashes, _compact_hash(secret_hash), packed, secret_hash)

    def cached_by_digest(self, digest: bytes) -> KeyEntry | Missing | None:
        """:meth:`by_hash` of ``digest.hex()`` (a raw HMAC-SHA256) when the cache knows it,
        without a coroutine; ``MISSING`` when it does not (``by_hash`` then loads it)."""
        packed = self.hashes.cached(digest)  # the hash cache's stored form of the hex digest
        if packed is None or packed is MISSING:
            return packed
        return _unpacked(self._hot_hashes, digest, packed, digest)

    async def by_id(self, key_id: str) -> KeyEntry | None:
        packed = await self.ids.get(key_id)
        if packed is None:
            return None
        return _unpacked(self._hot_ids, key_id, packed, None)

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


def _unpacked(
    hot: ClockMap[Hashable, tuple[PackedKey, KeyEntry]],
    key: Hashable,
    packed: PackedKey,
    given_hash: str | bytes | None,
) -> KeyEntry:
    """The entry of ``packed``, from the hot map when it was made from this very packed key;
    ``given_hash`` is the secret hash it was looked up by (``None`` by id), hex or raw: a raw
    one is written in hex only when the key is unpacked."""
    known = hot.get(key)
    # Identity, not equality: the hot entry is only good for the packed key it came from.
    if known is not None and known[0] is packed:
        return known[1]
    if isinstance(given_hash, bytes):
        given_hash = given_hash.hex()
    match, shape, signing_secret = unpack(packed, given_hash)
    entry = KeyEntry(match, shape.policy, shape.windows, signing_secret)
    hot.put(key, (packed, entry))
    return entry


def _record_id(packed: PackedKey) -> str:
    return packed[1]
