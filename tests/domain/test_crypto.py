"""Keyed hashing: the precomputed HMAC equals the standard library's on any key and message."""

from __future__ import annotations

import hmac

from hypothesis import given
from hypothesis import strategies as st

from keyplane.domain.crypto import KeyedSha256, key_digest


@given(key=st.binary(max_size=200), message=st.binary(max_size=300))
def test_keyed_sha256_is_hmac_sha256(key: bytes, message: bytes) -> None:
    # Keys shorter than, equal to and longer than SHA-256's 64-byte block (hashed first).
    keyed = KeyedSha256(key)
    expected = hmac.digest(key, message, "sha256").hex()
    assert keyed.hexdigest(message) == expected
    assert keyed.hexdigest(message) == expected  # the kept states are copied, never used up
    assert keyed.digest(message).hex() == expected


@given(secret=st.binary(min_size=1, max_size=100), key=st.text(max_size=200))
def test_key_digest_is_hmac_of_the_keys_utf8(secret: bytes, key: str) -> None:
    encoded = key.encode("utf-8", "surrogatepass")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in key):
        return  # not encodable as UTF-8: no key can be (the API refuses it first)
    assert key_digest(secret, key) == hmac.digest(secret, encoded, "sha256").hex()
