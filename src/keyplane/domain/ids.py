"""Object identifiers: ``<type>_<26 lowercase base32 characters>``.

The 26 characters are a ULID (48-bit millisecond time, 80 random bits) in Crockford's base32,
lower case. Ids therefore sort by creation time under any collation that orders digits before
letters, which makes the id alone a stable pagination cursor.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from collections.abc import Callable

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
#: Every pair of Crockford characters, indexed by the 10 bits they encode.
_PAIRS = [high + low for high in _CROCKFORD for low in _CROCKFORD]
_SHIFTS = tuple(range(120, -1, -10))
ID_LENGTH = 26
ID_PATTERN = re.compile(r"[a-z]{2,8}_[0-9a-hjkmnp-tv-z]{26}")


def new_id(kind: str, now_ms: int | None = None) -> str:
    """A fresh id of ``kind`` (``key``, ``mk``, ``org``, ``proj``...)."""
    return new_ids(kind, 1, now_ms)[0]


#: The last value handed out on the clock (see new_ids), and the lock that guards it.
_last_value = 0
_last_lock = threading.Lock()


def new_ids(kind: str, count: int, now_ms: int | None = None) -> list[str]:
    """``count`` fresh ids that sort in the order given, even within one millisecond.

    On the clock (no ``now_ms``), ids of one process also sort in the order they were made
    across calls: the first id of a millisecond takes fresh random bits, later ones in the same
    millisecond count up from the last (ULID's monotonic mode). Two records made in one
    millisecond then still page in creation order.
    """
    global _last_value
    if now_ms is not None:
        # Leave room below 2**80 so the run of consecutive values never carries into the time.
        first = (now_ms << 80) | secrets.randbits(79)
    else:
        millis = int(time.time() * 1000)
        with _last_lock:
            if millis > _last_value >> 80:
                first = (millis << 80) | secrets.randbits(79)
            else:  # the same millisecond (or a clock that stepped back): count up
                first = _last_value + 1
            _last_value = first + count - 1
    return [_encode(kind, first + offset) for offset in range(count)]


class Sequence:
    """Ids of one kind for a hot path (a request id on every verify), cheaper than
    :func:`new_id` and strictly increasing in the order they are made.

    The first id of each millisecond takes fresh random bits, as :func:`new_id` does; the
    next ones in the same millisecond are the previous value plus one, so they sort in
    creation order (a clock that steps back keeps the last millisecond: never out of order).
    Only the last four characters (20 bits) usually change from one id to the next, so the
    22 before them are encoded once and reused until a carry reaches them.
    """

    __slots__ = ("_head", "_head_bits", "_kind", "_millis", "_now_ns", "_randbits", "_value")

    def __init__(
        self,
        kind: str,
        now_ns: Callable[[], int] = time.time_ns,
        randbits: Callable[[int], int] = secrets.randbits,
    ) -> None:
        self._kind = kind
        self._now_ns = now_ns
        self._randbits = randbits
        self._millis = -1
        self._value = 0
        self._head_bits = -1
        self._head = ""

    def next(self) -> str:
        millis = self._now_ns() // 1_000_000
        if millis > self._millis:
            self._millis = millis
            # As new_ids: room below 2**80, so counting up never carries into the time.
            value = (millis << 80) | self._randbits(79)
        else:
            value = self._value + 1
        self._value = value
        head_bits = value >> 20
        if head_bits != self._head_bits:
            self._head_bits = head_bits
            self._head = _encode(self._kind, value)[:-4]
        return self._head + _PAIRS[(value >> 10) & 1023] + _PAIRS[value & 1023]


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
