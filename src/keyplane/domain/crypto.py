"""Keyed hashing of key secrets.

A key's secret is stored only as HMAC-SHA256(server secret, key). Keys carry over 160 bits of
randomness, so a slow password hash would add ~100 ms per verify and no security; the server
secret (the "pepper") means a stolen database alone cannot be used to test guessed keys.
"""

from __future__ import annotations

import hashlib
import hmac


def key_digest(server_secret: bytes, key: str) -> str:
    """Hex HMAC-SHA256 of ``key`` under ``server_secret``: the key's ``hash``."""
    # hmac.digest: one C call, no HMAC object (this runs on every verify).
    return hmac.digest(server_secret, key.encode("utf-8"), "sha256").hex()


def digests_equal(left: str, right: str) -> bool:
    """Constant-time comparison of two hex digests."""
    return hmac.compare_digest(left.encode("ascii"), right.encode("ascii"))


def idempotency_digest(idempotency_key: str) -> str:
    """What is stored of an ``Idempotency-Key``: its SHA-256, hex."""
    return hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()
