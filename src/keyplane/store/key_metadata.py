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
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ColumnElement

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


def matches_condition(
    org_id: str, filters: Sequence[tuple[tuple[str, ...], str]]
) -> list[ColumnElement[bool]]:
    """Conditions on ``api_keys`` for keys of ``org_id`` matching every metadata filter."""
    conditions: list[ColumnElement[bool]] = []
    for path, value in filters:
        if not all(validation.METADATA_PATH_SEGMENT.fullmatch(part) for part in path):
            # parse_metadata_path refuses these before they get here; kept for other callers.
            raise ValidationError("invalid metadata path", code="INVALID_FILTER")
        conditions.append(
            api_keys.c.id.in_(
                select(api_key_metadata.c.key_id).where(
                    api_key_metadata.c.org_id == org_id,
                    api_key_metadata.c.path == PATH_SEPARATOR.join(path),
                    api_key_metadata.c.value_digest == value_digest(value),
                )
            )
        )
    return conditions
