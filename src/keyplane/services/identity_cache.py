"""Values made from a long-lived object, found again by that object's identity.

The verify path keeps a few such things: the window asks of a policy's windows, the budget
asks of a ``costs`` block, the JSON of a cached key's own fields and of a policy's directives.
Each is worked out from an object the key cache holds, is the same every time for that object
(and a few small values with it), and is cheaper to find than to make again. Hashing the object
itself would cost more than making the value; its ``id`` costs nothing, and an entry keeps the
object alive, so its id cannot be reused by another object while the entry is there.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

Owner = TypeVar("Owner")
V = TypeVar("V")


class IdentityCache(Generic[Owner, V]):
    """Values by (owner's identity, ``parts``); bounded: emptied when it holds
    ``max_entries`` (a caller that sends ever new ``parts`` costs a rebuild, never memory)."""

    __slots__ = ("_entries", "max_entries")

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._entries: dict[tuple[int, Hashable], tuple[Owner, V]] = {}

    def get(self, owner: Owner, parts: Hashable = ()) -> V | None:
        """The value put for this very ``owner`` and ``parts``, or None."""
        found = self._entries.get((id(owner), parts))
        return found[1] if found is not None and found[0] is owner else None

    def put(self, owner: Owner, parts: Hashable, value: V) -> V:
        """Keep ``value`` for ``owner`` and ``parts`` (replacing any); return it."""
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[(id(owner), parts)] = (owner, value)
        return value
