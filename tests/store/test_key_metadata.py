"""Metadata filters read the metadata index: it must agree with a plain walk of every key's
metadata, after creates and updates, on every backend."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyplane.settings import to_async_url
from keyplane.store.database import Database as Db
from keyplane.store.keys import KeyFilter
from keyplane.store.migrate import migrate
from tests.conftest import Database
from tests.store.conftest import NOW, key_record

# A few names, so random filters often hit; "a.b" and "ü" can never be named by a filter path.
_NAMES = st.sampled_from(["a", "b", "tier", "x-y", "a.b", "ü"])
_SCALARS = st.one_of(
    st.sampled_from(["pro", "free", "1", "true", "1.5", "", "ü"]),
    st.integers(-3, 3),
    st.sampled_from([1.5, 2.0, -0.5, 1e20]),
    st.booleans(),
    st.none(),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(_NAMES, inner, max_size=3),
    max_leaves=6,
)
_METADATA = st.dictionaries(_NAMES, _VALUES, max_size=4)
_PATHS = st.lists(st.sampled_from(["a", "b", "tier", "x-y"]), min_size=1, max_size=3).map(tuple)
_FILTER_TEXT = st.sampled_from(["pro", "free", "1", "true", "false", "1.5", "2.0", "1e+20", ""])


def _brute_force_text(meta: dict[str, Any], path: tuple[str, ...]) -> str | None:
    """The reference: walk the JSON, then write the scalar found as the API would show it."""
    node: Any = meta
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    if node is True or node is False:
        return json.dumps(node)
    if isinstance(node, str):
        return node
    if isinstance(node, int | float):
        return json.dumps(node)
    return None


def _brute_force(
    metas: dict[str, dict[str, Any]], filters: list[tuple[tuple[str, ...], str]]
) -> list[str]:
    return sorted(
        key_id
        for key_id, meta in metas.items()
        if all(_brute_force_text(meta, path) == value for path, value in filters)
    )


_PROPERTY = settings(
    max_examples=25,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@_PROPERTY
@given(
    created=st.lists(_METADATA, min_size=1, max_size=6),
    updates=st.lists(st.tuples(st.integers(0, 5), _METADATA), max_size=3),
    filters=st.lists(st.tuples(_PATHS, _FILTER_TEXT), min_size=1, max_size=2),
    probes=st.lists(st.tuples(st.integers(0, 5), _PATHS), max_size=2),
)
def test_metadata_filters_equal_a_brute_force_filter(
    database: Database,
    created: list[dict[str, Any]],
    updates: list[tuple[int, dict[str, Any]]],
    filters: list[tuple[tuple[str, ...], str]],
    probes: list[tuple[int, tuple[str, ...]]],
) -> None:
    async def run() -> None:
        db = Db.from_url(to_async_url(database.url), database.schema)
        try:
            await migrate(db.engine)
            # A fresh organization per example: earlier examples' keys stay out of the way.
            org_id, project_id = await other_tenancy_named(db)
            metas: dict[str, dict[str, Any]] = {}
            ids: list[str] = []
            for meta in created:
                record = await db.keys.create(key_record(org_id, project_id, metadata=meta))
                metas[record.id] = meta
                ids.append(record.id)
            for index, meta in updates:
                key_id = ids[index % len(ids)]
                await db.keys.mutate(
                    org_id, key_id, lambda r, m=meta: dataclasses.replace(r, metadata=m)
                )
                metas[key_id] = meta
            # Filters for values the keys really hold, so matches are not only ever empty.
            held = [
                (path, text)
                for index, path in probes
                if (text := _brute_force_text(metas[ids[index % len(ids)]], path)) is not None
            ]
            for chosen in ([*filters], held, [*filters[:1], *held]):
                if not chosen:
                    continue
                page = await db.keys.list_page(
                    org_id, KeyFilter(metadata=tuple(chosen)), NOW, None, 100
                )
                assert [r.id for r in page] == _brute_force(metas, chosen), chosen
        finally:
            await db.close()

    asyncio.run(run())


async def other_tenancy_named(db: Db) -> tuple[str, str]:
    """A new organization (the shared ``other_tenancy`` can make only one per database)."""
    org, project = await db.tenancy.create_organization(f"org-{secrets.token_hex(4)}", NOW)
    return org.id, project.id


# Small value sets, so two or three filters are each held by many of a handful of keys: with
# the common-filter cap lowered to that handful, every page takes the plan for common filters
# (on SQLite the merge of the index ranges, ``merged_page``).
_COMMON_META = st.fixed_dictionaries(
    {
        "region": st.sampled_from(["eu", "us"]),
        "tier": st.sampled_from(["free", "pro"]),
        "plan": st.fixed_dictionaries({"seats": st.integers(1, 2)}),
    }
)
_COMMON_FILTERS = st.lists(
    st.sampled_from(
        [
            (("region",), "eu"),
            (("region",), "us"),
            (("tier",), "free"),
            (("tier",), "pro"),
            (("plan", "seats"), "1"),
            (("plan", "seats"), "2"),
        ]
    ),
    min_size=2,
    max_size=3,
    unique=True,
)


@_PROPERTY
@given(
    metas=st.lists(_COMMON_META, min_size=2, max_size=12),
    owners=st.lists(st.sampled_from(["ann", "bob"]), min_size=12, max_size=12),
    filters=_COMMON_FILTERS,
    owner=st.sampled_from([None, "ann"]),
    page=st.integers(1, 4),
    cap=st.integers(1, 3),
)
def test_pages_of_common_filters_equal_a_brute_force_filter(
    database: Database,
    metas: list[dict[str, Any]],
    owners: list[str],
    filters: list[tuple[tuple[str, ...], str]],
    owner: str | None,
    page: int,
    cap: int,
) -> None:
    async def run() -> None:
        db = Db.from_url(to_async_url(database.url), database.schema)
        db.keys.selectivity_cap = cap
        try:
            await migrate(db.engine)
            org_id, project_id = await other_tenancy_named(db)
            # Another organization holding the same values: its keys must never show.
            stranger_org, stranger_project = await other_tenancy_named(db)
            held: dict[str, dict[str, Any]] = {}
            owner_of: dict[str, str] = {}
            for meta, key_owner in zip(metas, owners, strict=False):
                record = await db.keys.create(
                    key_record(org_id, project_id, metadata=meta, owner=key_owner)
                )
                held[record.id], owner_of[record.id] = meta, key_owner
                await db.keys.create(key_record(stranger_org, stranger_project, metadata=meta))
            expected = [
                key_id
                for key_id in _brute_force(held, filters)
                if owner is None or owner_of[key_id] == owner
            ]
            # Every page, cursor after cursor, as a client walks them.
            seen: list[str] = []
            after: str | None = None
            for _ in range(len(metas) + 2):  # a cursor that does not advance fails, not hangs
                found = await db.keys.list_page(
                    org_id, KeyFilter(owner=owner, metadata=tuple(filters)), NOW, after, page
                )
                seen += [record.id for record in found]
                if len(found) < page:
                    break
                after = found[-1].id
            assert seen == expected, (filters, owner)
        finally:
            await db.close()

    asyncio.run(run())
