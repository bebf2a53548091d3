"""The ``SecurityReportStore`` and ``LeakResponseStore`` contracts, on SQLite and PostgreSQL:
groups count usable keys only, the date flags follow the cutoffs, pages follow ids, another
org is never read; a project's leak action is set, replaced and read back."""

from __future__ import annotations

from datetime import timedelta

from keyplane.domain.changes import SYSTEM, Journal
from keyplane.domain.keys import Environment, KeyStatus
from keyplane.domain.leaks import LeakAction
from keyplane.domain.security_report import Thresholds
from keyplane.store.database import Database as Db
from tests.store.conftest import NOW, key_record, other_tenancy, tenancy


async def test_groups_flags_and_pages(db: Db) -> None:
    org, project = await tenancy(db)
    other_org, other_project = await other_tenancy(db)
    old = NOW - timedelta(days=400)
    keys = [
        key_record(org, project, created_at=old, updated_at=old),  # dormant, stale
        key_record(org, project, last_used_at=NOW, expires_at=NOW + timedelta(days=3)),
        key_record(org, project, environment=Environment.TEST, scopes=("*",)),
        key_record(org, project, status=KeyStatus.REVOKED),
        key_record(org, project, expires_at=NOW - timedelta(seconds=1)),
        key_record(other_org, other_project, created_at=old, updated_at=old),
    ]
    for record in keys:
        await db.keys.create(record)
    cutoffs = Thresholds().cutoffs(NOW)
    groups = await db.security_report.key_groups(org, None, cutoffs)
    assert sum(group.count for group in groups) == 3  # revoked, expired, other org left out
    assert sum(group.dormant for group in groups) == 1
    assert sum(group.stale for group in groups) == 1
    assert sum(group.expiring for group in groups) == 1
    assert {group.scopes_text.replace(" ", "") for group in groups} == {"[]", '["*"]'}
    assert await db.security_report.key_groups(org, "proj_nobody", cutoffs) == []

    first = await db.security_report.key_facts(org, None, cutoffs, after=None, limit=2)
    rest = await db.security_report.key_facts(org, None, cutoffs, after=first[-1].id, limit=2)
    assert [f.id for f in first + rest] == sorted(r.id for r in keys[:3])
    flagged = await db.security_report.key_facts(
        org, None, cutoffs, after=None, limit=10, flagged_only=True
    )
    assert {f.id for f in flagged} == {keys[0].id, keys[1].id}
    assert await db.security_report.org_ids() == sorted([org, other_org])


async def test_a_projects_leak_action_is_set_replaced_and_read(db: Db) -> None:
    org, project = await tenancy(db)
    assert await db.leak_responses.action(project) is None
    for action in (LeakAction.NOTIFY, LeakAction.DISABLE):
        await db.leak_responses.set_action(org, project, action, NOW, Journal(SYSTEM, NOW))
        assert await db.leak_responses.action(project) is action
