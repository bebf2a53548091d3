"""Input rules shared by every adapter (API, CLI, library): pure functions raising ValueError.

Text is refused when it holds control characters or lone surrogates: they break terminals and
log lines, and PostgreSQL rejects NUL outright, which would otherwise surface as a 500.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from typing import Any

MAX_METADATA_BYTES = 8 * 1024
MAX_METADATA_DEPTH = 8
MAX_TAGS = 50
MAX_TAG_LENGTH = 100
MAX_SCOPES = 100
MAX_SAFE_INTEGER = 2**53 - 1
METADATA_PATH_SEGMENT = re.compile(r"[A-Za-z0-9_\-]{1,64}")


def check_text(value: str, *, multiline: bool = False) -> str:
    """Return ``value`` if it is clean text, else raise ValueError."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text contains invalid unicode (lone surrogate)") from None
    for char in value:
        if unicodedata.category(char) == "Cc" and not (multiline and char in "\t\n\r"):
            raise ValueError("text contains control characters")
    return value


def check_tags(tags: list[str]) -> list[str]:
    """Validate tags and drop duplicates, keeping the first occurrence's position."""
    if len(tags) > MAX_TAGS:
        raise ValueError(f"at most {MAX_TAGS} tags")
    seen: dict[str, None] = {}
    for tag in tags:
        if not tag or len(tag) > MAX_TAG_LENGTH or tag != tag.strip():
            raise ValueError(f"tags are 1-{MAX_TAG_LENGTH} characters without outer spaces")
        check_text(tag)
        seen.setdefault(tag, None)
    return list(seen)


def check_metadata(value: dict[str, Any]) -> dict[str, Any]:
    """A JSON object of bounded size and depth holding only clean text and safe numbers."""
    _check_json(value, depth=0)
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    if size > MAX_METADATA_BYTES:
        raise ValueError(f"metadata is {size} bytes; the limit is {MAX_METADATA_BYTES}")
    return value


def _check_json(value: Any, depth: int) -> None:
    if depth > MAX_METADATA_DEPTH:
        raise ValueError(f"metadata nests deeper than {MAX_METADATA_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError("metadata keys must be strings")
            check_text(key)
            _check_json(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_json(item, depth + 1)
    elif isinstance(value, str):
        check_text(value, multiline=True)
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise ValueError("metadata integers must fit in 53 bits")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("metadata numbers must be finite")
    else:
        raise ValueError("metadata must be JSON")


def parse_metadata_path(dotted: str) -> tuple[str, ...]:
    """``billing.tier`` -> ``("billing", "tier")``; segments are identifier-like."""
    parts = tuple(dotted.split("."))
    if len(parts) > MAX_METADATA_DEPTH or not all(
        METADATA_PATH_SEGMENT.fullmatch(part) for part in parts
    ):
        raise ValueError(f"invalid metadata path {dotted!r}")
    return parts
