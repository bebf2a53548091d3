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


def _value_of(text: str) -> int:
    """The 130-bit value of an id, decoded independently of ids._encode."""
    return int.from_bytes(
        base64.b32decode(
            "AAAAAA"
            + text.split("_", 1)[1]
            .upper()
            .translate(
                str.maketrans(
                    "0123456789ABCDEFGHJKMNPQRSTVWXYZ", "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
                )
            )
        ),
        "big",
    )


@given(
    st.integers(0, 2**44),
    st.integers(0, 2**79 - 1),
    st.lists(st.integers(0, 3), min_size=1, max_size=60),
)
@settings(max_examples=200)
def test_a_sequence_gives_the_reference_encoding_of_consecutive_values(
    start_ms: int, random_bits: int, steps: list[int]
) -> None:
    # Fast path (cached head, two pairs per id) and reference (_encode of the whole value)
    # agree, carries into the cached head included (random_bits near a 2**20 boundary).
    clock = [start_ms * 1_000_000]
    sequence = ids.Sequence("req", now_ns=lambda: clock[0], randbits=lambda _: random_bits)
    previous: int | None = None
    for step in steps:
        clock[0] += step * 400_000  # often the same millisecond, sometimes the next ones
        made = sequence.next()
        value = _value_of(made)
        assert made == ids._encode("req", value)
        assert ids.looks_like_id(made, "req")
        if previous is not None:
            assert value > previous
            if value >> 80 == previous >> 80:
                assert value == previous + 1  # same millisecond: the next value
        previous = value


def test_a_sequence_keeps_order_when_the_clock_steps_back() -> None:
    clock = [1_700_000_000_000_000_000]
    sequence = ids.Sequence("req", now_ns=lambda: clock[0])
    first = sequence.next()
    clock[0] -= 5_000_000_000
    assert sequence.next() > first


def test_sequence_ids_sort_between_new_ids_of_earlier_and_later_milliseconds() -> None:
    clock = [1_700_000_000_000 * 1_000_000]
    sequence = ids.Sequence("req", now_ns=lambda: clock[0])
    made = [sequence.next() for _ in range(1000)]
    assert made == sorted(made) and len(set(made)) == 1000
    assert ids.new_id("req", now_ms=1_699_999_999_999) < made[0]
    assert made[-1] < ids.new_id("req", now_ms=1_700_000_000_001)


def test_ids_made_on_the_clock_sort_in_creation_order_across_calls() -> None:
    """Many land in one millisecond: they page in the order the records were made."""
    made = [ids.new_id("sigsec") for _ in range(2_000)]
    made += ids.new_ids("sigsec", 3)
    assert made == sorted(made)
    assert len(set(made)) == len(made)
