"""Two instances (two runtimes on one PostgreSQL database) sweeping the same due keys at the
same time rotate each key exactly once, and the job runner runs the sweep job on one of them
only. SQLite deployments run one instance: there, two overlapping sweeps of that instance (a
retried run meeting a late one) rotate each key once too."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

from sqlalchemy import select

from keyplane.domain.changes import Journal
from keyplane.domain.clock import ManualClock
from keyplane.domain.tenancy import Principal
from keyplane.services.keys import NewKey
from keyplane.services.runtime import Runtime
from keyplane.store.tables import held_rotation_secrets
from tests.conftest import Database

KEYS = 6


async def test_two_instances_rotate_each_due_key_exactly_once(
    database: Database, clock: ManualClock
) -> None:
    first = await Runtime.start(database.settings(instance_id="one"), clock)
    one_instance = database.name == "sqlite"
    second = first if one_instance else await Runtime.start(database.settings(), clock)
    rotated: Counter[str] = Counter()

    async def count(conn: object, journal: Journal) -> None:
        for change in journal.changes:
            if change.action == "key.rotated" and change.target_id is not None:
                rotated[change.target_id] += 1

    try:
        for runtime in {id(first): first, id(second): second}.values():
            runtime.store.unit.journal_writers.append(count)
        root = Principal("mk_test", first.default_project.org_id, None, ("*",))
        key_ids = []
        for number in range(KEYS):
            issued = await first.services.keys.create(root, NewKey(name=f"k{number}"))
            key_ids.append(issued.record.id)
            await first.services.rotations.set_policy(
                root, issued.record.id, {"max_age_days": 1, "grace_period_hours": 1}
            )
        clock.advance(timedelta(days=1).total_seconds())
        done = await asyncio.gather(
            first.services.rotations.sweep(clock.now()),
            second.services.rotations.sweep(clock.now()),
        )
        assert sum(done) == KEYS, done
        assert rotated == dict.fromkeys(key_ids, 1)
        async with first.store.unit.read() as conn:
            held = (await conn.execute(select(held_rotation_secrets))).all()
        assert sorted(row.key_id for row in held) == sorted(key_ids)
        assert {row.state for row in held} == {"pending"}

        # A day later the keys are due again: the runner's sweep job runs on one instance.
        clock.advance(timedelta(days=1).total_seconds())
        ran = await asyncio.gather(first.services.jobs.run_once(), second.services.jobs.run_once())
        assert [names.count("rotation.sweep") for names in ran] in ([1, 0], [0, 1]), ran
        assert rotated == dict.fromkeys(key_ids, 2)
    finally:
        if not one_instance:
            await second.stop()
        await first.stop()
