"""A cache miss of verify: the key is read through the lean reads (``store/lean.py``), not the
ORM, and its policy is compiled once per distinct document (the memo agrees with a fresh
compile on random policies)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import event

from keyplane.domain.clock import ManualClock
from keyplane.domain.tenancy import Principal
from keyplane.services.directory import compile_documents, compiled_policy
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
_POLICY = st.fixed_dictionaries(
    {},
    optional={
        "models": st.fixed_dictionaries(
            {}, optional={"allow": st.lists(st.sampled_from(["gpt-4*", "claude-3-*"]))}
        ),
        "scopes": st.lists(st.sampled_from(["read", "write"]), unique=True),
        "rate_limits": st.lists(
            st.fixed_dictionaries(
                {"name": _NAME, "limit": st.integers(1, 10**6), "period": st.integers(1, 86_400)},
                optional={"burst": st.integers(1, 10**6)},
            ),
            max_size=3,
            unique_by=lambda window: window["name"],
        ),
        "token_limits": st.fixed_dictionaries(
            {}, optional={"total_per_minute": st.integers(1, 10**9)}
        ),
        "budget": st.fixed_dictionaries(
            {}, optional={"credit_limit_micros": st.integers(0, 10**15)}
        ),
        "network": st.fixed_dictionaries(
            {}, optional={"ip_allow": st.lists(st.sampled_from(["203.0.113.0/24", "::1"]))}
        ),
        "features": st.fixed_dictionaries(
            {}, optional={"allow": st.lists(st.sampled_from(["chat_completion", "embeddings"]))}
        ),
        "operations": st.lists(st.sampled_from(["read", "write"]), unique=True),
        "data_access": st.fixed_dictionaries({}, optional={"log_requests": st.booleans()}),
        "advanced_features": st.dictionaries(st.sampled_from(["batch", "priority"]), st.booleans()),
        "routing": st.fixed_dictionaries(
            {}, optional={"allowed_providers": st.lists(st.sampled_from(["openai", "anthropic"]))}
        ),
    },
)


@given(plan=st.none() | _POLICY, own=_POLICY)
def test_a_memoised_policy_equals_one_compiled_afresh(
    plan: dict[str, Any] | None, own: dict[str, Any]
) -> None:
    try:
        reference = compile_documents(plan, own)
    except ValueError:
        # Not a policy (a cap under its window, say): the memo must refuse it the same way.
        with pytest.raises(ValueError):
            compiled_policy(plan, own)
        return
    first = compiled_policy(plan, own)
    assert first == reference
    assert first[0].directives == reference[0].directives
    assert compiled_policy(copy.deepcopy(plan), copy.deepcopy(own)) is first
