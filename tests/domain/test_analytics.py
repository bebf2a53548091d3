"""The rollup arithmetic of ``keyplane.domain.analytics``: the batch aggregation equals a
report-by-report count, and latencies land in the documented histogram buckets."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from keyplane.domain import analytics
from keyplane.domain.analytics import Grain, Sums

START = datetime(2026, 2, 28, 23, 58, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Counted:
    """A report as the rollups read it (``analytics.Countable``), without the ledger's rest."""

    key_id: str
    recorded_at: datetime
    model: str | None
    feature: str | None
    cost_micros: int
    input_tokens: int
    output_tokens: int
    latency_ms: int | None
    status: int | None


_REPORTS = st.lists(
    st.builds(
        Counted,
        key_id=st.sampled_from(["key_a", "key_b"]),
        # Crosses a minute, an hour and a day boundary.
        recorded_at=st.integers(0, 300).map(lambda s: START + timedelta(seconds=s)),
        model=st.sampled_from([None, "", "gpt-4", "claude"]),
        feature=st.sampled_from([None, "chat", "embeddings"]),
        cost_micros=st.integers(0, 10**9),
        input_tokens=st.integers(0, 10**6),
        output_tokens=st.integers(0, 10**6),
        latency_ms=st.one_of(st.none(), st.integers(0, 40_000)),
        status=st.sampled_from([None, 200, 399, 400, 500]),
    ),
    max_size=40,
)


def _recount(
    reports: list[Counted], value_of: dict[analytics.ValueSlot, str]
) -> dict[analytics.RowKey, list[int]]:
    """Each report counted into each of its rows, one at a time (with datetimes, floored by
    ``analytics.floor``; the rows name their starts in epoch seconds)."""
    rows: dict[tuple[str, str, datetime, str, str], Sums] = {}
    for report in reports:
        day = analytics.floor(Grain.DAY, report.recorded_at)
        epoch_day = int(day.timestamp())
        for grain in Grain:
            start = analytics.floor(grain, report.recorded_at)
            slots = [(report.key_id, grain.value, start, "", "")]
            if grain is not Grain.MINUTE:
                for dimension, value in (("model", report.model), ("feature", report.feature)):
                    if value:
                        stored = value_of.get((report.key_id, epoch_day, dimension, value), value)
                        slots.append((report.key_id, grain.value, start, dimension, stored))
            for slot in slots:
                rows.setdefault(slot, Sums()).count(
                    report.cost_micros,
                    report.input_tokens,
                    report.output_tokens,
                    report.latency_ms,
                    report.status,
                )
    return {
        (key_id, grain, int(start.timestamp()), dimension, value): list(sums.values().values())
        for (key_id, grain, start, dimension, value), sums in rows.items()
    }


@given(_REPORTS, st.booleans())
def test_batch_rollup_equals_counting_each_report_into_each_row(
    reports: list[Counted], capped: bool
) -> None:
    value_of = {}
    if capped:
        value_of = {
            (key_id, int(datetime(2026, 2, 28, tzinfo=UTC).timestamp()), "model", "claude"): (
                analytics.OTHER
            )
            for key_id in ("key_a", "key_b")
        }
    assert analytics.rollup_rows(reports, value_of) == _recount(reports, value_of)


@given(st.lists(_REPORTS, max_size=5))
def test_cells_merged_from_any_batches_make_the_rows_of_all_their_reports(
    batches: list[list[Counted]],
) -> None:
    """A fold merges the cells of many group commits: the rows it writes must be those of
    every report counted at once."""
    merged: dict[analytics.Cell, list[int]] = {}
    for batch in batches:
        analytics.merge_cells(merged, analytics.cells_of(batch))
    everything = [report for batch in batches for report in batch]
    assert analytics.rows_of_cells(merged) == _recount(everything, {})


def test_a_latency_on_a_bound_is_counted_in_the_bucket_it_closes() -> None:
    bounds = analytics.LATENCY_BOUNDS_MS
    assert analytics.latency_bucket(0) == 0
    for index, bound in enumerate(bounds):
        assert analytics.latency_bucket(bound) == index
        assert analytics.latency_bucket(bound + 1) == index + 1
    assert analytics.latency_bucket(10**9) == len(bounds)


_HISTOGRAMS = st.lists(
    st.integers(0, 10**6), min_size=analytics.HISTOGRAM_SIZE, max_size=analytics.HISTOGRAM_SIZE
)


@given(_HISTOGRAMS, st.lists(st.floats(0.001, 1.0), min_size=1, max_size=5))
def test_one_walk_percentiles_agree_with_one_percentile_at_a_time(
    histogram: list[int], quantiles: list[float]
) -> None:
    ascending = sorted(quantiles)
    expected = [analytics.percentile(histogram, q) for q in ascending]
    assert analytics.percentiles(histogram, ascending) == expected


@given(
    start=st.integers(0, 24 * 9).map(lambda h: START.replace(minute=0) + timedelta(hours=h)),
    count=st.integers(1, 24 * 9),
    grain=st.sampled_from(list(Grain)),
)
def test_covering_ranges_tile_the_window_exactly(start: datetime, count: int, grain: Grain) -> None:
    window = analytics.Window(grain, analytics.floor(grain, start), count)
    ranges = analytics.covering(window)
    # Contiguous from the window's start to its end, each on its grain's bucket edges.
    assert ranges[0][1] == window.start
    assert ranges[-1][2] == window.end
    for (_, _, end), (_, next_start, _) in itertools.pairwise(ranges):
        assert end == next_start
    for range_grain, range_start, range_end in ranges:
        assert range_start < range_end
        assert analytics.floor(range_grain, range_start) == range_start
        assert analytics.floor(range_grain, range_end) == range_end
        # Only hour windows trade their whole days for day rows.
        assert range_grain in (grain, Grain.DAY if grain is Grain.HOUR else grain)


def test_sums_summed_equals_adding_one_at_a_time() -> None:
    items = []
    for n in range(5):
        sums = Sums()
        sums.count(n * 10, n, n + 1, None if n == 2 else n * 400, 500 if n % 2 else 200)
        items.append(sums)
    added = Sums()
    for sums in items:
        added.add(sums)
    assert Sums.summed(items) == added
    assert Sums.summed([]) == Sums()
    assert Sums.of_measures(list(added.values().values())) == added
