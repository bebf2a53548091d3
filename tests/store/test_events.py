"""The ``EventStore`` contract (``db.events``), on SQLite and PostgreSQL."""

from __future__ import annotations

from keyplane.domain import ids
from keyplane.domain.tenancy import Project
from keyplane.domain.usage import AlertSpec, UsageEntry, bucket_starts
from keyplane.store.database import Database as Db
from tests.store.conftest import NOW, key_record, other_tenancy, tenancy

#: Thresholds (basis points); a limit of ``after * 10_000 // bp`` puts each mark at ``after``.
_BPS = (1_000, 2_000, 2_500, 5_000, 10_000)


async def _alerting_report(db: Db, org_id: str, key_id: str, n: int) -> None:
    """The key's ``n``-th report (5 micro-credits each): it crosses one threshold, a new one
    each time, so it makes exactly one event."""
    start = bucket_starts(NOW)["month"]
    after, bp = 5 * (n + 1), _BPS[n]
    alert = AlertSpec("monthly", "month", start, after * 10_000 // bp, (bp,))
    entry = UsageEntry(
        ids.new_id("use"), org_id, key_id, f"idem-{n}", "f" * 64, None, None,
        5, 0, 0, None, None, NOW, alert,
    )  # fmt: skip
    await db.usage.record([entry])


async def test_events_page_in_id_order_with_filters(db: Db) -> None:
    org, project = await tenancy(db)
    second = Project(ids.new_id("proj"), org, "second", "kp", NOW)
    await db.tenancy.create_project(second)
    a = (await db.keys.create(key_record(org, project))).id
    b = (await db.keys.create(key_record(org, second.id))).id
    for n in range(3):
        await _alerting_report(db, org, a, n)
        if n < 2:
            await _alerting_report(db, org, b, n)
    everything = await db.events.list_page(org, None, 100)
    assert len(everything) == 5
    assert [e["id"] for e in everything] == sorted(e["id"] for e in everything)
    page1 = await db.events.list_page(org, None, 2)
    page2 = await db.events.list_page(org, page1[-1]["id"], 2)
    page3 = await db.events.list_page(org, page2[-1]["id"], 2)
    assert [e["id"] for e in page1 + page2 + page3] == [e["id"] for e in everything]
    assert [e["subject_id"] for e in await db.events.list_page(org, None, 100, subject_id=b)] == [
        b,
        b,
    ]
    in_second = await db.events.list_page(org, None, 100, project_id=second.id)
    assert {e["subject_id"] for e in in_second} == {b} and len(in_second) == 2
    first = everything[0]
    assert set(first) >= {"id", "org_id", "type", "subject_id", "payload", "created_at"}
    assert first["created_at"] == NOW


async def test_another_organizations_events_are_invisible(db: Db) -> None:
    org, _project = await tenancy(db)
    other_org, other_project = await other_tenancy(db)
    theirs = (await db.keys.create(key_record(other_org, other_project))).id
    await _alerting_report(db, other_org, theirs, 0)
    assert await db.events.list_page(org, None, 100) == []
    assert await db.events.list_page(org, None, 100, subject_id=theirs) == []
    assert await db.events.list_page(org, None, 100, project_id=other_project) == []
    assert len(await db.events.list_page(other_org, None, 100)) == 1
