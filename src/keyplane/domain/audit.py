"""The audit log's entries and their hash chain (pure: no I/O).

Each organization's entries form one chain: entry ``n`` carries ``prev_hash``, the hash of entry
``n - 1`` (or of the last pruned entry, kept in a checkpoint, or :data:`GENESIS` for the first),
and ``hash``, a keyed SHA-256 (HMAC) over its canonical encoding (every field but ``hash``,
``prev_hash`` included). Changing, removing, inserting or reordering an entry therefore breaks
the chain at that entry, and :class:`ChainVerifier` names the first broken link.

The hash is keyed with a key derived from the server secret (:func:`chain_key`): someone who can
write to the database but does not hold the secret cannot recompute a consistent chain after
editing it. Anyone holding the secret can verify.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

#: ``prev_hash`` of an organization's first entry.
GENESIS = "0" * 64
#: Version of the canonical encoding, hashed with every entry (a new encoding gets a new one).
ENCODING_VERSION = 1

#: Why a link is broken.
ALTERED = "altered"
REMOVED = "removed"
INSERTED = "inserted"
REORDERED = "reordered"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One entry of an organization's chain, as stored."""

    org_id: str
    seq: int
    id: str
    occurred_at: datetime
    project_id: str | None
    actor_type: str
    actor_id: str | None
    actor_name: str | None
    actor_ip: str | None
    actor_user_agent: str | None
    request_id: str | None
    action: str
    target_type: str
    target_id: str | None
    outcome: str
    details: Mapping[str, Any]
    count: int
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where the remaining chain starts after retention pruned its beginning."""

    seq: int
    hash: str


@dataclass(frozen=True, slots=True)
class BrokenLink:
    """The first entry at which the chain does not hold, and why.

    ``id`` is None when the entry is missing (the tail was cut: the head names a later seq).
    """

    seq: int
    id: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class Verification:
    """What a chain verification found."""

    ok: bool
    checked: int
    first_broken: BrokenLink | None
    checkpoint: Checkpoint | None


def chain_key(server_secret: bytes) -> bytes:
    """The audit chain's HMAC key, derived from the server secret (never the secret itself)."""
    return hmac.new(server_secret, b"keyplane audit chain v1", hashlib.sha256).digest()


def normal(value: Any) -> Any:
    """``value`` in the one JSON form that survives a round trip through SQLite's JSON text and
    PostgreSQL's JSONB unchanged: integral floats as ints, tuples as lists, NUL characters
    (which JSONB refuses) replaced, non-finite floats as strings."""
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return int(value) if value.is_integer() else value
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, Mapping):
        return {normal(str(k)): normal(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [normal(v) for v in value]
    return normal(str(value))


def timestamp(at: datetime) -> str:
    """The canonical text of an entry's time: UTC, microseconds, ``Z``."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(entry: AuditEntry) -> bytes:
    """The bytes an entry's hash covers: every field but ``hash``, in a fixed order, as
    compact JSON with sorted keys (so the same content always gives the same bytes)."""
    fields = [
        ENCODING_VERSION,
        entry.org_id,
        entry.seq,
        entry.id,
        timestamp(entry.occurred_at),
        entry.project_id,
        entry.actor_type,
        entry.actor_id,
        entry.actor_name,
        entry.actor_ip,
        entry.actor_user_agent,
        entry.request_id,
        entry.action,
        entry.target_type,
        entry.target_id,
        entry.outcome,
        normal(entry.details),
        entry.count,
        entry.prev_hash,
    ]
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def entry_hash(key: bytes, entry: AuditEntry) -> str:
    """The hash ``entry`` must carry: HMAC-SHA256 under ``key`` over :func:`canonical`."""
    return hmac.new(key, canonical(entry), hashlib.sha256).hexdigest()


class ChainVerifier:
    """Checks one organization's entries, fed in ``seq`` order, link by link.

    Keeps one entry of lookahead (to tell an inserted entry from a reordered one) and nothing
    else: any number of entries verifies in constant memory.
    """

    def __init__(
        self,
        key: bytes,
        checkpoint: Checkpoint | None = None,
        head: tuple[int, str] | None = None,
    ) -> None:
        """``head`` is the chain's head as stored (last seq and hash), read before the entries:
        entries past it that do not verify were inserted at the end."""
        self._key = key
        self._checkpoint = checkpoint
        self._head = head
        self._expected_seq = 1 if checkpoint is None else checkpoint.seq + 1
        self._expected_prev = GENESIS if checkpoint is None else checkpoint.hash
        self._pending: AuditEntry | None = None
        self.checked = 0
        self.first_broken: BrokenLink | None = None

    def feed(self, entry: AuditEntry) -> bool:
        """Take the next entry; False once a broken link was found (stop feeding)."""
        if self.first_broken is not None:
            return False
        if self._pending is not None:
            self._check(self._pending, entry)
        self._pending = entry
        return self.first_broken is None

    def finish(self) -> Verification:
        """The result, once every entry was fed."""
        if self.first_broken is None and self._pending is not None:
            self._check(self._pending, None)
        if self.first_broken is None and self._head is not None:
            seq, hash_ = self._head
            last = self._expected_seq - 1
            if seq > last:
                self.first_broken = BrokenLink(last + 1, None, REMOVED)
            elif seq == last and hash_ != self._expected_prev and self.checked:
                self.first_broken = BrokenLink(seq, None, ALTERED)
        return Verification(
            self.first_broken is None, self.checked, self.first_broken, self._checkpoint
        )

    def _check(self, entry: AuditEntry, following: AuditEntry | None) -> None:
        reason = self._fault(entry, following)
        if reason is not None:
            self.first_broken = BrokenLink(entry.seq, entry.id, reason)
            return
        self.checked += 1
        self._expected_seq = entry.seq + 1
        self._expected_prev = entry.hash

    def _fault(self, entry: AuditEntry, following: AuditEntry | None) -> str | None:
        if entry.seq < self._expected_seq:
            return REORDERED  # a duplicate or a step back in seq
        if entry.seq > self._expected_seq:
            return REMOVED  # a gap
        follows_expected = following is not None and following.prev_hash == self._expected_prev
        if entry.prev_hash != self._expected_prev:
            if following is not None and entry.prev_hash == following.hash:
                return REORDERED  # this entry belongs after the next one
            if follows_expected:
                return INSERTED  # the next entry links past this one
            return REMOVED  # it links to an entry that is not here
        if not hmac.compare_digest(entry_hash(self._key, entry), entry.hash):
            if self._head is not None and entry.seq > self._head[0]:
                return INSERTED  # past the head, and not written by Keyplane
            if follows_expected and following is not None and following.prev_hash != entry.hash:
                return INSERTED
            return ALTERED
        return None


def verify_chain(
    key: bytes,
    entries: Iterable[AuditEntry],
    *,
    checkpoint: Checkpoint | None = None,
    head: tuple[int, str] | None = None,
) -> Verification:
    """Verify ``entries`` (one organization's, in ``seq`` order) from ``checkpoint``."""
    verifier = ChainVerifier(key, checkpoint, head)
    for entry in entries:
        if not verifier.feed(entry):
            break
    return verifier.finish()
