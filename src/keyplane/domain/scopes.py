"""Scopes: colon-separated segments with ``*`` wildcards.

``read:*`` covers ``read:invoices`` and ``read:invoices:pdf``; ``*`` alone covers everything;
``*:read`` covers ``keys:read`` but not ``keys:write``. A ``*`` in the last position matches
one or more remaining segments, anywhere else exactly one.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

SCOPE_PATTERN = re.compile(r"(?:\*|[a-z0-9][a-z0-9_.\-]*)(?::(?:\*|[a-z0-9][a-z0-9_.\-]*))*")
MAX_SCOPE_LENGTH = 128


def is_valid_scope(scope: str) -> bool:
    return len(scope) <= MAX_SCOPE_LENGTH and SCOPE_PATTERN.fullmatch(scope) is not None


def covers(held: str, wanted: str) -> bool:
    """True when the held scope pattern grants everything ``wanted`` names.

    ``wanted`` may itself be a pattern (when a management key creates another one): a ``*``
    in ``wanted`` is only covered by a ``*`` in the same place of ``held``.
    """
    held_parts = held.split(":")
    wanted_parts = wanted.split(":")
    for index, part in enumerate(held_parts):
        last = index == len(held_parts) - 1
        if index >= len(wanted_parts):
            return False
        if part == "*":
            if last:
                return True
            continue
        if part != wanted_parts[index]:
            return False
    return len(held_parts) == len(wanted_parts)


def covered_by_any(held: Iterable[str], wanted: str) -> bool:
    if isinstance(held, tuple):
        return _tuple_covers(held, wanted)
    return any(covers(pattern, wanted) for pattern in held)


@functools.lru_cache(maxsize=4096)
def _tuple_covers(held: tuple[str, ...], wanted: str) -> bool:
    # Remembered: every verify checks its caller's (few, fixed) scopes for ``verify``, and the
    # answer for one tuple and one wanted scope never changes. Bounded, whatever callers ask.
    return any(covers(pattern, wanted) for pattern in held)


def missing(held: Iterable[str], wanted: Iterable[str]) -> list[str]:
    """The scopes of ``wanted`` that no scope of ``held`` covers, in order."""
    held_list = list(held)
    return [scope for scope in wanted if not covered_by_any(held_list, scope)]
