from __future__ import annotations

import asyncio

import pytest

from keyplane.services.cache import MISSING, TtlCache


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Loader:
    """Counts loads; optionally blocks until released, to make loads overlap."""

    def __init__(self, data: dict[str, tuple[str, str]]) -> None:
        self.data = data
        self.calls: list[str] = []
        self.gate: asyncio.Event | None = None

    async def __call__(self, secret_hash: str) -> tuple[str, str] | None:
        self.calls.append(secret_hash)
        value = self.data.get(secret_hash)  # read first, like a query's snapshot
        if self.gate is not None:
            await self.gate.wait()
        return value


def make(loader: Loader, clock: FakeTime, max_entries: int = 100) -> TtlCache[tuple[str, str]]:
    return TtlCache(
        loader,
        lambda value: value[0],
        ttl=30,
        negative_ttl=5,
        max_entries=max_entries,
        monotonic=clock,
    )


async def test_hits_are_served_without_loading_until_ttl_expires() -> None:
    loader, clock = Loader({"h1": ("id1", "v1")}), FakeTime()
    cache = make(loader, clock)
    assert await cache.get("h1") == ("id1", "v1")
    assert await cache.get("h1") == ("id1", "v1")
    assert loader.calls == ["h1"]
    clock.now += 30
    assert await cache.get("h1") == ("id1", "v1")
    assert loader.calls == ["h1", "h1"]


async def test_unknown_hashes_are_negatively_cached_briefly() -> None:
    loader, clock = Loader({}), FakeTime()
    cache = make(loader, clock)
    assert await cache.get("nope") is None
    assert await cache.get("nope") is None
    assert len(loader.calls) == 1
    clock.now += 5
    assert await cache.get("nope") is None
    assert len(loader.calls) == 2


async def test_concurrent_misses_share_one_load() -> None:
    loader, clock = Loader({"h1": ("id1", "v1")}), FakeTime()
    loader.gate = asyncio.Event()
    cache = make(loader, clock)
    waiters = [asyncio.create_task(cache.get("h1")) for _ in range(50)]
    await asyncio.sleep(0)
    loader.gate.set()
    assert await asyncio.gather(*waiters) == [("id1", "v1")] * 50
    assert loader.calls == ["h1"]


async def test_a_cancelled_caller_does_not_cancel_the_shared_load() -> None:
    loader, clock = Loader({"h1": ("id1", "v1")}), FakeTime()
    loader.gate = asyncio.Event()
    cache = make(loader, clock)
    first = asyncio.create_task(cache.get("h1"))
    second = asyncio.create_task(cache.get("h1"))
    await asyncio.sleep(0)
    first.cancel()
    loader.gate.set()
    assert await second == ("id1", "v1")
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_invalidate_evicts_every_hash_of_a_record() -> None:
    loader, clock = Loader({"old": ("id1", "v1"), "new": ("id1", "v2")}), FakeTime()
    cache = make(loader, clock)
    await cache.get("old")
    await cache.get("new")
    loader.data = {"old": ("id1", "revoked"), "new": ("id1", "revoked")}
    await cache.invalidate("id1")
    assert await cache.get("old") == ("id1", "revoked")
    assert await cache.get("new") == ("id1", "revoked")


async def test_invalidate_with_extra_hash_clears_a_negative_entry() -> None:
    loader, clock = Loader({}), FakeTime()
    cache = make(loader, clock)
    assert await cache.get("fresh") is None
    loader.data["fresh"] = ("id9", "v")
    await cache.invalidate("id9", ("fresh",))
    assert await cache.get("fresh") == ("id9", "v")


async def test_a_load_racing_an_invalidation_is_not_cached() -> None:
    loader, clock = Loader({"h1": ("id1", "before")}), FakeTime()
    loader.gate = asyncio.Event()
    cache = make(loader, clock)
    pending = asyncio.create_task(cache.get("h1"))
    while not loader.calls:
        await asyncio.sleep(0)
    loader.data["h1"] = ("id1", "after")
    await cache.invalidate("id1")  # the write lands while the old value is being loaded
    loader.gate.set()
    assert await pending == ("id1", "before")
    assert await cache.get("h1") == ("id1", "after")


