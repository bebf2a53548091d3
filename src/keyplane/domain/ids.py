"""Object identifiers: ``<type>_<26 lowercase base32 characters>``.

The 26 characters are a ULID (48-bit millisecond time, 80 random bits) in Crockford's base32,
lower case. Ids therefore sort by creation time under any collation that orders digits before
letters, which makes the id alone a stable pagination cursor.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
#: Every pair of Crockford characters, indexed by the 10 bits they encode.
_PAIRS = [high + low for high in _CROCKFORD for low in _CROCKFORD]
_SHIFTS = tuple(range(120, -1, -10))
ID_LENGTH = 26
ID_PATTERN = re.compile(r"[a-z]{2,8}_[0-9a-hjkmnp-tv-z]{26}")


def new_id(kind: str, now_ms: int | None = None) -> str:
    """A fresh id of ``kind`` (``key``, ``mk``, ``org``, ``proj``...)."""
    return new_ids(kind, 1, now_ms)[0]


def new_ids(kind: str, count: int, now_ms: int | None = None) -> list[str]:
    """``count`` fresh ids that sort in the order given, even within one millisecond."""
    millis = int(time.time() * 1000) if now_ms is None else now_ms
    # Leave room below 2**80 so the run of consecutive values never carries into the time.
    first = (millis << 80) | secrets.randbits(79)
    return [_encode(kind, first + offset) for offset in range(count)]


def derived_id(kind: str, now_ms: int, seed: bytes) -> str:
    """The id of ``kind`` at ``now_ms`` whose random part is derived from ``seed``: the same
    seed always gives the same id (for events that must be recorded once, by whoever first
    notices them)."""
    bits = int.from_bytes(hashlib.sha256(seed).digest()[:10], "big") >> 1
    return _encode(kind, (now_ms << 80) | bits)


def _encode(kind: str, value: int) -> str:
    # The 130 low bits, 10 at a time, most significant first: 13 lookups of two characters
    # (base64's base32 is written in Python, and took twice as long; an id is made on every
    # verify).
    return kind + "_" + "".join([_PAIRS[(value >> shift) & 1023] for shift in _SHIFTS])


def looks_like_id(text: str, kind: str) -> bool:
    """True when ``text`` has the shape of an id of ``kind``; no storage involved."""
    return text.startswith(kind + "_") and ID_PATTERN.fullmatch(text) is not None
