"""Usage analytics: rollup grains, the fixed latency histogram, and the query windows.

Rollups are sums per key and UTC time bucket (a *grain*: minute, hour or day), kept so that
analytics read a few rows per bucket instead of scanning the ledger. Every column is a sum,
so rows written by several instances, or by several batches, add up with an upsert.

Latency is summed and counted, and also counted into a fixed histogram (``LATENCY_BOUNDS_MS``):
the percentiles read from it (:func:`percentile`) are estimates within one histogram bucket,
the price of rows that add.
"""

from __future__ import annotations

import bisect
import itertools
import operator
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol


class Grain(StrEnum):
    """A rollup bucket size; the values are stored, so they never change."""

    MINUTE = "minute"
    HOUR = "hour"
    DAY = "day"


GRAIN_SECONDS = {Grain.MINUTE: 60, Grain.HOUR: 3600, Grain.DAY: 86400}

#: Breakdowns kept beside the totals (dimension ``""``). The minute grain keeps totals only:
#: per-model and per-feature rows at one-minute resolution would multiply the table for a
#: view nobody reads at that resolution.
DIMENSIONS = ("model", "feature")
#: What a value past a key's cardinality cap is counted as.
OTHER = "(other)"

#: Upper bounds (inclusive, milliseconds) of the latency histogram's buckets; the last bucket
#: takes everything above the last bound.
LATENCY_BOUNDS_MS: tuple[int, ...] = (10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)
HISTOGRAM_SIZE = len(LATENCY_BOUNDS_MS) + 1
HISTOGRAM_COLUMNS = tuple(f"latency_h{index}" for index in range(HISTOGRAM_SIZE))

#: The summed measures of a usage rollup row, in storage order.
MEASURES = (
    "requests",
    "errors",
    "cost_micros",
    "input_tokens",
    "output_tokens",
    "latency_count",
    "latency_sum_ms",
    *HISTOGRAM_COLUMNS,
)
#: Where the histogram starts in a row's measures.
_HISTOGRAM_AT = MEASURES.index(HISTOGRAM_COLUMNS[0])

#: Most points one series may have: bounds the rows a query reads and the response size.
MAX_POINTS = 2000
#: The longest period a query may ask about.
MAX_PERIOD = timedelta(days=3660)

_PERIOD = re.compile(r"([0-9]{1,5})([mhd])", re.ASCII)
_UNITS = {"m": 60, "h": 3600, "d": 86400}


def floor(grain: Grain, when: datetime) -> datetime:
    """The start of the ``grain`` bucket that contains ``when`` (UTC)."""
    # Already UTC (every time Keyplane makes is): no conversion to pay for.
    utc = when if when.tzinfo is UTC else None
    if utc is None:
        if when.tzinfo is None or when.utcoffset() is None:
            raise ValueError("rollups need a timezone-aware datetime")
        utc = when.astimezone(UTC)
    if grain is Grain.MINUTE:
        return utc.replace(second=0, microsecond=0)
    if grain is Grain.HOUR:
        return utc.replace(minute=0, second=0, microsecond=0)
    return utc.replace(hour=0, minute=0, second=0, microsecond=0)


def latency_bucket(latency_ms: int) -> int:
    """The histogram bucket ``latency_ms`` is counted in."""
    # The first bound at or above it; past the last bound, the open last bucket.
    return bisect.bisect_left(LATENCY_BOUNDS_MS, latency_ms)


def percentile(histogram: Sequence[int], quantile: float) -> float | None:
    """Estimate a latency quantile (0 < q <= 1) from histogram counts, in milliseconds.

    Linear within the bucket the rank falls in (from its lower to its upper bound); the open
    last bucket answers its lower bound. ``None`` when nothing was counted.
    """
    total = sum(histogram)
    if total == 0:
        return None
    rank = quantile * total
    seen = 0
    for index, count in enumerate(histogram):
        if count and seen + count >= rank:
            lower = 0 if index == 0 else LATENCY_BOUNDS_MS[index - 1]
            if index >= len(LATENCY_BOUNDS_MS):
                return float(lower)
            upper = LATENCY_BOUNDS_MS[index]
            return lower + (upper - lower) * max(rank - seen, 0) / count
        seen += count
    return float(LATENCY_BOUNDS_MS[-1])  # pragma: no cover - the loop always answers


