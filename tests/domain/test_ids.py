"""Ids sort by creation; a batch made in one millisecond sorts in the order it was made."""

from __future__ import annotations

from keyplane.domain import ids


def test_a_batch_of_ids_sorts_in_order_within_one_millisecond() -> None:
    for _ in range(200):
        batch = ids.new_ids("evt", 5, now_ms=1_700_000_000_000)
        assert batch == sorted(batch)
        assert len(set(batch)) == 5
        assert all(ids.looks_like_id(i, "evt") for i in batch)


def test_later_milliseconds_sort_later() -> None:
    assert ids.new_id("key", now_ms=1) < ids.new_id("key", now_ms=2)
