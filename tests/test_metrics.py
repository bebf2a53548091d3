"""The HTTP histogram counted in plain numbers (metrics.CountedChild) renders exactly what
prometheus_client's own observe would."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from keyplane import metrics

BOUNDS = metrics.LATENCY_BUCKETS


def _histogram() -> Histogram:
    return Histogram("probe_seconds", "probe", ("route",), buckets=BOUNDS,
                     registry=CollectorRegistry())  # fmt: skip


def _samples(histogram: Histogram) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in histogram.collect()
        for sample in family.samples
    }


def _values(rng: random.Random, count: int) -> list[float]:
    # Every bound exactly (a value on a bound belongs to that bucket), values in between,
    # zero, and beyond the last bound (+Inf).
    values = [*BOUNDS, 0.0, BOUNDS[-1] * 3]
    values += [rng.uniform(0, BOUNDS[-1] * 1.2) for _ in range(count)]
    values += [rng.expovariate(1 / 0.002) for _ in range(count)]
    rng.shuffle(values)
    return values


@pytest.mark.parametrize("seed", range(5))
def test_counted_observations_fold_into_what_the_library_would_have_counted(seed: int) -> None:
    rng = random.Random(seed)
    reference, folded = _histogram(), _histogram()
    child = metrics.counted(folded.labels("/v1/verify"), BOUNDS)
    assert child.counted  # the library's internals are as this relies on (else: upgrade noticed)
    for part in range(3):  # folded several times, with observations in between
        for value in _values(rng, 200):
            reference.labels("/v1/verify").observe(value)
            child.observe(value)
        if part < 2:
            metrics.fold()
    # Not yet folded: the library's child does not have the last part's observations.
    assert _samples(folded) != _samples(reference)
    metrics.fold()
    metrics.fold()  # a second fold adds nothing
    got, want = _samples(folded), _samples(reference)
    assert got.keys() == want.keys()
    for name, value in want.items():
        assert got[name] == pytest.approx(value, rel=1e-12, abs=1e-12), name
    counts = {name: value for name, value in want.items() if not name[0].endswith("_sum")}
    assert {name: got[name] for name in counts} == counts  # counts exactly


def test_a_scrape_folds_first() -> None:
    histogram = _histogram()
    child = metrics.counted(histogram.labels("/healthz"), BOUNDS)
    child.observe(0.0007)
    assert 'probe_seconds_count{route="/healthz"} 0.0' in generate_latest(histogram).decode()
    metrics.render()
    text = generate_latest(histogram).decode()
    assert 'probe_seconds_bucket{le="0.001",route="/healthz"} 1.0' in text
    assert 'probe_seconds_bucket{le="0.0005",route="/healthz"} 0.0' in text
    assert 'probe_seconds_count{route="/healthz"} 1.0' in text


def test_other_bounds_or_several_workers_observe_through_the_library(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    histogram = _histogram()
    mismatched = metrics.counted(histogram.labels("/a"), BOUNDS[:-1])
    assert not mismatched.counted
    mismatched.observe(0.2)
    monkeypatch.setenv(metrics.MULTIPROC_ENV, str(tmp_path))
    shared = metrics.counted(histogram.labels("/b"), BOUNDS)
    assert not shared.counted
    shared.observe(0.2)
    # Observed at once, with no fold.
    samples = _samples(histogram)
    assert samples[("probe_seconds_count", (("route", "/a"),))] == 1
    assert samples[("probe_seconds_count", (("route", "/b"),))] == 1
