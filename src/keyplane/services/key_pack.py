"""Cached keys in a compact form: about 500 bytes a key, the cache's bookkeeping included,
instead of about 2,600 (bench/cache_memory.py).

A :class:`~keyplane.services.directory.KeyEntry` (record, match, compiled policy) costs about
2.6 KB; a cache of a million of them would not fit a small server. What varies from key to key
is little: id, name, start and end of the secret, three timestamps. The rest (tenancy, status,
scopes, tags, plan, policy documents and the compiled policy) is shared by every key of the
same shape, so it is interned in a :class:`ShapeBook` and each cached key is one tuple
(:data:`PackedKey`) of the shape, the id, one string and one ``bytes``. Keys that carry
something rarer (metadata, owner, expiry, a rotated-out secret...) keep it in one more tuple.

:func:`unpack` rebuilds the full entry; the directory keeps the most recently used ones
unpacked (``KEYPLANE_CACHE_HOT_ENTRIES``) so that a busy key pays it once.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from keyplane.domain.keys import Environment, KeyRecord, KeyStatus
from keyplane.domain.policy import Policy
from keyplane.services.clock_map import ClockMap
from keyplane.store.base import SecretMatch

#: (shape, id, start + end + name, times and lengths, rarer fields or None).
PackedKey = tuple["KeyShape", str, str, bytes, "tuple[Any, ...] | None"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)
#: created_at, updated_at, last_used_at in µs since the epoch; len(start), len(end).
_TIMES = struct.Struct("<qqqHH")
_NEVER = -(2**63)
_EMPTY: dict[str, Any] = {}


@dataclass(frozen=True, slots=True, eq=False)
class KeyShape:
    """What many keys share; one object per distinct combination (see :class:`ShapeBook`)."""

    org_id: str
    project_id: str
    environment: Environment
    status: KeyStatus
    scopes: tuple[str, ...]
    tags: tuple[str, ...]
    plan_id: str | None
    plan_name: str | None
    created_by: str | None
    key_policy: dict[str, Any]
    plan_policy: dict[str, Any] | None
    policy: Policy
    windows: tuple[Any, ...]


class ShapeBook:
    """Interns shapes and compiled policies: keys with the same plan and policy share one
    compiled :class:`Policy` (compiled once, not once per key) and one shape.

    Bounded (CLOCK): a shape pushed out stays alive in the keys that hold it; the next key
    of that shape only builds a new one. The shared policy dicts must not be mutated (nothing
    mutates a cached record's documents; they are only read and merged into new ones).
    """

    def __init__(
        self,
        compile_policy: Callable[[dict[str, Any] | None, dict[str, Any]], tuple[Policy, Any]],
        capacity: int = 10_000,
    ) -> None:
        self._compile = compile_policy
        self._shapes: ClockMap[tuple[Any, ...], KeyShape] = ClockMap(capacity)
        self._policies: ClockMap[str, tuple[Policy, Any, dict[str, Any], Any]] = ClockMap(capacity)
        self._strings: ClockMap[str, str] = ClockMap(capacity)

    def intern(self, text: str) -> str:
        """One string object for equal ids (org, project, plan...) across keys."""
        known = self._strings.get(text)
        if known is None:
            self._strings.put(text, text)
            return text
        return known

    def shape(self, match: SecretMatch) -> KeyShape:
        record = match.record
        plan_policy = match.plan_policy
        policy_key = _canonical(plan_policy) + "\n" + _canonical(record.policy)
        compiled = self._policies.get(policy_key)
        if compiled is None:
            policy, windows = self._compile(plan_policy, record.policy)
            key_policy = record.policy if record.policy else _EMPTY
            compiled = (policy, tuple(windows), key_policy, plan_policy)
            self._policies.put(policy_key, compiled)
        intern = self.intern
        key = (
            record.org_id,
            record.project_id,
            record.environment,
            record.status,
            record.scopes,
            record.tags,
            record.plan_id,
            match.plan_name,
            record.created_by,
            policy_key,
        )
        shape = self._shapes.get(key)
        if shape is None:
            shape = KeyShape(
                intern(record.org_id),
                intern(record.project_id),
                record.environment,
                record.status,
                tuple(intern(scope) for scope in record.scopes),
                tuple(intern(tag) for tag in record.tags),
                None if record.plan_id is None else intern(record.plan_id),
                None if match.plan_name is None else intern(match.plan_name),
                None if record.created_by is None else intern(record.created_by),
                compiled[2],
                compiled[3],
                compiled[0],
                compiled[1],
            )
            self._shapes.put(key, shape)
        return shape


def pack(
    match: SecretMatch, shape: KeyShape, signing_secret: str | None, given_hash: str | None
) -> PackedKey:
    """The compact form of ``match``; ``given_hash`` is the hash the cache is keyed by (not
    stored again when it is the record's own)."""
    record = match.record
    times: tuple[datetime | None, ...] = (record.created_at, record.updated_at, record.last_used_at)
    packable = all(when is None or when.tzinfo is UTC for when in times) and (
        record.created_at is not None and record.updated_at is not None
    )
    rare = (
        record.label,
        record.description,
        record.owner,
        record.metadata if record.metadata else None,
        record.expires_at,
        record.disabled_reason,
        record.auto_enable_at,
        record.revoked_reason,
        record.revoked_at,
        match.valid_until,
        match.sealed_signing_secret,
        signing_secret,
        None if record.hash == given_hash else record.hash,
        None if packable else times,
        None if match.secret_hash == given_hash else match.secret_hash,
    )
    rest = None if all(value is None for value in rare) else rare
    encoded = (
        _TIMES.pack(
            _micros(record.created_at),
            _micros(record.updated_at),
            _NEVER if record.last_used_at is None else _micros(record.last_used_at),
            len(record.start),
            len(record.end),
        )
        if packable
        else _TIMES.pack(0, 0, 0, len(record.start), len(record.end))
    )
    return (shape, record.id, record.start + record.end + record.name, encoded, rest)


def unpack(packed: PackedKey, given_hash: str | None) -> tuple[SecretMatch, KeyShape, str | None]:
    """The match ``packed`` was made from (equal to it), its shape, its signing secret."""
    shape, key_id, text, encoded, rest = packed
    created, updated, last_used, start_length, end_length = _TIMES.unpack(encoded)
    middle = start_length + end_length
    if rest is None:
        rest = _NO_RARE
    times = rest[13]
    if times is None:
        times = (
            _EPOCH + created * _MICRO,
            _EPOCH + updated * _MICRO,
            None if last_used == _NEVER else _EPOCH + last_used * _MICRO,
        )
    metadata = rest[3]
    # Positional, in field order (KeyRecord and SecretMatch have fast_init's __init__).
    record = KeyRecord(
        key_id,
        shape.org_id,
        shape.project_id,
        # None only by id, where pack kept the record's own hash in rest[12].
        rest[12] if rest[12] is not None else given_hash,  # type: ignore[arg-type]
        text[:start_length],
        text[start_length:middle],
        text[middle:],
        shape.environment,
        times[0],
        times[1],
        shape.status,
        rest[0],
        rest[1],
        rest[2],
        shape.tags,
        {} if metadata is None else metadata,
        shape.scopes,
        rest[4],
        rest[5],
        rest[6],
        rest[7],
        rest[8],
        times[2],
        shape.plan_id,
        shape.key_policy,
        shape.created_by,
    )
    match = SecretMatch(
        record,
        rest[9],
        shape.plan_name,
        shape.plan_policy,
        rest[10],
        rest[14] if rest[14] is not None else (given_hash or ""),
    )
    return match, shape, rest[11]


_NO_RARE: tuple[Any, ...] = (None,) * 15


def _canonical(document: dict[str, Any] | None) -> str:
    # Equal text must mean an equal document: anything JSON cannot say is written with its
    # type, so Decimal("1") and "1" never share a compiled policy.
    return "" if document is None else json.dumps(document, sort_keys=True, default=_typed)


def _typed(value: object) -> str:
    return f"{type(value).__qualname__}:{value!r}"


def _micros(when: datetime) -> int:
    return (when - _EPOCH) // _MICRO
