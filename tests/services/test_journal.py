"""The change journal: key actions record who did what, and the records commit with the change
or not at all (the journal writers run inside the change's transaction)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from keyplane.domain.changes import Change, Journal, Origin
from keyplane.domain.clock import ManualClock
from keyplane.domain.tenancy import Principal
from keyplane.errors import NotFoundError
from keyplane.services.keys import NewKey
from keyplane.services.runtime import Runtime
from keyplane.store.base import KeyFilter
from tests.conftest import Database


class Recorder:
    """A journal writer that keeps what it was given, or fails when told to."""

    def __init__(self) -> None:
        self.written: list[tuple[Journal, Change]] = []
        self.fail = False

    async def __call__(self, conn: AsyncConnection, journal: Journal) -> None:
        if self.fail:
            raise RuntimeError("the journal writer failed")
        self.written.extend((journal, change) for change in journal.changes)

    def actions(self) -> list[str]:
        return [change.action for _, change in self.written]


@pytest.fixture
async def runtime(database: Database, clock: ManualClock) -> AsyncIterator[Runtime]:
    runtime = await Runtime.start(database.settings(), clock)
    try:
        yield runtime
    finally:
        await runtime.stop()


@pytest.fixture
def recorder(runtime: Runtime) -> Recorder:
    recorder = Recorder()
    runtime.store.unit.journal_writers.append(recorder)
    return recorder


def admin(runtime: Runtime) -> Principal:
    origin = Origin.of("203.0.113.7", "curl/8", "req-1")
    return Principal(
        "mk_admin", runtime.default_project.org_id, None, ("*",), name="ops", origin=origin
    )


async def test_each_key_action_records_its_change_with_actor_and_target(
    runtime: Runtime, recorder: Recorder
) -> None:
    keys = runtime.services.keys
    caller = admin(runtime)
    issued = await keys.create(caller, NewKey(name="acme", owner="cust_1"))
    key_id = issued.record.id
    await keys.update(caller, key_id, {"name": "acme 2", "tags": ("a",)})
    await keys.update(caller, key_id, {"name": "acme 2"})  # changes nothing: no entry
    await keys.disable(caller, key_id, "abuse", None)
    await keys.enable(caller, key_id)
    rotated = await keys.rotate(caller, key_id, timedelta(hours=1))
    await keys.revoke(caller, key_id, "customer left")
    await keys.revoke(caller, key_id, "again")  # a no-op: no entry

    assert recorder.actions() == [
        "key.created",
        "key.updated",
        "key.disabled",
        "key.enabled",
        "key.rotated",
        "key.revoked",
    ]
    for journal, change in recorder.written:
        assert journal.actor.id == "mk_admin" and journal.actor.name == "ops"
        assert journal.actor.origin == Origin("203.0.113.7", "curl/8", "req-1")
        assert (change.target_type, change.target_id) == ("key", key_id)
        assert change.org_id == runtime.default_project.org_id
    by_action = {change.action: change for _, change in recorder.written}
    assert by_action["key.updated"].details["changes"] == {
        "name": {"from": "acme", "to": "acme 2"},
        "tags": {"from": [], "to": ["a"]},
    }
    assert by_action["key.revoked"].details["reason"] == "customer left"
    assert by_action["key.disabled"].details["reason"] == "abuse"
    assert by_action["key.rotated"].details["new"] == {
        "start": rotated.record.start,
        "end": rotated.record.end,
    }
    # Nothing recorded holds a secret or its hash.
    text = repr([change for _, change in recorder.written])
    assert issued.secret not in text and rotated.secret not in text
    assert issued.record.hash not in text and rotated.record.hash not in text


async def test_a_failing_journal_writer_rolls_the_change_back(
    runtime: Runtime, recorder: Recorder
) -> None:
    keys = runtime.services.keys
    caller = admin(runtime)
    issued = await keys.create(caller, NewKey(name="kept"))
    recorder.fail = True
    with pytest.raises(RuntimeError):
        await keys.create(caller, NewKey(name="never"))
    with pytest.raises(RuntimeError):
        await keys.revoke(caller, issued.record.id, "never")
    recorder.fail = False

    record = await keys.get(caller, issued.record.id)
    assert record.revoked_at is None
    listed = await keys.list(caller, KeyFilter(), None, 10)
    assert [r.name for r in listed] == ["kept"]


async def test_a_refused_change_records_nothing(runtime: Runtime, recorder: Recorder) -> None:
    with pytest.raises(NotFoundError):
        await runtime.services.keys.revoke(admin(runtime), "key_" + "0" * 26, None)
    assert recorder.written == []
