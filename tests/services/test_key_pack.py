from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from keyplane.domain.keys import Environment, KeyRecord, KeyStatus
from keyplane.services.directory import KeyEntry, build_entry, compile_policy
from keyplane.services.key_pack import ShapeBook, pack, unpack
from keyplane.store.base import SecretMatch

texts = st.text(max_size=12)
maybe_texts = st.none() | texts
hex_hashes = st.binary(min_size=32, max_size=32).map(bytes.hex)
instants = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)
# A timestamp in another zone (never from the store, which answers UTC) must survive too.
other_zone = st.datetimes(
    min_value=datetime(1971, 1, 1),
    max_value=datetime(2200, 1, 1),
    timezones=st.just(timezone(timedelta(hours=2))),
)
maybe_instants = st.none() | instants
policies = st.sampled_from(
    [
        {},
        {"scopes": ["verify"]},
        {"rate_limits": [{"name": "minute", "limit": 10, "period": 60}]},
        {"budget": {"credit_limit": 1000}},
    ]
)


@st.composite
def matches(draw: st.DrawFn) -> tuple[SecretMatch, str]:
    presented = draw(hex_hashes)
    record = KeyRecord(
        id=draw(texts),
        org_id=draw(st.sampled_from(["org_a", "org_b"])),
        project_id=draw(st.sampled_from(["proj_a", "proj_b"])),
        hash=draw(st.just(presented) | hex_hashes),
        start=draw(texts),
        end=draw(texts),
        name=draw(st.text(max_size=40)),
        environment=draw(st.sampled_from(Environment)),
        created_at=draw(instants | other_zone),
        updated_at=draw(instants),
        status=draw(st.sampled_from(KeyStatus)),
        label=draw(maybe_texts),
        description=draw(maybe_texts),
        owner=draw(maybe_texts),
        tags=tuple(draw(st.lists(texts, max_size=3))),
        metadata=draw(st.dictionaries(texts, st.integers() | texts, max_size=3)),
        scopes=tuple(draw(st.lists(st.sampled_from(["verify", "usage", "x"]), max_size=3))),
        expires_at=draw(maybe_instants),
        disabled_reason=draw(maybe_texts),
        auto_enable_at=draw(maybe_instants),
        revoked_reason=draw(maybe_texts),
        revoked_at=draw(maybe_instants),
        last_used_at=draw(maybe_instants),
        plan_id=draw(st.none() | st.just("plan_1")),
        policy=draw(policies),
        created_by=draw(st.none() | st.just("mk_1")),
    )
    match = SecretMatch(
        record,
        draw(maybe_instants),
        draw(st.none() | st.just("pro")),
        draw(st.none() | policies),
        draw(st.none() | texts),
        draw(st.just(presented) | hex_hashes),
    )
    return match, presented


book = ShapeBook(compile_policy, capacity=4)


@given(matches(), st.booleans(), st.none() | texts)
def test_an_unpacked_key_equals_the_entry_built_from_the_store_answer(
    drawn: tuple[SecretMatch, str], keyed_by_hash: bool, signing_secret: str | None
) -> None:
    """The packed path and the reference (``build_entry``) agree on every field."""
    match, presented = drawn
    given_hash = presented if keyed_by_hash else None
    packed = pack(match, book.shape(match), signing_secret, given_hash)
    unpacked, shape, opened = unpack(packed, given_hash)
    assert unpacked == match
    assert unpacked.record == match.record
    for name in KeyRecord.__slots__:
        assert getattr(unpacked.record, name) == getattr(match.record, name), name
    reference = build_entry(match)
    assert KeyEntry(unpacked, shape.policy, shape.windows, opened) == KeyEntry(
        match, reference.policy, reference.windows, signing_secret
    )


def test_keys_with_the_same_plan_and_policy_share_one_compiled_policy() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)

    def match(key_id: str) -> SecretMatch:
        record = KeyRecord(
            key_id, "org", "proj", "ab" * 32, "kp_", "zz", "n", Environment.LIVE, now, now
        )
        return SecretMatch(record, None, "pro", {"scopes": ["verify"]}, None, "ab" * 32)

    shapes = ShapeBook(compile_policy)
    first, second = shapes.shape(match("key_1")), shapes.shape(match("key_2"))
    assert first is second
    assert first.policy is second.policy


def test_documents_that_only_print_alike_do_not_share_a_compiled_policy() -> None:
    from decimal import Decimal

    from keyplane.services.key_pack import _canonical

    assert _canonical({"x": Decimal("1")}) != _canonical({"x": "1"})
    assert _canonical({"b": 1, "a": [1]}) == _canonical({"a": [1], "b": 1})
    assert _canonical(None) != _canonical({})
