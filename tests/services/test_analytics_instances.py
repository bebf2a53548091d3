"""Two runtimes on one PostgreSQL schema (two instances): their usage rollups and verify
outcome counts add up to what one would have counted."""

from __future__ import annotations

import asyncio
import itertools
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from keyplane.domain.clock import ManualClock
from keyplane.domain.tenancy import Principal
from keyplane.services.runtime import Runtime
from keyplane.services.usage import UsageReport
from keyplane.store.tables import verify_analytics
from tests.conftest import Database
from tests.store.conftest import key_record
from tests.store.test_analytics import _brute_force, _ledger, _stored

pytestmark = pytest.mark.postgres


async def test_two_runtimes_add_up(postgres_database: Database, clock: ManualClock) -> None:
    # Two instances share a database on PostgreSQL (SQLite is one process).
    settings = postgres_database.settings(rollup_flush_seconds=3600)
    first = await Runtime.start(settings, clock)
    second = await Runtime.start(settings, clock)
    try:
        org_id = first.default_project.org_id
        keys = [
            (await first.store.keys.create(key_record(org_id, first.default_project.id))).id
            for _ in range(2)
        ]
        principal = Principal("mk_test", org_id, None, ("*",))
        numbers = itertools.count()

        async def report(runtime: Runtime, key_id: str, index: int) -> None:
            await runtime.services.usage.report(
                principal,
                UsageReport(
                    key_id=key_id,
                    request_id=f"req-{next(numbers)}",
                    cost=1000 + index,
                    model=("gpt-4", "claude", None)[index % 3],
                    feature=("chat", None)[index % 2],
                    latency_ms=index * 7,
                    status=(200, 500)[index % 2],
                ),
                None,
            )

        for step in range(4):
            await asyncio.gather(
                *(
                    report((first, second)[i % 2], keys[i % 2 if step % 2 else 0], i)
                    for i in range(20)
                )
            )
            clock.advance(1800)  # across hour buckets
        for runtime, count in ((first, 3), (second, 4)):
            recorder = runtime.verdict_recorder
            assert recorder is not None
            for _ in range(count):
                recorder.record(keys[0], "RATE_LIMITED", clock.now() - timedelta(seconds=1))
    finally:
        await first.stop()
        await second.stop()
    check = await Runtime.start(settings, clock)
    try:
        stored = await _stored(check.store, keys)
        assert stored == _brute_force(await _ledger(check.store, keys))
        assert sum(v["requests"] for k, v in stored.items() if k[1] == "day" and k[3] == "") == 80
        async with check.store.unit.read() as conn:
            total = (
                await conn.execute(
                    select(func.sum(verify_analytics.c["count"])).where(
                        verify_analytics.c.grain == "day"
                    )
                )
            ).scalar_one()
        assert total == 7
    finally:
        await check.stop()
