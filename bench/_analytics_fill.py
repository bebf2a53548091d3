"""Builds a key with millions of usage events quickly, for ``bench/analytics.py``.

Writing 10M events through the ledger takes hours on a shared machine, so the events are made
to repeat hour by hour: hour ``h`` of the 720 holds the same ``per_hour`` events (the
``i``-th at ``i * 3600 / per_hour`` seconds into the hour, with model ``i % 20``, feature
``i % 5``, ...). One hour's rollups are then counted once in Python, through the same
``Sums.count`` the domain uses, and written for every hour and day; the raw events are
generated inside the database (``generate_series`` / a recursive CTE), so the ledger table
is as big as the rollups say, and a query that scanned it would show.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import insert, text

from keyplane.domain.analytics import Grain, Sums
from keyplane.store.tables import usage_analytics
from keyplane.store.unit import UnitOfWork

HOURS = 720
MODELS = 20
FEATURES = 5


def one_hour(per_hour: int) -> dict[tuple[str, str], Sums]:
    """The rollups of one hour's events, by (dimension, value); ("", "") is the total."""
    sums: dict[tuple[str, str], Sums] = {}
    for i in range(per_hour):
        status = 500 if i % 50 == 0 else 200
        measures = (1000 + i % 97, i % 500, i % 300, (i * 37) % 3000, status)
        for slot in (("", ""), ("model", f"model-{i % MODELS}"), ("feature", f"feature-{i % 5}")):
            sums.setdefault(slot, Sums()).count(*measures)
    return sums


def _times(sums: Sums, factor: int) -> dict[str, int]:
    return {name: value * factor for name, value in sums.values().items()}


async def write_rollups(unit: UnitOfWork, key_id: str, start: datetime, per_hour: int) -> None:
    """Hour rows for the 720 hours from ``start``, and day rows for the days they touch."""
    hourly = one_hour(per_hour)
    hours_in_day: dict[datetime, int] = {}
    rows = []
    for h in range(HOURS):
        bucket = start + timedelta(hours=h)
        day = bucket.replace(hour=0)
        hours_in_day[day] = hours_in_day.get(day, 0) + 1
        for (dimension, value), sums in hourly.items():
            rows.append(
                {
                    "key_id": key_id,
                    "grain": Grain.HOUR.value,
                    "bucket_start": bucket,
                    "dimension": dimension,
                    "value": value,
                    **sums.values(),
                }
            )
    for day, hours in hours_in_day.items():
        for (dimension, value), sums in hourly.items():
            rows.append(
                {
                    "key_id": key_id,
                    "grain": Grain.DAY.value,
                    "bucket_start": day,
                    "dimension": dimension,
                    "value": value,
                    **_times(sums, hours),
                }
            )
    async with unit.write() as conn:
        await conn.execute(insert(usage_analytics), rows)


_POSTGRES_EVENTS = """
INSERT INTO usage_events (id, org_id, key_id, idempotency_key, fingerprint, model, cost_micros,
    input_tokens, output_tokens, latency_ms, status, recorded_at, feature)
SELECT 'use_fill_' || h || '_' || i, :org_id, :key_id, 'fill-' || h || '-' || i,
    repeat('f', 64), 'model-' || (i % 20), 1000 + i % 97, i % 500, i % 300, (i * 37) % 3000,
    CASE WHEN i % 50 = 0 THEN 500 ELSE 200 END,
    CAST(:start AS timestamptz)
        + make_interval(hours => h, secs => (i * 3600) / CAST(:per_hour AS int)),
    'feature-' || (i % 5)
FROM generate_series(CAST(:first AS int), CAST(:last AS int)) AS h,
    generate_series(0, CAST(:per_hour AS int) - 1) AS i
"""

_SQLITE_EVENTS = """
WITH RECURSIVE hours(h) AS (SELECT :first UNION ALL SELECT h + 1 FROM hours WHERE h < :last),
    n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < :per_hour - 1)
INSERT INTO usage_events (id, org_id, key_id, idempotency_key, fingerprint, model, cost_micros,
    input_tokens, output_tokens, latency_ms, status, recorded_at, feature)
SELECT 'use_fill_' || h || '_' || i, :org_id, :key_id, 'fill-' || h || '-' || i,
    'ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff', 'model-' || (i % 20),
    1000 + i % 97, i % 500, i % 300, (i * 37) % 3000,
    CASE WHEN i % 50 = 0 THEN 500 ELSE 200 END,
    strftime('%Y-%m-%d %H:%M:%S', :start, '+' || (h * 3600 + (i * 3600) / :per_hour)
        || ' seconds') || '.000000',
    'feature-' || (i % 5)
FROM hours, n
"""


async def write_events(
    unit: UnitOfWork,
    org_id: str,
    key_id: str,
    start: datetime,
    per_hour: int,
    progress: Callable[[str], None],
) -> None:
    """The raw events the rollups sum, generated in the database, a day per transaction."""
    began = time.perf_counter()
    for first in range(0, HOURS, 24):
        params = {
            "org_id": org_id,
            "key_id": key_id,
            "per_hour": per_hour,
            "first": first,
            "last": min(HOURS, first + 24) - 1,
        }
        if unit.is_sqlite:
            statement = _SQLITE_EVENTS
            params["start"] = start.strftime("%Y-%m-%d %H:%M:%S")
        else:
            statement = _POSTGRES_EVENTS
            params["start"] = start
        async with unit.write() as conn:
            await conn.execute(text(statement), params)
        if first % 120 == 0:
            done = (first + 24) * per_hour
            progress(f"{done:,} raw events written ({time.perf_counter() - began:.0f} s)")
