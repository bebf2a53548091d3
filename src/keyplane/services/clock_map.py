"""A bounded map with CLOCK eviction and a deadline per entry, laid out for millions of entries.

Why not an ``OrderedDict`` LRU: each of its entries carries a linked-list node (about 100
bytes) and every hit pays a ``move_to_end``. CLOCK (second chance) approximates LRU with one
bit per entry: a hit only sets the bit; when the map is full, a hand sweeps the slots in
order, clearing set bits, and evicts the first entry whose bit was already clear (or whose
deadline has passed). Every entry is seen at most twice per eviction sweep, so a put costs
O(1) amortised.

Entries live in parallel arrays indexed by a slot number (keys and values in lists, deadlines
in an ``array('d')``, reference bits in a ``bytearray``), so an entry costs a dict slot, its
slot number and about 25 bytes of arrays: no per-entry object of the map's own.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

#: The deadline of an entry that never expires.
FOREVER = float("inf")


class ClockMap(Generic[K, V]):
    """At most ``capacity`` entries; ``on_evict(key, value)`` hears of each one the sweep
    pushes out (not of ``pop`` or ``clear``, which the caller asked for)."""

    def __init__(self, capacity: int, on_evict: Callable[[K, V], None] | None = None) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._on_evict = on_evict
        self._slots: dict[K, int] = {}
        self._keys: list[K | None] = []
        self._values: list[V | None] = []
        self._deadlines = array("d")
        self._referenced = bytearray()
        #: Slots emptied by ``pop``, reused before the sweep evicts anything.
        self._free: list[int] = []
        self._hand = 0

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, key: object) -> bool:
        return key in self._slots

    def get(self, key: K, now: float = 0.0) -> V | None:
        """The value of ``key`` if present and its deadline is after ``now``, else None."""
        slot = self._slots.get(key)
        if slot is None or self._deadlines[slot] <= now:
            return None
        self._referenced[slot] = 1
        return self._values[slot]

    def put(self, key: K, value: V, deadline: float = FOREVER, now: float = 0.0) -> None:
        """Set ``key``; when full, first evict one entry (expired ones before unused ones)."""
        slot = self._slots.get(key)
        if slot is None:
            slot = self._free_slot(now)
            self._slots[key] = slot
            self._keys[slot] = key
        self._values[slot] = value
        self._deadlines[slot] = deadline
        # A new entry starts unreferenced: one that is never read again goes first.
        self._referenced[slot] = 0

    def pop(self, key: K) -> V | None:
        """Remove ``key``; its value, or None when absent."""
        slot = self._slots.pop(key, None)
        if slot is None:
            return None
        value = self._values[slot]
        self._keys[slot] = None
        self._values[slot] = None
        self._free.append(slot)
        return value

    def clear(self) -> None:
        self._slots.clear()
        self._keys.clear()
        self._values.clear()
        self._deadlines = array("d")
        self._referenced = bytearray()
        self._free.clear()
        self._hand = 0

    def items(self) -> list[tuple[K, V]]:
        """A snapshot of the live entries (for tests and debugging; O(n))."""
        return [(key, self._values[slot]) for key, slot in self._slots.items()]  # type: ignore[misc]

    def _free_slot(self, now: float) -> int:
        if self._free:
            return self._free.pop()
        if len(self._keys) < self.capacity:
            self._keys.append(None)
            self._values.append(None)
            self._deadlines.append(FOREVER)
            self._referenced.append(0)
            return len(self._keys) - 1
        # Full and no free slot: every slot holds an entry. Sweep from the hand.
        referenced, deadlines, capacity = self._referenced, self._deadlines, self.capacity
        hand = self._hand
        while referenced[hand] and deadlines[hand] > now:
            referenced[hand] = 0
            hand += 1
            if hand == capacity:
                hand = 0
        victim = self._keys[hand]
        value = self._values[hand]
        self._hand = hand + 1 if hand + 1 < capacity else 0
        del self._slots[victim]  # type: ignore[arg-type]
        self._keys[hand] = None
        self._values[hand] = None
        if self._on_evict is not None:
            self._on_evict(victim, value)  # type: ignore[arg-type]
        return hand
