"""The usage ledger's pure steps, shared by its three ways of writing a group commit.

``SqlUsageStore._record`` (statement by statement, through SQLAlchemy: the reference),
``SqliteLedger`` (one trip to aiosqlite's thread) and ``PostgresLedger`` (asyncpg, directly)
run the same statements with these steps in between: which reports are new and which repeat
(``classified``), which would overflow a key's all-time totals (``overflowing_ids``), what
they add to the rollups (``rollup_rows``) and which rollup rows their alerts read
(``alert_slots``). Nothing here touches a database.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from keyplane.domain import money
from keyplane.domain.periods import CurrentPeriods
from keyplane.domain.usage import BUCKETS, Recorded, UsageEntry, alerts_of
from keyplane.store.tables import usage_rollups

#: usage_rollups' columns, in table order (the order the SQLite upsert binds them).
ROLLUP_COLUMNS = tuple(column.name for column in usage_rollups.columns)
#: The rollups' sums, which a report adds to.
ROLLUP_MEASURES = ("requests", "cost_micros", "input_tokens", "output_tokens")


#: A budget or cost window's rollup row: key id, bucket, bucket start (all models).
Slot = tuple[str, str, datetime]


def alert_slots(added: Sequence[UsageEntry]) -> set[Slot]:
    """The rollup rows whose totals the new reports' alerts are checked against."""
    return {(e.key_id, a.bucket, a.bucket_start) for e in added for a in alerts_of(e)}


class Holder(NamedTuple):
    """The ledger row that holds an (API key, idempotency key)."""

    id: str
    fingerprint: str
    recorded_at: datetime


def classified(
    entries: Sequence[UsageEntry], holders: Mapping[tuple[str, str], Any]
) -> tuple[list[Recorded], list[UsageEntry]]:
    """Each report's outcome, in order, from the rows now holding their (API key, idempotency
    key) (``holders``: anything with ``id``, ``fingerprint`` and ``recorded_at``), and the
    reports that are new: those whose own row holds it."""
    outcomes: list[Recorded] = []
    added: list[UsageEntry] = []
    for entry in entries:
        row = holders[(entry.key_id, entry.idempotency_key)]
        if row.id == entry.id:
            added.append(entry)
            outcomes.append(Recorded(entry.id, entry.recorded_at, new=True))
        else:
            conflict = row.fingerprint != entry.fingerprint
            outcomes.append(Recorded(row.id, row.recorded_at, new=False, conflict=conflict))
    return outcomes, added


def overflowing_ids(added: Sequence[UsageEntry], running: Mapping[str, list[int]]) -> set[str]:
    """The new reports that would take their key's all-time totals (``running``: cost, input
    and output tokens per key, before the batch; updated in place) past ``LEDGER_MAX``."""
    overflowing: set[str] = set()
    for entry in added:
        totals = running[entry.key_id]
        amounts = (entry.cost_micros, entry.input_tokens, entry.output_tokens)
        if any(
            total + amount > money.LEDGER_MAX for total, amount in zip(totals, amounts, strict=True)
        ):
            overflowing.add(entry.id)
            continue
        for index, amount in enumerate(amounts):
            totals[index] += amount
    return overflowing


def without_overflowing(
    outcomes: Sequence[Recorded], added: Sequence[UsageEntry], overflowing: set[str]
) -> tuple[list[Recorded], list[UsageEntry]]:
    """The outcomes and new reports once the overflowing ones are taken out of the ledger."""
    return (
        [
            Recorded(o.event_id, o.recorded_at, new=False, overflow=True)
            if o.event_id in overflowing
            else o
            for o in outcomes
        ],
        [entry for entry in added if entry.id not in overflowing],
    )


def rollup_rows(added: Sequence[UsageEntry]) -> list[dict[str, Any]]:
    """The rollup rows the new reports add to: per key, bucket, bucket start and model (and
    ``""`` for all models), summed, sorted so concurrent transactions lock rows in one order."""
    sums: dict[tuple[str, str, datetime, str], list[int]] = {}
    # The reports of one commit fall in the same periods, but for the odd one at a boundary:
    # each period's bounds worked out once, not five per report.
    periods = CurrentPeriods()
    for entry in added:
        for reset, bucket in BUCKETS:
            start = periods.bounds(reset, entry.recorded_at)[0]
            for model in {"", entry.model or ""}:
                total = sums.setdefault((entry.key_id, bucket, start, model), [0, 0, 0, 0])
                total[0] += 1
                total[1] += entry.cost_micros
                total[2] += entry.input_tokens
                total[3] += entry.output_tokens
    return [
        {
            "key_id": key_id,
            "bucket": bucket,
            "bucket_start": start,
            "model": model,
            "requests": requests,
            "cost_micros": cost,
            "input_tokens": tokens_in,
            "output_tokens": tokens_out,
        }
        for (key_id, bucket, start, model), (requests, cost, tokens_in, tokens_out) in sorted(
            sums.items()
        )
    ]


def ledger_values(entry: UsageEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "org_id": entry.org_id,
        "key_id": entry.key_id,
        "idempotency_key": entry.idempotency_key,
        "fingerprint": entry.fingerprint,
        "request_id": entry.request_id,
        "model": entry.model,
        "cost_micros": entry.cost_micros,
        "input_tokens": entry.input_tokens,
        "output_tokens": entry.output_tokens,
        "latency_ms": entry.latency_ms,
        "status": entry.status,
        "recorded_at": entry.recorded_at,
        "feature": entry.feature,
    }
