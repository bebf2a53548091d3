"""Base62 encoding helpers shared by key bodies, checksums and ids."""

from __future__ import annotations

import secrets

# Digits, then upper, then lower case: fixed-width encodings sort in numeric order under a
# byte-wise collation, and every character is a "word" character, so a double-click selects a
# whole key in terminals and browsers.
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_INDEX = {char: value for value, char in enumerate(ALPHABET)}


def encode(value: int, width: int) -> str:
    """Encode a non-negative integer as exactly ``width`` base62 characters."""
    if value < 0:
        raise ValueError("base62 encodes non-negative integers only")
    chars = []
    for _ in range(width):
        value, digit = divmod(value, 62)
        chars.append(ALPHABET[digit])
    if value:
        raise ValueError(f"value does not fit in {width} base62 characters")
    return "".join(reversed(chars))


def decode(text: str) -> int:
    """Decode base62 text; raises ``ValueError`` on any character outside the alphabet."""
    value = 0
    for char in text:
        digit = _INDEX.get(char)
        if digit is None:
            raise ValueError("not a base62 character")
        value = value * 62 + digit
    return value


def random_string(length: int) -> str:
    """Return ``length`` characters drawn uniformly from the alphabet by the OS CSPRNG."""
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def is_base62(text: str) -> bool:
    """True when every character of ``text`` is in the alphabet."""
    return all(char in _INDEX for char in text)
