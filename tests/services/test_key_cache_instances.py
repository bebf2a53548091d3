"""The packed key cache and its hot map of unpacked entries never serve a key as it was
before a change: in one instance, and on another instance told through Redis."""

from __future__ import annotations

import asyncio

import pytest

from keyplane.domain.clock import ManualClock
from keyplane.domain.crypto import KeyedSha256
from keyplane.domain.decisions import Code
from keyplane.domain.tenancy import Principal
from keyplane.services.cache import MISSING
from keyplane.services.keys import NewKey
from keyplane.services.runtime import Runtime
from keyplane.services.verify import VerifyRequest
from keyplane.settings import resolve_server_secret
from tests.conftest import REDIS_URL, Database, require_redis


async def test_a_key_changed_after_it_left_the_hot_map_is_served_changed(
    database: Database, clock: ManualClock
) -> None:
    # One hot entry and a cache of 100: keys are served from packed form most of the time.
    runtime = await Runtime.start(
        database.settings(cache_hot_entries=1, cache_max_entries=100), clock
    )
    try:
        root = Principal("mk_test", runtime.default_project.org_id, None, ("*",))
        issued = [await runtime.services.keys.create(root, NewKey(name=f"k{n}")) for n in range(3)]
        verifier = runtime.services.verifier
        for _ in range(2):
            for key in issued:
                verdict = await verifier.verify(root, VerifyRequest(key.secret))
                assert verdict.code is Code.VALID
                assert verdict.record == key.record
        await runtime.services.keys.update(root, issued[0].record.id, {"name": "renamed"})
        await runtime.services.keys.revoke(root, issued[1].record.id, "leaked")
        renamed = await verifier.verify(root, VerifyRequest(issued[0].secret))
        assert renamed.record is not None and renamed.record.name == "renamed"
        revoked = await verifier.verify(root, VerifyRequest(issued[1].secret))
        assert revoked.code is Code.REVOKED
        assert (await verifier.verify(root, VerifyRequest(issued[2].secret))).code is Code.VALID
    finally:
        await runtime.stop()


async def test_the_cache_read_without_a_coroutine_serves_what_by_hash_serves(
    database: Database, clock: ManualClock
) -> None:
    # Verify's warm path: the raw digest looked up in the cache as it stores hashes, the
    # same entry as by_hash's, and MISSING (never a stale entry) before a load and after a
    # change.
    settings = database.settings(cache_hot_entries=1, cache_max_entries=100)
    keyed = KeyedSha256(resolve_server_secret(settings))
    runtime = await Runtime.start(settings, clock)
    try:
        root = Principal("mk_test", runtime.default_project.org_id, None, ("*",))
        first, second = [
            await runtime.services.keys.create(root, NewKey(name=f"k{n}")) for n in range(2)
        ]
        directory = runtime.services.verifier._directory
        digests = [keyed.digest(key.secret.encode()) for key in (first, second)]
        assert [directory.cached_by_digest(d) for d in digests] == [MISSING, MISSING]
        # On PostgreSQL an instance also hears its own key writes (here the two creations)
        # and evicts when each notice comes, which may be during a load (then not cached) or
        # between two. There are two notices at most, so one of five tries sees neither.
        for _ in range(5):
            first_entry = await directory.by_hash(digests[0].hex())
            second_entry = await directory.by_hash(digests[1].hex())  # now the hot one
            # The hot one first: the other's lookup then takes its place in the hot map.
            cached = [directory.cached_by_digest(d) for d in reversed(digests)][::-1]
            if MISSING not in cached:
                break
        assert first_entry is not None and second_entry is not None
        assert cached[1] is second_entry  # from the hot map
        # The first, pushed out of the one hot entry, unpacked again from the cache.
        assert cached[0] is not None and cached[0] is not MISSING
        assert cached[0] is not first_entry
        assert (cached[0].match, cached[0].policy) == (first_entry.match, first_entry.policy)
        unknown = bytes(32)
        assert await directory.by_hash(unknown.hex()) is None
        assert directory.cached_by_digest(unknown) is None
        await runtime.services.keys.update(root, first.record.id, {"name": "renamed"})
        assert directory.cached_by_digest(digests[0]) is MISSING
        reloaded = await directory.by_hash(digests[0].hex())
        assert reloaded is not None and reloaded.record.name == "renamed"
        assert directory.cached_by_digest(digests[0]) in (reloaded, MISSING)  # a late notice
    finally:
        await runtime.stop()


@pytest.mark.postgres
async def test_a_key_revoked_on_one_instance_is_refused_from_the_other_instances_cache(
    postgres_database: Database, clock: ManualClock
) -> None:
    require_redis()
    settings = postgres_database.settings(redis_url=REDIS_URL, cache_hot_entries=1)
    first = await Runtime.start(settings, clock)
    second = await Runtime.start(settings, clock)
    try:
        root = Principal("mk_test", first.default_project.org_id, None, ("*",))
        issued = [await first.services.keys.create(root, NewKey(name=f"k{n}")) for n in range(3)]
        for key in issued:
            assert (await second.services.verifier.verify(root, VerifyRequest(key.secret))).valid
        target = issued[0].record.id
        told = asyncio.Event()
        evict = second.directory.evict

        def noting(record_id: str | None, extra_hashes: tuple[str, ...] = ()) -> None:
            evict(record_id, extra_hashes)
            if record_id == target:
                told.set()

        second.directory.evict = noting  # type: ignore[method-assign]
        await first.services.keys.revoke(root, target, "leaked")
        await asyncio.wait_for(told.wait(), 30)  # a guard against hanging, not a timing bound
        verdict = await second.services.verifier.verify(root, VerifyRequest(issued[0].secret))
        assert verdict.code is Code.REVOKED
        assert (await second.services.verifier.verify(root, VerifyRequest(issued[1].secret))).valid
    finally:
        await second.stop()
        await first.stop()
