"""The security event counter: bounded aggregation, and nothing lost when a write fails."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from keyplane.domain.changes import Actor, Journal, Origin
from keyplane.domain.clock import ManualClock
from keyplane.services.security_events import OVERFLOW, SecurityEvents


class Sink:
    def __init__(self) -> None:
        self.journals: list[Journal] = []
        self.fail = False

    async def __call__(self, journals: Sequence[Journal]) -> None:
        if self.fail:
            raise RuntimeError("the database is down")
        self.journals.extend(journals)

    def counts(self) -> dict[str, int]:
        return {j.changes[0].details["source"]: j.changes[0].count for j in self.journals}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))


async def test_sources_past_the_cap_fold_into_one_overflow_entry(clock: ManualClock) -> None:
    sink = Sink()
    events = SecurityEvents(sink, clock, max_sources=10)
    for i in range(1000):
        events.auth_failed("org_1", "unknown", Origin.of(f"10.0.{i // 250}.{i % 250}", None, None))
    assert events.pending == 11
    assert await events.flush() == 11
    counts = sink.counts()
    assert counts[OVERFLOW] == 990 and sum(counts.values()) == 1000
    assert await events.flush() == 0  # a new window starts empty


async def test_one_entry_per_org_action_and_source_with_reason_counts(
    clock: ManualClock,
) -> None:
    sink = Sink()
    events = SecurityEvents(sink, clock)
    actor = Actor("management_key", "mk_1", "ci")
    for code in ("REVOKED", "REVOKED", "EXPIRED"):
        events.verify_refused("org_1", "proj_1", "key_1", code, actor)
    events.permission_denied("org_1", actor, "MISSING_SCOPE")
    clock.advance(60)
    assert await events.flush() == 2
    refused = next(j for j in sink.journals if j.changes[0].action == "verify.refused")
    change = refused.changes[0]
    assert change.count == 3 and change.details["codes"] == {"REVOKED": 2, "EXPIRED": 1}
    assert (change.target_type, change.target_id, change.project_id) == ("key", "key_1", "proj_1")
    assert refused.at == clock.now()


async def test_a_failed_write_keeps_the_counts_for_the_next_flush(clock: ManualClock) -> None:
    sink = Sink()
    events = SecurityEvents(sink, clock)
    origin = Origin.of("198.51.100.1", None, None)
    for _ in range(5):
        events.auth_failed("org_1", "malformed", origin)
    sink.fail = True
    with pytest.raises(RuntimeError):
        await events.flush()
    events.auth_failed("org_1", "malformed", origin)
    sink.fail = False
    assert await events.flush() == 1
    assert sink.counts() == {"198.51.100.1": 6}
