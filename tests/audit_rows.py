"""Audit log rows written straight into the table, for the read side's tests and bench.

:func:`insert_entries` writes rows as given (placeholder hashes; for the store's contract
tests and the bench, on an organization no writer appends to); :func:`journal_of` turns a row
into the journal the real writer (``store/audit.py``) appends, for tests that also make
changes through the API.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from keyplane.domain import ids
from keyplane.domain.changes import Actor, Journal, Origin
from keyplane.store.tables import audit_log

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def entry(org_id: str, seq: int, **fields: Any) -> dict[str, Any]:
    """One row of ``audit_log``: a ``key.updated`` by ``mk_...`` a minute after the last."""
    row: dict[str, Any] = {
        "org_id": org_id,
        "seq": seq,
        "id": ids.new_id("aud"),
        "occurred_at": T0 + timedelta(minutes=seq),
        "project_id": None,
        "actor_type": "management_key",
        "actor_id": "mk_" + "0" * 26,
        "actor_name": "ops",
        "actor_ip": "203.0.113.7",
        "actor_user_agent": "curl/8.5",
        "request_id": f"req-{seq}",
        "action": "key.updated",
        "target_type": "key",
        "target_id": "key_" + "1" * 26,
        "outcome": "success",
        "details": {"changes": {"name": {"from": "a", "to": "b"}}},
        "count": 1,
        "prev_hash": f"{seq - 1:064x}",
        "hash": f"{seq:064x}",
    }
    row.update(fields)
    return row


async def insert_entries(engine: AsyncEngine, rows: Sequence[dict[str, Any]]) -> None:
    async with engine.begin() as conn:
        await conn.execute(insert(audit_log), list(rows))


def journal_of(row: dict[str, Any]) -> Journal:
    """The journal that makes ``row``'s entry when given to the audit writer."""
    origin = Origin(row["actor_ip"], row["actor_user_agent"], row["request_id"])
    actor = Actor(row["actor_type"], row["actor_id"], row["actor_name"], origin)
    journal = Journal(actor, row["occurred_at"])
    journal.record(
        row["action"],
        org_id=row["org_id"],
        target_type=row["target_type"],
        target_id=row["target_id"],
        project_id=row["project_id"],
        details=row["details"],
        outcome=row["outcome"],
        count=row["count"],
    )
    return journal