def percentiles(histogram: Sequence[int], quantiles: Sequence[float]) -> list[float | None]:
    """:func:`percentile` for each of ``quantiles``, from one running sum of the histogram.

    Why: a 720-point series asks three quantiles of every point. The running sum is built in
    C and each rank's bucket found by bisection, the first bucket whose running sum reaches
    the rank (it has counts: an empty one repeats the sum before it). Agrees with
    :func:`percentile` (a property test checks it).
    """
    cumulative = list(itertools.accumulate(histogram))
    total = cumulative[-1]
    if total == 0:
        return [None] * len(quantiles)
    last = len(cumulative) - 1
    answers: list[float | None] = []
    for quantile in quantiles:
        rank = quantile * total
        index = min(bisect.bisect_left(cumulative, rank), last)
        lower = _LOWER_BOUNDS_MS[index]
        if index >= len(LATENCY_BOUNDS_MS):
            answers.append(float(lower))
        else:
            count = histogram[index]
            seen = cumulative[index] - count
            upper = LATENCY_BOUNDS_MS[index]
            answers.append(lower + (upper - lower) * max(rank - seen, 0) / count)
    return answers


#: Each histogram bucket's lower bound (the first bucket starts at 0).
_LOWER_BOUNDS_MS = (0, *LATENCY_BOUNDS_MS)


@dataclass(frozen=True, slots=True)
class Retention:
    """How long each grain's rows are kept; ``None``: as long as the key exists."""

    minute: timedelta = timedelta(hours=48)
    hour: timedelta = timedelta(days=90)
    day: timedelta | None = None

    def of(self, grain: Grain) -> timedelta | None:
        return {Grain.MINUTE: self.minute, Grain.HOUR: self.hour, Grain.DAY: self.day}[grain]


def parse_period(text: str) -> timedelta | None:
    """``"30m"``, ``"24h"``, ``"7d"``; ``None`` when it is not one (or is zero)."""
    match = _PERIOD.fullmatch(text)
    if match is None:
        return None
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if seconds == 0:
        return None
    return timedelta(seconds=seconds)


@dataclass(frozen=True, slots=True)
class Window:
    """The buckets a query covers: ``count`` buckets of ``grain`` from ``start``; the last is
    the one ``now`` falls in (so it is still filling)."""

    grain: Grain
    start: datetime
    count: int

    @property
    def end(self) -> datetime:
        """The end of the last bucket (exclusive)."""
        return self.start + timedelta(seconds=GRAIN_SECONDS[self.grain] * self.count)

    def starts(self) -> list[datetime]:
        step = timedelta(seconds=GRAIN_SECONDS[self.grain])
        return [self.start + step * index for index in range(self.count)]


def covering(window: Window) -> list[tuple[Grain, datetime, datetime]]:
    """Bucket ranges ``(grain, start, end)`` that together cover exactly ``window``'s time,
    the whole days of an hourly window as day buckets.

    Why: a key's model and feature breakdowns over 30 days of hours would add 720 rows per
    value; a day row is the sum of its 24 hour rows (both are written from the same reports
    in one transaction, with the same per-day cardinality cap), so whole days read one row
    per value and only the partial days at the edges read hours.
    """
    if window.grain is not Grain.HOUR:
        return [(window.grain, window.start, window.end)]
    first_day = floor(Grain.DAY, window.start)
    if first_day < window.start:
        first_day += timedelta(days=1)
    last_day = floor(Grain.DAY, window.end)
    if first_day >= last_day:
        return [(Grain.HOUR, window.start, window.end)]
    ranges = [(Grain.DAY, first_day, last_day)]
    if window.start < first_day:
        ranges.insert(0, (Grain.HOUR, window.start, first_day))
    if last_day < window.end:
        ranges.append((Grain.HOUR, last_day, window.end))
    return ranges


