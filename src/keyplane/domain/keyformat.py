"""The API key format: ``<prefix>_<kind>_<body><checksum>``.

* ``prefix`` is ``kp`` or a project's own prefix (``[a-z][a-z0-9_-]{0,15}``);
* ``kind`` is ``live`` or ``test`` for customer API keys and ``mgmt`` for management keys;
* ``body`` is 30 base62 characters from the OS CSPRNG (~178 bits, above the 160-bit floor);
* ``checksum`` is the CRC32 of everything before it, as 6 base62 characters.

The checksum lets ``verify`` reject typos and truncations without touching storage, and lets
secret scanners tell a real key from a look-alike. CRC32 detects every error burst of up to 32
bits, so every single-character substitution and every swap of two adjacent characters inside
the checksummed part is caught.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from enum import StrEnum

from keyplane.domain import base62

DEFAULT_PREFIX = "kp"
BODY_LENGTH = 30
CHECKSUM_LENGTH = 6
PREFIX_PATTERN = re.compile(r"[a-z][a-z0-9_-]{0,15}")
# Longest possible key: 16-char prefix + "_mgmt_" + body + checksum.
MAX_KEY_LENGTH = 16 + 6 + BODY_LENGTH + CHECKSUM_LENGTH

#: A regular expression that finds keys in text (logs, repositories, paste sites).
SCAN_PATTERN = re.compile(
    r"(?<![A-Za-z0-9_-])[a-z][a-z0-9_-]{0,15}_(?:live|test|mgmt)_"
    rf"[0-9A-Za-z]{{{BODY_LENGTH + CHECKSUM_LENGTH}}}(?![A-Za-z0-9])"
)


class KeyKind(StrEnum):
    """What a key is for; the segment after the prefix."""

    LIVE = "live"
    TEST = "test"
    MANAGEMENT = "mgmt"

    @property
    def is_api_key(self) -> bool:
        return self is not KeyKind.MANAGEMENT


@dataclass(frozen=True, slots=True)
class ParsedKey:
    """A key whose shape and checksum are valid."""

    prefix: str
    kind: KeyKind
    body: str
    checksum: str

    @property
    def text(self) -> str:
        return f"{self.prefix}_{self.kind.value}_{self.body}{self.checksum}"

    @property
    def start(self) -> str:
        """Display form of the beginning: prefix, kind and the first 4 body characters."""
        return f"{self.prefix}_{self.kind.value}_{self.body[:4]}"

    @property
    def end(self) -> str:
        """Display form of the end: the last 4 characters."""
        return self.checksum[-4:]


def checksum(text: str) -> str:
    """The 6-character base62 CRC32 of ``text``."""
    # Three lookups of two characters instead of six divisions (it runs on every verify);
    # 62**6 > 2**32, so the top pair always fits.
    value = zlib.crc32(text.encode("utf-8"))
    return (
        _PAIRS[value // _PAIR_SPAN**2]
        + _PAIRS[value // _PAIR_SPAN % _PAIR_SPAN]
        + _PAIRS[value % _PAIR_SPAN]
    )


def is_valid_prefix(prefix: str) -> bool:
    return PREFIX_PATTERN.fullmatch(prefix) is not None


def generate(kind: KeyKind, prefix: str = DEFAULT_PREFIX) -> ParsedKey:
    """Create a new random key of ``kind`` under ``prefix``."""
    return compose(kind, prefix, base62.random_string(BODY_LENGTH))


def compose(kind: KeyKind, prefix: str, body: str) -> ParsedKey:
    """The key with this prefix, kind and body, its checksum computed."""
    if not is_valid_prefix(prefix):
        raise ValueError(f"invalid key prefix {prefix!r}")
    if len(body) != BODY_LENGTH or not base62.is_base62(body):
        raise ValueError("a key body is 30 base62 characters")
    return ParsedKey(prefix, kind, body, checksum(f"{prefix}_{kind.value}_{body}"))


def parse(text: str) -> ParsedKey | None:
    """Parse and check a presented key; ``None`` when its shape or checksum is wrong.

    Runs in time bounded by ``MAX_KEY_LENGTH`` whatever it is given: one regular expression
    with no nested repetition (it runs on every verify), then the checksum.
    """
    if len(text) > MAX_KEY_LENGTH:
        return None
    found = _SHAPE.fullmatch(text)
    if found is None:
        return None
    prefix, kind_text, body, check = found.groups()
    if checksum(text[:-CHECKSUM_LENGTH]) != check:
        return None
    return ParsedKey(prefix, _KINDS[kind_text], body, check)


def kind_of(text: str) -> KeyKind | None:
    """``parse(text).kind``, or ``None`` where ``parse`` gives ``None``.

    Verify needs nothing more of a presented key: the same checks as ``parse``, without
    building the parsed key (a third of ``parse``'s cost, on every verify).
    """
    if len(text) > MAX_KEY_LENGTH:
        return None
    found = _SHAPE.fullmatch(text)
    if found is None or checksum(text[:-CHECKSUM_LENGTH]) != text[-CHECKSUM_LENGTH:]:
        return None
    return _KINDS[found[2]]


# The shape parse checks: a prefix (PREFIX_PATTERN), the kind between the last two "_", then
# the body and checksum, base62 (no "_", so the kind's underscores are always the last two).
_SHAPE = re.compile(
    rf"([a-z][a-z0-9_-]{{0,15}})_(live|test|mgmt)_([0-9A-Za-z]{{{BODY_LENGTH}}})"
    rf"([0-9A-Za-z]{{{CHECKSUM_LENGTH}}})"
)
_KINDS = {kind.value: kind for kind in KeyKind}
#: Every pair of base62 characters, indexed by the value they encode (0 to 62**2 - 1).
_PAIRS = [high + low for high in base62.ALPHABET for low in base62.ALPHABET]
_PAIR_SPAN = len(base62.ALPHABET) ** 2
