"""Ids sort by creation; a batch made in one millisecond sorts in the order it was made."""

from __future__ import annotations

import base64

from hypothesis import given, settings
from hypothesis import strategies as st

from keyplane.domain import ids


def test_a_batch_of_ids_sorts_in_order_within_one_millisecond() -> None:
    for _ in range(200):
        batch = ids.new_ids("evt", 5, now_ms=1_700_000_000_000)
        assert batch == sorted(batch)
        assert len(set(batch)) == 5
        assert all(ids.looks_like_id(i, "evt") for i in batch)


def test_later_milliseconds_sort_later() -> None:
    assert ids.new_id("key", now_ms=1) < ids.new_id("key", now_ms=2)


@given(st.integers(0, 2**130 - 1), st.sampled_from(["req", "key", "mk"]))
@settings(max_examples=200)
def test_ids_encode_as_base32_in_crockfords_alphabet(value: int, kind: str) -> None:
    # The reference: RFC 4648 base32 of the value's 20 bytes, its last 26 characters (the 130
    # low bits), mapped onto Crockford's lower-case alphabet.
    text = base64.b32encode(value.to_bytes(20, "big"))[-ids.ID_LENGTH :].decode("ascii")
    crockford = text.translate(
        str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", "0123456789abcdefghjkmnpqrstvwxyz")
    )
    assert ids._encode(kind, value) == f"{kind}_{crockford}"