def window(period: timedelta, grain: Grain, now: datetime, retention: Retention) -> Window | str:
    """The window of ``period`` ending with the bucket ``now`` is in, or why there is none.

    The period must be a whole number of buckets, at most ``MAX_POINTS`` of them, and within
    the grain's retention (older buckets are pruned, so they would read as zero).
    """
    step = GRAIN_SECONDS[grain]
    seconds = int(period.total_seconds())
    if period > MAX_PERIOD:
        return f"period: at most {MAX_PERIOD.days}d"
    if seconds % step:
        return f"period: must be a whole number of {grain.value}s"
    count = seconds // step
    if count > MAX_POINTS:
        return f"period: at most {MAX_POINTS} {grain.value}s; use a coarser granularity"
    kept = retention.of(grain)
    if kept is not None and period > kept:
        return f"period: {grain.value} rollups are kept {_shown(kept)}; use a coarser granularity"
    last = floor(grain, now)
    return Window(grain, last - timedelta(seconds=step * (count - 1)), count)


def _shown(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    if seconds % 86400 == 0:
        return f"{seconds // 86400}d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    return f"{seconds // 60}m"


@dataclass(slots=True)
class Sums:
    """One rollup row's measures (or the sum of several)."""

    requests: int = 0
    errors: int = 0
    cost_micros: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    latency_count: int = 0
    latency_sum_ms: int = 0
    histogram: list[int] = field(default_factory=lambda: [0] * HISTOGRAM_SIZE)

    def count(
        self,
        cost_micros: int,
        input_tokens: int,
        output_tokens: int,
        latency_ms: int | None,
        status: int | None,
    ) -> None:
        """Count one usage report in."""
        self.requests += 1
        if status is not None and status >= 400:
            self.errors += 1
        self.cost_micros += cost_micros
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        if latency_ms is not None:
            self.latency_count += 1
            self.latency_sum_ms += latency_ms
            self.histogram[latency_bucket(latency_ms)] += 1

    def add(self, other: Sums) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.cost_micros += other.cost_micros
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.latency_count += other.latency_count
        self.latency_sum_ms += other.latency_sum_ms
        for index, count in enumerate(other.histogram):
            self.histogram[index] += count

    def values(self) -> dict[str, int]:
        """The measures by column name (``MEASURES``)."""
        return {
            "requests": self.requests,
            "errors": self.errors,
            "cost_micros": self.cost_micros,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "latency_count": self.latency_count,
            "latency_sum_ms": self.latency_sum_ms,
            **dict(zip(HISTOGRAM_COLUMNS, self.histogram, strict=True)),
        }

    @classmethod
    def of(cls, values: Mapping[Any, Any]) -> Sums:
        """From a row (PostgreSQL sums bigints as numeric: every value is made an int)."""
        measures = {name: int(values[name] or 0) for name in MEASURES}
        return cls(
            requests=measures["requests"],
            errors=measures["errors"],
            cost_micros=measures["cost_micros"],
            input_tokens=measures["input_tokens"],
            output_tokens=measures["output_tokens"],
            latency_count=measures["latency_count"],
            latency_sum_ms=measures["latency_sum_ms"],
            histogram=[measures[name] for name in HISTOGRAM_COLUMNS],
        )

    @classmethod
    def summed(cls, items: Sequence[Sums]) -> Sums:
        """The sum of ``items``: what :meth:`add` over them gives, a column at a time."""
        return cls(
            sum(item.requests for item in items),
            sum(item.errors for item in items),
            sum(item.cost_micros for item in items),
            sum(item.input_tokens for item in items),
            sum(item.output_tokens for item in items),
            sum(item.latency_count for item in items),
            sum(item.latency_sum_ms for item in items),
            [sum(column) for column in zip(*(item.histogram for item in items), strict=True)]
            if items
            else [0] * HISTOGRAM_SIZE,
        )

    @classmethod
    def of_measures(cls, measures: Sequence[Any]) -> Sums:
        """From the measures in ``MEASURES`` order (a row's tail), any of them a database's
        sum (PostgreSQL's numeric) or NULL: what :meth:`of` does, by position."""
        return cls.of_ints([int(value or 0) for value in measures], 0)

    @classmethod
    def of_ints(cls, row: Sequence[Any], at: int) -> Sums:
        """From a row whose measures, from index ``at`` in ``MEASURES`` order, are already
        non-null ints (plain rollup columns, not sums): :meth:`of_measures` without the
        conversions, for the up to 2000 rows of a series."""
        return cls(
            row[at], row[at + 1], row[at + 2], row[at + 3], row[at + 4], row[at + 5],
            row[at + 6], list(row[at + _HISTOGRAM_AT :]),
        )  # fmt: skip

    @property
    def avg_latency_ms(self) -> float | None:
        return None if self.latency_count == 0 else self.latency_sum_ms / self.latency_count

    @property
    def error_rate(self) -> float:
        """Errors as a percentage of requests (0 when there were none)."""
        return 0.0 if self.requests == 0 else 100.0 * self.errors / self.requests

    def percentiles(self) -> dict[str, float | None]:
        p50, p95, p99 = self.percentile_values()
        return {"p50": p50, "p95": p95, "p99": p99}

    def percentile_values(self) -> list[float | None]:
        """p50, p95 and p99, in that order."""
        if self.latency_count == 0:
            return [None, None, None]
        return percentiles(self.histogram, (0.50, 0.95, 0.99))


#: A rollup row's identity: key id, grain, bucket start (epoch seconds, UTC), dimension,
#: value. Epoch seconds, not datetimes, while rows are counted: a fold makes thousands, and
#: flooring, hashing and sorting integers costs a fraction of doing it to aware datetimes.
RowKey = tuple[str, str, int, str, str]


class Countable(Protocol):
    """What the rollups read of a report (the ledger's ``UsageEntry`` is one)."""

    @property
    def key_id(self) -> str: ...
    @property
    def recorded_at(self) -> datetime: ...
    @property
    def model(self) -> str | None: ...
    @property
    def feature(self) -> str | None: ...
    @property
    def cost_micros(self) -> int: ...
    @property
    def input_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def latency_ms(self) -> int | None: ...
    @property
    def status(self) -> int | None: ...


def measured(report: Countable) -> list[int]:
    """What one report adds to each rollup row it is in, in ``MEASURES`` order."""
    vector = [0] * len(MEASURES)
    vector[0] = 1
    if report.status is not None and report.status >= 400:
        vector[1] = 1
    vector[2] = report.cost_micros
    vector[3] = report.input_tokens
    vector[4] = report.output_tokens
    if report.latency_ms is not None:
        vector[5] = 1
        vector[6] = report.latency_ms
        vector[_HISTOGRAM_AT + latency_bucket(report.latency_ms)] = 1
    return vector


#: A rollup cell: the reports of one key, minute (epoch seconds, UTC), model and feature
#: (``""``: none), summed. A batch's cells are what the ledger's transaction keeps for the
#: rollups (see ``store/analytics.py``); the rows are made from them when they are folded.
Cell = tuple[str, int, str, str]
#: What ``value_of`` is keyed by: key id, day start (epoch seconds), dimension, value.
ValueSlot = tuple[str, int, str, str]

_MINUTE_S, _HOUR_S, _DAY_S = 60, 3600, 86_400


def epoch_minute(at: datetime) -> int:
    """The start of ``at``'s minute in epoch seconds (UTC)."""
    return int(at.timestamp()) // _MINUTE_S * _MINUTE_S


def epoch_day(at: int) -> int:
    """The start of the UTC day holding epoch second ``at``."""
    return at - at % _DAY_S


def cells_of(reports: Iterable[Countable]) -> dict[Cell, list[int]]:
    """Each report counted once into its (key, minute, model, feature) cell: the measures it
    adds, summed per cell, in ``MEASURES`` order."""
    cells: dict[Cell, list[int]] = {}
    for report in reports:
        cell = (
            report.key_id,
            epoch_minute(report.recorded_at),
            report.model or "",
            report.feature or "",
        )
        vector = measured(report)
        summed = cells.get(cell)
        cells[cell] = vector if summed is None else list(map(operator.add, summed, vector))
    return cells


def merge_cells(into: dict[Cell, list[int]], cells: Mapping[Cell, list[int]]) -> None:
    """Add ``cells`` to ``into`` (new lists only: a vector may be shared)."""
    for cell, vector in cells.items():
        summed = into.get(cell)
        into[cell] = vector if summed is None else list(map(operator.add, summed, vector))


def rows_of_cells(
    cells: Mapping[Cell, list[int]],
    value_of: Mapping[ValueSlot, str] | None = None,
) -> dict[RowKey, list[int]]:
    """The rollup rows ``cells`` add to, each once, with what they add to it (the measures
    in ``MEASURES`` order).

    ``value_of`` maps (key id, day start, dimension, value) to the value stored (``OTHER``
    once the key's cap for that day is reached); absent entries are stored as they are.
    """
    # Why cells first: reports mostly share a key, minute, model and feature, so the work
    # follows the distinct cells (each adds to its up to seven rows), not reports times rows.
    chosen = value_of or {}
    rows: dict[RowKey, list[int]] = {}
    # The grains' names looked up once (an enum member's value is a descriptor call).
    by_minute, by_hour, by_day = Grain.MINUTE.value, Grain.HOUR.value, Grain.DAY.value
    for (key_id, minute, model, feature), vector in cells.items():
        hour = minute - minute % _HOUR_S
        day = minute - minute % _DAY_S
        slots = [
            (key_id, by_minute, minute, "", ""),
            (key_id, by_hour, hour, "", ""),
            (key_id, by_day, day, "", ""),
        ]
        # The minute grain has totals only: per-value rows start at the hour.
        if model:
            stored = chosen.get((key_id, day, "model", model), model)
            slots.append((key_id, by_hour, hour, "model", stored))
            slots.append((key_id, by_day, day, "model", stored))
        if feature:
            stored = chosen.get((key_id, day, "feature", feature), feature)
            slots.append((key_id, by_hour, hour, "feature", stored))
            slots.append((key_id, by_day, day, "feature", stored))
        for slot in slots:
            # New lists only, never added in place: one cell's vector may start several rows.
            summed = rows.get(slot)
            rows[slot] = vector if summed is None else list(map(operator.add, summed, vector))
    return rows


def rollup_rows(
    reports: Iterable[Countable],
    value_of: Mapping[ValueSlot, str] | None = None,
) -> dict[RowKey, list[int]]:
    """The rollup rows a batch of reports adds to: :func:`rows_of_cells` of its cells."""
    return rows_of_cells(cells_of(reports), value_of)


def verdict_rows(
    counts: Mapping[tuple[str, datetime, str], int],
) -> dict[tuple[str, str, datetime, str], int]:
    """Verify outcome counts per (key id, minute, code) spread over every grain:
    (key id, grain, bucket start, code) -> count."""
    rows: dict[tuple[str, str, datetime, str], int] = {}
    for (key_id, minute, code), count in counts.items():
        for grain in Grain:
            slot = (key_id, grain.value, floor(grain, minute), code)
            rows[slot] = rows.get(slot, 0) + count
    return rows
