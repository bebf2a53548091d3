"""Budget rollover: the carry rule (pure), and the whole verify path (verifier, carry book,
limiter, ledger) against a simple model over random spending across period boundaries."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyplane.domain import rollover
from keyplane.domain.clock import ManualClock
from keyplane.domain.periods import Reset, period_start
from keyplane.domain.tenancy import Principal
from keyplane.services.keys import NewKey
from keyplane.services.runtime import Runtime
from keyplane.services.usage import UsageReport
from keyplane.services.verify import VerifyRequest
from tests.conftest import Database

CREDIT = 1_000_000
LIMIT = 10 * CREDIT
MAX_CARRY = 4 * CREDIT


def test_the_carry_is_what_was_left_capped_and_never_negative() -> None:
    assert rollover.carry(LIMIT, MAX_CARRY, 7 * CREDIT) == 3 * CREDIT
    assert rollover.carry(LIMIT, MAX_CARRY, 0) == MAX_CARRY
    assert rollover.carry(LIMIT, MAX_CARRY, 12 * CREDIT) == 0
    # Credits adjusted in the previous period can make its spending negative: still capped.
    assert rollover.carry(LIMIT, MAX_CARRY, -5 * CREDIT) == MAX_CARRY


def test_the_previous_period_is_the_calendar_one_before_and_none_for_a_new_key() -> None:
    march = datetime(2024, 3, 1, tzinfo=UTC)
    assert rollover.previous_period_start(Reset.MONTHLY, march) == datetime(2024, 2, 1, tzinfo=UTC)
    leap_day = datetime(2024, 3, 1, tzinfo=UTC)
    assert rollover.previous_period_start(Reset.DAILY, leap_day) == datetime(
        2024, 2, 29, tzinfo=UTC
    )
    monday = datetime(2024, 1, 1, tzinfo=UTC)
    assert rollover.previous_period_start(Reset.WEEKLY, monday) == datetime(
        2023, 12, 25, tzinfo=UTC
    )
    assert rollover.previous_period_start(Reset.NEVER, march) is None
    assert rollover.previous_period_start(Reset.MONTHLY, march, created_at=march) is None


@pytest.fixture
async def runtime(sqlite_database: Database) -> AsyncIterator[tuple[Runtime, ManualClock]]:
    clock = ManualClock(datetime(2026, 2, 27, 20, 0, tzinfo=UTC))
    runtime = await Runtime.start(sqlite_database.settings(), clock)
    try:
        yield runtime, clock
    finally:
        await runtime.stop()


#: (hours to wait, credits to ask for) steps; daily budgets, so a few steps cross midnight.
STEPS = st.lists(st.tuples(st.integers(0, 20), st.integers(0, 9)), min_size=1, max_size=10)
_ids = itertools.count()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=STEPS)
async def test_the_verify_path_admits_exactly_what_the_model_says(
    runtime: tuple[Runtime, ManualClock], steps: list[tuple[int, int]]
) -> None:
    rt, clock = runtime
    org_id = rt.default_project.org_id
    root = Principal("mk_root", org_id, None, ("*",))
    policy = {
        "budget": {
            "credit_limit_micros": LIMIT,
            "reset": "daily",
            "rollover": {"enabled": True, "max_carry_micros": MAX_CARRY},
        }
    }
    issued = await rt.services.keys.create(root, NewKey(name="k", policy=policy))
    created = clock.now()
    spent: dict[datetime, int] = {}  # the model: what each day spent
    for hours, ask in steps:
        clock.advance(hours * 3600)
        now = clock.now()
        day = period_start(Reset.DAILY, now)
        previous = day - timedelta(days=1)
        carry = 0 if created >= day else rollover.carry(LIMIT, MAX_CARRY, spent.get(previous, 0))
        left = LIMIT + carry - spent.get(day, 0)
        expected = ask * CREDIT <= left and (ask > 0 or left > 0)

        request_id = f"req_{next(_ids)}"
        verdict = await rt.services.verifier.verify(
            root, VerifyRequest(key=issued.secret, cost=ask * CREDIT, request_id=request_id)
        )
        assert verdict.valid is expected, (now, ask, left, verdict.code)
        [budget] = [limit for limit in verdict.limits if limit.kind == "budget"]
        assert (budget.limit, budget.carry) == (LIMIT + carry, carry)
        if verdict.valid and ask:
            # The request spent what it asked: the ledger (and the counters) hold it now.
            await rt.services.usage.report(
                root,
                UsageReport(key_id=issued.record.id, request_id=request_id, cost=ask * CREDIT),
                request_id,
            )
            spent[day] = spent.get(day, 0) + ask * CREDIT
    [view] = await rt.services.keys.views(root, [issued.record])
    day = period_start(Reset.DAILY, clock.now())
    carry = (
        0
        if created >= day
        else rollover.carry(LIMIT, MAX_CARRY, spent.get(day - timedelta(days=1), 0))
    )
    assert (view.budget_limit, view.budget_carry) == (LIMIT, carry)
    assert view.budget_remaining == max(0, LIMIT + carry - spent.get(day, 0))
