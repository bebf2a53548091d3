"""``VerdictRecorder``: its current-minute fast path counts exactly what counting every verdict
under its own floored minute would (hypothesis), through clock jumps forward and back."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from keyplane.domain import analytics
from keyplane.domain.analytics import Grain
from keyplane.errors import StorageError
from keyplane.services.analytics import VerdictRecorder

START = datetime(2026, 2, 28, 23, 58, 30, tzinfo=UTC)


class Flushed:
    """An ``AnalyticsStore`` stand-in that keeps what ``add_verdicts`` was given (the store
    itself is tested on SQLite and PostgreSQL in tests/store/test_analytics.py)."""

    def __init__(self, fail: int = 0) -> None:
        self.counts: Counter[tuple[str, datetime, str]] = Counter()
        self.fail = fail

    async def add_verdicts(self, counts: Mapping[tuple[str, datetime, str], int]) -> None:
        if self.fail:
            self.fail -= 1
            raise StorageError("database down")
        self.counts.update(counts)


_VERDICTS = st.lists(
    st.tuples(
        st.sampled_from(["key_a", "key_b", "key_c"]),
        st.sampled_from(["VALID", "RATE_LIMITED", "REVOKED"]),
        # Seconds from START, in any order: the clock jumps forward and back across minutes,
        # an hour and a day.
        st.integers(-200, 400),
        st.booleans(),  # flush after this one
    ),
    max_size=60,
)


@given(_VERDICTS, st.integers(0, 2))
def test_recorded_counts_equal_counting_each_verdict_in_its_minute(
    verdicts: list[tuple[str, str, int, bool]], failures: int
) -> None:
    async def run() -> None:
        store = Flushed(fail=failures)
        recorder = VerdictRecorder(store, 5.0)  # type: ignore[arg-type]
        expected: Counter[tuple[str, datetime, str]] = Counter()
        for key_id, code, offset, flush in verdicts:
            when = START + timedelta(seconds=offset, microseconds=offset * 7 % 1000)
            recorder.record(key_id, code, when)
            expected[(key_id, analytics.floor(Grain.MINUTE, when), code)] += 1
            if flush:
                await recorder.flush()
        # Failed flushes kept their counts: enough flushes write everything, once.
        for _ in range(failures + 1):
            await recorder.flush()
        assert store.counts == expected
        assert recorder.pending == 0

    asyncio.run(run())
