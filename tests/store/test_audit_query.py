"""The ``AuditQueryStore`` contract (``db.audit_query``), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from keyplane.store.audit_query import AuditFilter
from keyplane.store.database import Database as Db
from tests.audit_rows import T0, entry, insert_entries

ORG, OTHER = "org_" + "a" * 26, "org_" + "b" * 26
KEY_A, KEY_B = "key_" + "a" * 26, "key_" + "b" * 26
PROJ = "proj_" + "c" * 26


async def _seed(db: Db) -> None:
    rows = [
        entry(ORG, 1, action="key.created", target_id=KEY_A, project_id=PROJ),
        entry(ORG, 2, action="key.revoked", target_id=KEY_B, actor_id="system"),
        entry(ORG, 3, action="management_key.created", target_id="mk_" + "d" * 26,
              target_type="management_key"),
        entry(ORG, 4, action="managementXkey.created", target_id="mk_" + "e" * 26),
        entry(ORG, 5, action="auth.failed", outcome="failure", target_id=None, count=7),
        entry(ORG, 6, action="key.updated", target_id=KEY_A, project_id=PROJ),
        entry(OTHER, 1, action="key.created", target_id=KEY_A),
    ]  # fmt: skip
    await insert_entries(db.engine, rows)


def _seqs(rows: list[dict[str, object]]) -> list[object]:
    return [row["seq"] for row in rows]


async def test_pages_are_newest_first_and_keyset_on_seq(db: Db) -> None:
    await _seed(db)
    where = AuditFilter(ORG)
    assert _seqs(await db.audit_query.page(where, None, 4)) == [6, 5, 4, 3]
    assert _seqs(await db.audit_query.page(where, 3, 4)) == [2, 1]
    assert await db.audit_query.page(where, 1, 4) == []


async def test_each_filter_narrows_the_entries(db: Db) -> None:
    await _seed(db)
    page = db.audit_query.page
    assert _seqs(await page(AuditFilter(ORG, target_ids=(KEY_A,)), None, 10)) == [6, 1]
    assert _seqs(await page(AuditFilter(ORG, actor_ids=("system",)), None, 10)) == [2]
    assert _seqs(await page(AuditFilter(ORG, actions=("key.revoked",)), None, 10)) == [2]
    assert _seqs(await page(AuditFilter(ORG, action_prefixes=("key.",)), None, 10)) == [6, 2, 1]
    # ``_`` is literal in a prefix, never a LIKE wildcard (seq 4 is managementXkey).
    prefixed = AuditFilter(ORG, action_prefixes=("management_key.",))
    assert _seqs(await page(prefixed, None, 10)) == [3]
    either = AuditFilter(ORG, actions=("auth.failed",), action_prefixes=("key.",))
    assert _seqs(await page(either, None, 10)) == [6, 5, 2, 1]
    assert _seqs(await page(AuditFilter(ORG, outcomes=("failure",)), None, 10)) == [5]
    window = AuditFilter(ORG, start=T0 + timedelta(minutes=2), end=T0 + timedelta(minutes=4))
    assert _seqs(await page(window, None, 10)) == [3, 2]  # start inclusive, end exclusive
    combined = AuditFilter(
        ORG, target_ids=(KEY_A,), action_prefixes=("key.",), outcomes=("success",)
    )
    assert _seqs(await page(combined, None, 10)) == [6, 1]


async def test_another_organization_or_project_is_never_read(db: Db) -> None:
    await _seed(db)
    assert _seqs(await db.audit_query.page(AuditFilter(OTHER), None, 10)) == [1]
    project = AuditFilter(ORG, project_id=PROJ)
    assert _seqs(await db.audit_query.page(project, None, 10)) == [6, 1]
    other_id = (await db.audit_query.page(AuditFilter(OTHER), None, 1))[0]["id"]
    assert await db.audit_query.get(ORG, other_id) is None
    assert (await db.audit_query.get(OTHER, other_id) or {})["seq"] == 1


async def test_scan_reads_oldest_first_up_to_a_head(db: Db) -> None:
    await _seed(db)
    assert await db.audit_query.head_seq(ORG) == 6
    assert await db.audit_query.head_seq("org_" + "z" * 26) == 0
    where = AuditFilter(ORG)
    assert _seqs(await db.audit_query.scan(where, 0, 5, 2)) == [1, 2]
    assert _seqs(await db.audit_query.scan(where, 2, 5, 10)) == [3, 4, 5]
    row = (await db.audit_query.scan(AuditFilter(ORG, outcomes=("failure",)), 0, 6, 1))[0]
    assert row["details"] == {"changes": {"name": {"from": "a", "to": "b"}}}
    assert row["count"] == 7
    assert row["occurred_at"] == T0 + timedelta(minutes=5)