async def test_a_lookup_after_an_eviction_never_joins_a_load_from_before_it() -> None:
    """A request arriving after a revoke's eviction must not share the pre-revoke read."""
    loader, clock = Loader({"h1": ("id1", "before")}), FakeTime()
    loader.gate = asyncio.Event()
    cache = make(loader, clock)
    early = asyncio.create_task(cache.get("h1"))
    while not loader.calls:
        await asyncio.sleep(0)
    loader.data["h1"] = ("id1", "revoked")
    await cache.invalidate("id1")
    late = asyncio.create_task(cache.get("h1"))
    for _ in range(100):  # let the late lookup start its own load (bounded: it may join)
        if len(loader.calls) == 2:
            break
        await asyncio.sleep(0)
    loader.gate.set()
    assert await early == ("id1", "before")  # it asked before the write: either answer is fair
    assert await late == ("id1", "revoked")
    assert await cache.get("h1") == ("id1", "revoked")  # and the newer load is the one cached


async def test_load_errors_reach_every_waiter_and_are_not_cached() -> None:
    clock = FakeTime()
    calls = 0

    async def failing(_hash: str) -> tuple[str, str] | None:
        nonlocal calls
        calls += 1
        raise RuntimeError("database down")

    cache: TtlCache[tuple[str, str]] = TtlCache(
        failing, lambda v: v[0], ttl=30, negative_ttl=5, max_entries=10, monotonic=clock
    )
    with pytest.raises(RuntimeError):
        await cache.get("h1")
    with pytest.raises(RuntimeError):
        await cache.get("h1")
    assert calls == 2


async def test_size_is_bounded_by_evicting_the_oldest() -> None:
    loader = Loader({f"h{i}": (f"id{i}", "v") for i in range(10)})
    cache = make(loader, FakeTime(), max_entries=3)
    for i in range(10):
        await cache.get(f"h{i}")
    assert len(cache) == 3
    loader.calls.clear()
    await cache.get("h9")
    await cache.get("h0")
    assert loader.calls == ["h0"]


async def test_a_hash_pushed_out_by_the_cap_leaves_its_record_with_the_others() -> None:
    # One record, three hashes (current and two rotated out), in a cache of two.
    data = {"h1": ("id1", "a"), "h2": ("id1", "b"), "h3": ("id1", "c"), "x": ("id2", "x")}
    loader, clock = Loader(data), FakeTime()
    cache = make(loader, clock, max_entries=2)
    for secret_hash in ("h1", "h2", "h3"):
        await cache.get(secret_hash)
    assert len(cache) == 2
    await cache.get("x")
    # Invalidating id1 forgets whichever of its hashes are still cached, and only those.
    cache.evict("id1")
    assert len(cache) == 1
    loader.calls.clear()
    await cache.get("x")
    await cache.get("h3")
    assert loader.calls == ["h3"]


def compacting(loader: Loader, clock: FakeTime) -> TtlCache[tuple[str, str]]:
    """A cache that stores hex digests as their bytes, as the key directory's does."""
    return TtlCache(
        loader,
        lambda value: value[0],
        ttl=30,
        negative_ttl=5,
        max_entries=10,
        monotonic=clock,
        compact_key=bytes.fromhex,
    )


async def test_keys_can_be_stored_compacted_and_still_evicted_by_their_given_form() -> None:
    loader, clock = Loader({"aa" * 32: ("id1", "v")}), FakeTime()
    cache = compacting(loader, clock)
    assert await cache.get("aa" * 32) == ("id1", "v")
    assert await cache.get("aa" * 32) == ("id1", "v")
    assert loader.calls == ["aa" * 32]
    cache.evict("id2", ("aa" * 32,))
    assert len(cache) == 0


async def test_cached_answers_from_the_cache_only_in_the_stored_form() -> None:
    loader, clock = Loader({"aa" * 32: ("id1", "v")}), FakeTime()
    cache = compacting(loader, clock)
    stored = bytes.fromhex("aa" * 32)
    assert cache.cached(stored) is MISSING  # nothing loaded yet, and cached() never loads
    assert loader.calls == []
    assert await cache.get("aa" * 32) == ("id1", "v")
    assert cache.cached(stored) == ("id1", "v")
    assert cache.cached("aa" * 32) is MISSING  # the given form is not the stored one
    assert await cache.get("bb" * 32) is None
    assert cache.cached(bytes.fromhex("bb" * 32)) is None  # known unknown, not missing
    clock.now += 5
    assert cache.cached(bytes.fromhex("bb" * 32)) is MISSING  # the negative entry expired
    assert cache.cached(stored) == ("id1", "v")
    cache.evict("id1")
    assert cache.cached(stored) is MISSING
    assert loader.calls == ["aa" * 32, "bb" * 32]
