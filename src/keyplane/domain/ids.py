"""Object identifiers: ``<type>_<26 lowercase base32 characters>``.

The 26 characters are a ULID (48-bit millisecond time, 80 random bits) in Crockford's base32,
lower case. Ids therefore sort by creation time under any collation that orders digits before
letters, which makes the id alone a stable pagination cursor.
"""

from __future__ import annotations

import re
import secrets
import time

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
ID_LENGTH = 26
ID_PATTERN = re.compile(r"[a-z]{2,8}_[0-9a-hjkmnp-tv-z]{26}")


def new_id(kind: str, now_ms: int | None = None) -> str:
    """A fresh id of ``kind`` (``key``, ``mk``, ``org``, ``proj``...)."""
    millis = int(time.time() * 1000) if now_ms is None else now_ms
    value = (millis << 80) | secrets.randbits(80)
    chars = []
    for _ in range(ID_LENGTH):
        value, digit = divmod(value, 32)
        chars.append(_CROCKFORD[digit])
    return f"{kind}_{''.join(reversed(chars))}"


def looks_like_id(text: str, kind: str) -> bool:
    """True when ``text`` has the shape of an id of ``kind``; no storage involved."""
    return text.startswith(kind + "_") and ID_PATTERN.fullmatch(text) is not None
