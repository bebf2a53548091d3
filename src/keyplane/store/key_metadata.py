"""The metadata index: one row per scalar metadata value of a key, so a metadata filter is an
indexed lookup rather than a JSON scan of every key of the organization.

Rows are written in the same transaction as the key (create, update, rotate), so the index is
never behind its key. Values are stored as a SHA-256 digest of their text form: metadata
strings may be up to 8 KiB, past what a PostgreSQL b-tree entry holds, and a digest keeps
every entry the same small size.

What a filter ``metadata.a.b=value`` matches (the same on every database): the value at
path ``a.b`` is a string equal to ``value``, a number whose JSON text is ``value``, or a
boolean written ``true`` / ``false``. ``null``, objects and lists never match; a path only
reaches into objects, and only through keys that are valid path segments.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, exists, func, insert, intersect, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ColumnElement, FromClause

from keyplane.domain import validation
from keyplane.errors import ValidationError
from keyplane.store.tables import api_key_metadata, api_keys

#: Separator of path segments in the stored path; segments never contain it.
PATH_SEPARATOR = "."


def scalar_text(value: Any) -> str | None:
    """The text a filter compares ``value`` with; ``None`` for what no filter matches."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        # The JSON text, as the API returns the number (1.5, 2.0, 1e+20).
        return json.dumps(value)
    return None


def value_digest(text: str) -> str:
    """The stored, indexed form of a value's text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def indexed_entries(meta: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """``(dotted path, digest)`` for every scalar a filter can reach in ``meta``."""
    yield from _walk(meta, ())


def _walk(node: Mapping[str, Any], prefix: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    for key, value in node.items():
        if not validation.METADATA_PATH_SEGMENT.fullmatch(key):
            continue  # no filter path can name this key
        path = (*prefix, key)
        if isinstance(value, Mapping):
            if len(path) < validation.MAX_METADATA_DEPTH:
                yield from _walk(value, path)
            continue
        text = scalar_text(value)
        if text is not None:
            yield PATH_SEPARATOR.join(path), value_digest(text)


def index_rows(key_id: str, org_id: str, meta: Mapping[str, Any]) -> list[dict[str, str]]:
    """The index rows of one key."""
    return [
        {"key_id": key_id, "org_id": org_id, "path": path, "value_digest": digest}
        for path, digest in indexed_entries(meta)
    ]


async def write_index(
    conn: AsyncConnection, key_id: str, org_id: str, meta: Mapping[str, Any], *, replace: bool
) -> None:
    """Write a key's index rows inside the caller's transaction (replacing its old ones)."""
    if replace:
        await conn.execute(api_key_metadata.delete().where(api_key_metadata.c.key_id == key_id))
    rows = index_rows(key_id, org_id, meta)
    if rows:
        await conn.execute(insert(api_key_metadata), rows)


#: How many index entries a filter's key count is read up to, to pick the page's driver.
SELECTIVITY_CAP = 1000

Filters = Sequence[tuple[tuple[str, ...], str]]


@dataclass(frozen=True)
class FilterPlan:
    """The filters in the order the page reads them, and whether every one is common."""

    #: The filter the fewest keys match first.
    filters: Filters
    #: Every filter matches at least the cap of keys: no filter is a short walk.
    all_common: bool


async def plan_filters(
    conn: AsyncConnection, org_id: str, filters: Filters, cap: int = SELECTIVITY_CAP
) -> FilterPlan:
    """``filters`` with the one the fewest keys match first (counted up to ``cap``, so each
    count costs at most that many index entries): the page is read along that filter's
    index entries, the others are checked per key or merged (:func:`merged_page`)."""
    if len(filters) < 2:
        return FilterPlan(filters, all_common=False)
    counts = []
    for path, value in filters:
        capped = (
            select(api_key_metadata.c.key_id)
            .where(*_entry(org_id, _dotted(path), value))
            .limit(cap)
            .subquery()
        )
        counts.append((await conn.execute(select(func.count()).select_from(capped))).scalar_one())
    order = sorted(range(len(filters)), key=counts.__getitem__)
    return FilterPlan([filters[i] for i in order], all_common=counts[order[0]] >= cap)


def _entry(
    org_id: str, path: str, value: str, entries: FromClause = api_key_metadata
) -> tuple[ColumnElement[bool], ...]:
    """The conditions naming one filter's entries of the index (or of an alias of it)."""
    return (
        entries.c.org_id == org_id,
        entries.c.path == path,
        entries.c.value_digest == value_digest(value),
    )


def matching_page(org_id: str, filters: Filters, after: str | None) -> Select[Any]:
    """Keys of ``org_id`` matching every metadata filter, in id order, after ``after``.

    The page is read *from the index*, in its (org, path, digest, key id) order, joined to
    the keys: a value no key holds costs one index seek, a value half the keys hold costs one
    page of the index, and nothing is sorted. Further filters are probed per key, by the
    whole (org, path, digest, key id) entry: an index-only lookup, and when the filters are
    all common, PostgreSQL merges the two ranges of the index instead (both in key id order).
    Put the most selective filter first (:func:`plan_filters`). The caller adds its own
    conditions and the limit.
    """
    (first_path, first_value), *rest = [(_dotted(path), value) for path, value in filters]
    index = api_key_metadata
    query = (
        select(api_keys)
        .select_from(index.join(api_keys, api_keys.c.id == index.c.key_id))
        .where(*_entry(org_id, first_path, first_value))
        .order_by(index.c.key_id)
    )
    if after is not None:
        query = query.where(index.c.key_id > after)
    for path, value in rest:
        other = index.alias()
        query = query.where(
            exists().where(*_entry(org_id, path, value, other), other.c.key_id == index.c.key_id)
        )
    return query


def merged_page(
    org_id: str,
    filters: Filters,
    after: str | None,
    conditions: Sequence[ColumnElement[bool]],
    limit: int,
) -> Select[Any]:
    """The page of :func:`matching_page` when every filter is common, for SQLite.

    SQLite has no merge join: probing one common filter per key of another costs a seek per
    key, and when the two values are rarely held together (two halves of the keys that never
    meet) the page walks every key of the first. ``INTERSECT`` with ``ORDER BY`` and a
    ``LIMIT`` is the merge: each filter's range of the index is read in key id order, side by
    side, and the reading stops when the page is full; disjoint values cost one pass over
    both ranges, no seek. ``conditions`` on the keys (other than the organization) are
    checked on the first filter's side.
    """
    index = api_key_metadata
    sides = []
    for number, (path, value) in enumerate(filters):
        entries = index.alias(f"filter_{number}")
        side = select(entries.c.key_id).where(*_entry(org_id, _dotted(path), value, entries))
        if after is not None:
            side = side.where(entries.c.key_id > after)
        if number == 0 and conditions:
            side = side.join_from(entries, api_keys, api_keys.c.id == entries.c.key_id).where(
                *conditions
            )
        sides.append(side)
    page = intersect(*sides).order_by("key_id").limit(limit).subquery()
    return select(api_keys).where(api_keys.c.id.in_(select(page.c.key_id))).order_by(api_keys.c.id)


def _dotted(path: tuple[str, ...]) -> str:
    if not all(validation.METADATA_PATH_SEGMENT.fullmatch(part) for part in path):
        # parse_metadata_path refuses these before they get here; kept for other callers.
        raise ValidationError("invalid metadata path", code="INVALID_FILTER")
    return PATH_SEPARATOR.join(path)
