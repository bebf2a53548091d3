from __future__ import annotations

import re
import zlib

from hypothesis import given, settings
from hypothesis import strategies as st

from keyplane.domain import base62, keyformat
from keyplane.domain.keyformat import KeyKind

PREFIXES = st.from_regex(r"[a-z][a-z0-9_-]{0,15}", fullmatch=True)
KINDS = st.sampled_from(list(KeyKind))
BODIES = st.text(alphabet=base62.ALPHABET, min_size=30, max_size=30)
KEYS = st.builds(lambda k, p, b: keyformat.compose(k, p, b).text, KINDS, PREFIXES, BODIES)


@given(KEYS)
def test_every_generated_key_parses_back_to_itself(key: str) -> None:
    parsed = keyformat.parse(key)
    assert parsed is not None
    assert parsed.text == key


@given(KINDS, PREFIXES)
def test_generated_keys_have_the_documented_shape(kind: KeyKind, prefix: str) -> None:
    parsed = keyformat.generate(kind, prefix)
    assert parsed.text.startswith(f"{prefix}_{kind.value}_")
    assert len(parsed.body) == keyformat.BODY_LENGTH
    # at least 160 bits of randomness in the body
    assert len(parsed.body) * 5.954 >= 160
    expected = base62.encode(zlib.crc32(f"{prefix}_{kind.value}_{parsed.body}".encode()), 6)
    assert parsed.checksum == expected
    assert keyformat.SCAN_PATTERN.fullmatch(parsed.text)
    assert parsed.start == f"{prefix}_{kind.value}_{parsed.body[:4]}"
    assert parsed.end == parsed.text[-4:]


@settings(max_examples=300)
@given(KEYS, st.data())
def test_any_single_character_substitution_is_malformed(key: str, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(key) - 1))
    replacement = data.draw(st.characters().filter(lambda c: c != key[index]))
    mutated = key[:index] + replacement + key[index + 1 :]
    assert keyformat.parse(mutated) is None


@settings(max_examples=300)
@given(KEYS, st.data())
def test_any_swap_of_adjacent_different_characters_is_malformed(
    key: str, data: st.DataObject
) -> None:
    positions = [i for i in range(len(key) - 1) if key[i] != key[i + 1]]
    index = data.draw(st.sampled_from(positions))
    mutated = key[:index] + key[index + 1] + key[index] + key[index + 2 :]
    assert keyformat.parse(mutated) is None


def test_exhaustive_substitutions_and_swaps_on_one_key() -> None:
    key = keyformat.generate(KeyKind.LIVE).text
    alphabet = base62.ALPHABET + "_-!"
    for index, original in enumerate(key):
        for replacement in alphabet:
            if replacement != original:
                assert keyformat.parse(key[:index] + replacement + key[index + 1 :]) is None
    for index in range(len(key) - 1):
        if key[index] != key[index + 1]:
            swapped = key[:index] + key[index + 1] + key[index] + key[index + 2 :]
            assert keyformat.parse(swapped) is None


@given(st.text(max_size=200))
def test_arbitrary_text_never_crashes_the_parser(text: str) -> None:
    result = keyformat.parse(text)
    assert result is None or result.text == text


def test_truncated_extended_and_oversized_keys_are_malformed() -> None:
    key = keyformat.generate(KeyKind.TEST).text
    assert keyformat.parse(key[:-1]) is None
    assert keyformat.parse(key + "a") is None
    assert keyformat.parse("x" * 10_000) is None
    assert keyformat.parse("") is None


def test_custom_project_prefix_and_invalid_prefixes() -> None:
    parsed = keyformat.generate(KeyKind.LIVE, "sk-fr")
    assert parsed.text.startswith("sk-fr_live_")
    assert keyformat.parse(parsed.text) == parsed
    for bad in ("", "Kp", "1kp", "a" * 17, "kp!"):
        assert not keyformat.is_valid_prefix(bad)


def test_keys_are_scannable_in_free_text() -> None:
    keys = [keyformat.generate(kind).text for kind in KeyKind]
    text = "config: " + " and ".join(f'"{k}"' for k in keys) + " end"
    assert re.findall(keyformat.SCAN_PATTERN, text) == keys


def test_generated_keys_are_unique() -> None:
    assert len({keyformat.generate(KeyKind.LIVE).text for _ in range(2000)}) == 2000


def reference_parse(text: str) -> keyformat.ParsedKey | None:
    """The parser as it was before it became one regular expression: split on "_" from the
    right, check each part on its own. ``parse`` must agree with it on every input."""
    if len(text) > keyformat.MAX_KEY_LENGTH:
        return None
    head, sep, tail = text.rpartition("_")
    if not sep or len(tail) != 36 or not base62.is_base62(tail):
        return None
    prefix, sep, kind_text = head.rpartition("_")
    if not sep or not keyformat.is_valid_prefix(prefix):
        return None
    try:
        kind = KeyKind(kind_text)
    except ValueError:
        return None
    body, check = tail[:30], tail[30:]
    if keyformat.checksum(f"{head}_{body}") != check:
        return None
    return keyformat.ParsedKey(prefix, kind, body, check)


@st.composite
def near_keys(draw: st.DrawFn) -> str:
    """A valid key with a few characters inserted, replaced or deleted (often "_" or "-")."""
    text = draw(KEYS)
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(text)))
        char = draw(st.sampled_from(["_", "-", "a", "Z", "9", "é", "\n", "٣", ""]))
        cut = draw(st.integers(0, 1))
        text = text[:at] + char + text[at + cut :]
    return text


@given(st.one_of(near_keys(), st.text(max_size=80), KEYS))
@settings(max_examples=400)
def test_parse_agrees_with_the_reference_parser(text: str) -> None:
    assert keyformat.parse(text) == reference_parse(text)


@given(st.one_of(near_keys(), st.text(max_size=80), KEYS))
@settings(max_examples=400)
def test_kind_of_is_the_kind_parse_finds(text: str) -> None:
    parsed = reference_parse(text)
    assert keyformat.kind_of(text) == (None if parsed is None else parsed.kind)


@given(st.text(max_size=80))
@settings(max_examples=300)
def test_checksum_is_the_base62_crc32_of_the_text(text: str) -> None:
    # The fast path (pairs of characters) agrees with the reference encoder.
    assert keyformat.checksum(text) == base62.encode(
        zlib.crc32(text.encode("utf-8")), keyformat.CHECKSUM_LENGTH
    )
