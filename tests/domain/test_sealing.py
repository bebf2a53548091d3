"""Sealing of replay secrets: AES-GCM under an HKDF key, bound to its record."""

from __future__ import annotations

from keyplane.domain.sealing import replay_sealing_key, seal, unseal

KEY = replay_sealing_key(b"server-secret-" + b"z" * 32)
SECRET = "kp_live_" + "A" * 36


def test_a_sealed_secret_opens_only_with_its_key_and_record() -> None:
    token = seal(KEY, SECRET, b"org\0mk\0digest\0key_1")
    assert SECRET not in token and SECRET[8:20] not in token
    assert unseal(KEY, token, b"org\0mk\0digest\0key_1") == SECRET
    assert unseal(KEY, token, b"org\0mk\0digest\0key_2") is None
    assert unseal(replay_sealing_key(b"another-secret-" + b"z" * 32), token, b"") is None


def test_two_seals_of_one_secret_differ() -> None:
    assert seal(KEY, SECRET, b"a") != seal(KEY, SECRET, b"a")  # a fresh nonce each time


def test_damaged_tokens_open_as_nothing() -> None:
    token = seal(KEY, SECRET, b"a")
    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    for bad in (flipped, "v1.", "v1.!!!", "v2." + token[3:], "", token[:10]):
        assert unseal(KEY, bad, b"a") is None, bad


def test_the_key_is_for_this_purpose_only() -> None:
    # Not the server secret itself, nor a key any other derivation yields by accident.
    assert len(KEY) == 32 and (b"server-secret-" + b"z" * 32)[:32] != KEY
