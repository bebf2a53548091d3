"""Envelope encryption: round trips, tamper evidence, row binding, key ids and rewrapping."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyplane.domain.envelope import (
    Keyring,
    MasterKey,
    credential_aad,
    rewrap,
    seal,
    token_key_id,
    unseal,
)
from keyplane.errors import (
    ConfigurationError,
    KeyplaneError,
    VaultError,
    VaultIntegrityError,
    VaultKeyError,
)

SECRET = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"
AAD = credential_aad("org_1", "cred_1")
OLD = MasterKey(bytes(range(32)))
NEW = MasterKey(bytes(range(32, 64)))


def test_round_trip() -> None:
    keyring = Keyring(OLD)
    assert unseal(keyring, seal(keyring, SECRET, AAD), AAD) == SECRET


@settings(max_examples=60, deadline=None)
@given(
    plaintext=st.text(max_size=300),
    org=st.text(min_size=1, max_size=20),
    row=st.text(min_size=1, max_size=20),
)
def test_any_text_round_trips_for_its_own_row(plaintext: str, org: str, row: str) -> None:
    aad = credential_aad(org, row)
    token = seal(Keyring(OLD), plaintext, aad)
    assert token.isascii()
    assert unseal(Keyring(OLD), token, aad) == plaintext


def test_token_has_the_agreed_shape_and_hides_the_secret() -> None:
    token = seal(Keyring(OLD), SECRET, AAD)
    prefix, key_id, wrapped, body = token.split(".")
    assert (prefix, key_id) == ("kpv1", OLD.key_id)
    assert token_key_id(token) == OLD.key_id
    assert SECRET not in token
    assert SECRET.encode() not in base64.urlsafe_b64decode(body + "==")
    # nonce + 32-byte data key + tag
    assert len(base64.urlsafe_b64decode(wrapped + "==")) == 12 + 32 + 16


def test_every_seal_uses_fresh_randomness() -> None:
    tokens = [seal(Keyring(OLD), SECRET, AAD) for _ in range(50)]
    wrapped = {t.split(".")[2] for t in tokens}
    bodies = {t.split(".")[3] for t in tokens}
    secret_nonces = {base64.urlsafe_b64decode(b + "==")[:12] for b in bodies}
    wrap_nonces = {base64.urlsafe_b64decode(w + "==")[:12] for w in wrapped}
    assert len(wrapped) == len(bodies) == len(secret_nonces) == len(wrap_nonces) == 50


def test_flipping_any_bit_of_the_token_fails() -> None:
    keyring = Keyring(OLD)
    token = seal(keyring, "sk-short", AAD).encode("ascii")
    for index in range(len(token)):
        for bit in range(8):
            altered = bytearray(token)
            altered[index] ^= 1 << bit
            with pytest.raises(VaultError):
                unseal(keyring, altered.decode("latin-1"), AAD)


def test_flipping_a_bit_of_the_decoded_ciphertext_or_wrapped_key_fails() -> None:
    # The character-level test above can hit the base64 checks first; this one reaches GCM.
    keyring = Keyring(OLD)
    prefix, key_id, wrapped, body = seal(keyring, SECRET, AAD).split(".")
    for part in ("wrapped", "body"):
        raw = base64.urlsafe_b64decode((wrapped if part == "wrapped" else body) + "==")
        for index in range(len(raw)):
            altered = bytearray(raw)
            altered[index] ^= 0x01
            text = base64.urlsafe_b64encode(bytes(altered)).rstrip(b"=").decode()
            parts = (
                [prefix, key_id, text, body]
                if part == "wrapped"
                else [prefix, key_id, wrapped, text]
            )
            with pytest.raises(VaultIntegrityError):
                unseal(keyring, ".".join(parts), AAD)


def test_a_token_moved_to_another_row_does_not_decrypt() -> None:
    keyring = Keyring(OLD)
    token = seal(keyring, SECRET, credential_aad("org_1", "cred_1"))
    for other in (
        credential_aad("org_1", "cred_2"),
        credential_aad("org_2", "cred_1"),
        credential_aad("org_1c", "red_1"),  # same concatenation, different split
    ):
        with pytest.raises(VaultIntegrityError, match="integrity"):
            unseal(keyring, token, other)


def test_aad_is_unambiguous() -> None:
    assert credential_aad("ab", "c") != credential_aad("a", "bc")


def test_a_missing_master_key_is_a_clear_key_error() -> None:
    token = seal(Keyring(OLD), SECRET, AAD)
    with pytest.raises(VaultKeyError) as caught:
        unseal(Keyring(NEW), token, AAD)
    assert f"sealed with master key {OLD.key_id}, which is not configured" in caught.value.message
    assert caught.value.code == "VAULT_KEY_MISSING"
    assert isinstance(caught.value, KeyplaneError)


def test_a_relabelled_key_id_does_not_decrypt_with_the_named_key() -> None:
    # Swap the id for another configured key's: the wrap authenticates the id, so GCM rejects it.
    keyring = Keyring(NEW, [OLD])
    prefix, _, wrapped, body = seal(Keyring(OLD), SECRET, AAD).split(".")
    with pytest.raises(VaultIntegrityError):
        unseal(keyring, ".".join([prefix, NEW.key_id, wrapped, body]), AAD)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "kpv1",
        "kpv1...",
        "kpv2.0011223344556677.AA.AA",
        "kpv1.XYZ.AA.AA",
        "kpv1.00.AA.AA",
        "x" * 10_000,
    ],
)
def test_malformed_tokens_are_integrity_errors(token: str) -> None:
    with pytest.raises(VaultIntegrityError):
        unseal(Keyring(OLD), token, AAD)
    with pytest.raises(VaultIntegrityError):
        token_key_id(token)


def test_rewrap_moves_to_the_new_key_without_touching_the_ciphertext() -> None:
    token = seal(Keyring(OLD), SECRET, AAD)
    during = Keyring(NEW, [OLD])
    moved = rewrap(during, token, AAD)
    assert token_key_id(moved) == NEW.key_id
    assert moved.split(".")[3] == token.split(".")[3]
    assert unseal(Keyring(NEW), moved, AAD) == SECRET
    with pytest.raises(VaultKeyError):
        unseal(Keyring(OLD), moved, AAD)
    # Re-running is a no-op once current.
    assert rewrap(during, moved, AAD) == moved


def test_rewrap_checks_the_row_binding_too() -> None:
    token = seal(Keyring(OLD), SECRET, AAD)
    with pytest.raises(VaultIntegrityError):
        rewrap(Keyring(NEW, [OLD]), token, credential_aad("org_1", "cred_2"))


def test_rewrap_needs_the_old_key() -> None:
    token = seal(Keyring(OLD), SECRET, AAD)
    with pytest.raises(VaultKeyError):
        rewrap(Keyring(NEW), token, AAD)


def test_key_id_is_derived_one_way_and_stable() -> None:
    assert len(OLD.key_id) == 16
    assert int(OLD.key_id, 16) >= 0
    assert MasterKey(bytes(range(32))).key_id == OLD.key_id
    assert OLD.key_id != NEW.key_id
    assert bytes(range(32)).hex()[:16] != OLD.key_id


def test_master_key_never_shows_its_material() -> None:
    key = MasterKey.generate()
    text = key.to_base64()
    assert text not in repr(key)
    assert text not in repr(Keyring(key))
    assert MasterKey.from_base64(text) == key


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_master_key_must_be_32_bytes(size: int) -> None:
    with pytest.raises(ConfigurationError, match="exactly 32 bytes"):
        MasterKey(b"k" * size)
    with pytest.raises(ConfigurationError, match="exactly 32 bytes"):
        MasterKey.from_base64(base64.b64encode(b"k" * size).decode())


def test_master_key_accepts_urlsafe_base64_and_rejects_junk_without_echoing_it() -> None:
    raw = bytes([0xFB, 0xFF] * 16)
    assert MasterKey.from_base64(base64.urlsafe_b64encode(raw).decode()) == MasterKey(raw)
    assert MasterKey.from_base64(" " + base64.b64encode(raw).decode() + "\n") == MasterKey(raw)
    with pytest.raises(ConfigurationError) as caught:
        MasterKey.from_base64("not base64 at all!!")
    assert "not base64 at all" not in caught.value.message


def test_keyring_lists_current_first_and_drops_duplicates() -> None:
    keyring = Keyring(NEW, [OLD, NEW, OLD])
    assert keyring.key_ids == (NEW.key_id, OLD.key_id)
    assert keyring.previous == (OLD,)
    assert keyring.find(OLD.key_id) is OLD
