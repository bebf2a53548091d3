"""A cache miss of verify: the key is read through the lean reads (``store/lean.py``), not the
ORM, and its policy is compiled once per distinct document (the memo agrees with a fresh
compile on random policies)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st
from sqlalchemy import event

from keyplane.domain.clock import ManualClock
from keyplane.domain.tenancy import Principal
from keyplane.services.keys import NewKey
from keyplane.services.runtime import Runtime
from keyplane.services.verify import VerifyRequest
from tests.conftest import Database


def _admin(runtime: Runtime) -> Principal:
    return Principal("mk_admin", runtime.default_project.org_id, None, ("*",), name="ops")


async def test_a_cold_verify_reads_its_key_without_the_orm(
    database: Database, clock: ManualClock
) -> None:
    runtime = await Runtime.start(database.settings(), clock)
    through_orm: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        # The ORM's reads of a key: by secret (joins the secrets), by id (joins the plan).
        if "api_key_secrets" in statement or "FROM api_keys LEFT OUTER JOIN plans" in statement:
            through_orm.append(statement)

    try:
        caller = _admin(runtime)
        issued = await runtime.services.keys.create(caller, NewKey(name="cold"))
        runtime.directory.evict(None)
        event.listen(runtime.store.engine.sync_engine, "before_cursor_execute", seen)
        verdict = await runtime.services.verifier.verify(caller, VerifyRequest(issued.secret))
        by_id = await runtime.directory.by_id(issued.record.id)
    finally:
        event.remove(runtime.store.engine.sync_engine, "before_cursor_execute", seen)
        await runtime.stop()
    assert verdict.valid
    assert by_id is not None
    assert by_id.record == issued.record
    assert through_orm == []


_NAME = st.sampled_from(["a", "b", "per_minute", "per_day"])
