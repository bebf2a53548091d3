"""Keyed hashing of key secrets.

A key's secret is stored only as HMAC-SHA256(server secret, key). Keys carry over 160 bits of
randomness, so a slow password hash would add ~100 ms per verify and no security; the server
secret (the "pepper") means a stolen database alone cannot be used to test guessed keys.
"""

from __future__ import annotations

import functools
import hashlib
import hmac


def key_digest(server_secret: bytes, key: str) -> str:
    """Hex HMAC-SHA256 of ``key`` under ``server_secret``: the key's ``hash``."""
    return _keyed(server_secret).hexdigest(key.encode("utf-8"))


_BLOCK = hashlib.sha256().block_size
_INNER_PAD = bytes(byte ^ 0x36 for byte in range(256))
_OUTER_PAD = bytes(byte ^ 0x5C for byte in range(256))


class KeyedSha256:
    """HMAC-SHA256 under one key, with the key's two padded blocks hashed once (RFC 2104).

    This runs twice on every verify (the caller's management key, then the API key).
    ``hmac.digest`` is one C call, but OpenSSL looks its algorithm up again on every call,
    which costs more than the hashing: copying two hash states made up front costs less than
    half of it (``tests/domain/test_crypto.py`` holds the two equal on random input).
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        block = key.ljust(_BLOCK, b"\0")
        self._inner = hashlib.sha256(block.translate(_INNER_PAD))
        self._outer = hashlib.sha256(block.translate(_OUTER_PAD))

    def hexdigest(self, message: bytes) -> str:
        return self._outer_hash(message).hexdigest()

    def digest(self, message: bytes) -> bytes:
        """The raw 32 bytes ``hexdigest`` writes in hex."""
        return self._outer_hash(message).digest()

    def _outer_hash(self, message: bytes) -> hashlib._Hash:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer


@functools.lru_cache(maxsize=16)
def _keyed(server_secret: bytes) -> KeyedSha256:
    """One per server secret (a process has one or two: the current and the previous)."""
    return KeyedSha256(server_secret)


def digests_equal(left: str, right: str) -> bool:
    """Constant-time comparison of two hex digests."""
    return hmac.compare_digest(left.encode("ascii"), right.encode("ascii"))


def idempotency_digest(idempotency_key: str) -> str:
    """What is stored of an ``Idempotency-Key``: its SHA-256, hex."""
    return hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()
