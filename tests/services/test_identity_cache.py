"""``IdentityCache``: found by the owner's identity and the parts, never by equality; bounded."""

from __future__ import annotations

from keyplane.services.identity_cache import IdentityCache


def test_values_are_found_by_the_owners_identity_and_the_parts() -> None:
    cache: IdentityCache[list[int], str] = IdentityCache()
    owner, equal = [1, 2], [1, 2]
    assert cache.put(owner, ("a",), "made") == "made"
    assert cache.get(owner, ("a",)) == "made"
    assert cache.get(owner, ("b",)) is None
    assert cache.get(equal, ("a",)) is None  # equal, but another object
    cache.put(owner, ("a",), "again")
    assert cache.get(owner, ("a",)) == "again"


def test_an_entry_keeps_its_owner_so_a_reused_id_is_not_confused() -> None:
    cache: IdentityCache[object, int] = IdentityCache()
    cache.put(object(), (), 1)  # the cache holds it: its id stays taken
    assert all(cache.get(object()) is None for _ in range(100))


def test_full_it_starts_over() -> None:
    cache: IdentityCache[object, int] = IdentityCache(max_entries=3)
    owners = [object() for _ in range(4)]
    for number, owner in enumerate(owners[:3]):
        cache.put(owner, (), number)
    assert [cache.get(owner) for owner in owners[:3]] == [0, 1, 2]
    cache.put(owners[3], (), 3)
    assert [cache.get(owner) for owner in owners] == [None, None, None, 3]
