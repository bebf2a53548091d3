"""Prometheus metrics, through the Prometheus project's ``prometheus_client``.

The collectors are module-level, as the library intends: a counter counts for the whole
process, whatever part of the code (the API, a service, the store) takes the event. They hold
counts and durations only, never a key, a body or a credential.

Multi-process mode: ``keyplane serve --workers N`` sets ``PROMETHEUS_MULTIPROC_DIR`` before it
starts the workers (see ``cli/main.py``); ``prometheus_client`` then keeps every worker's
values in memory-mapped files there, and :func:`render` adds them all up, whichever worker
answers the scrape. Gauges say how: a loop is up only while it is up in every live worker
(``livemin``), limits are degraded when any worker is (``livemax``). Process metrics
(``process_*``) are reported in single-process mode only: the library cannot add up CPU or
memory across processes.

Hot paths use children bound once (the HTTP observer's cache): binding a label set takes a
lock and a lookup that a request need not pay. The hottest counts (the verifier's verdicts, the
key cache's hits) are plain integers on the hot path, added to their counters by
``services/sampling.py`` on every scrape and every few seconds. So is the HTTP histogram in a
single process (:class:`CountedChild`), folded in before every scrape: every request observes
it, and ``prometheus_client`` takes a lock per value it adds (two per observation).
"""

from __future__ import annotations

import bisect
import os
import threading
import weakref
from collections.abc import Iterable
from typing import Any

import prometheus_client
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from keyplane.domain.decisions import Code

#: The environment variable ``prometheus_client`` reads (when it is imported) to share values
#: between worker processes.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# ``*_created`` series double every counter's output and no dashboard here reads them.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

#: This process's collectors (single-process mode renders this registry).
REGISTRY = CollectorRegistry(auto_describe=True)
prometheus_client.ProcessCollector(registry=REGISTRY)
prometheus_client.PlatformCollector(registry=REGISTRY)
prometheus_client.GCCollector(registry=REGISTRY)

# Request latency: a verify answers in well under a millisecond in process; a slow database
# or a burst shows in the upper buckets.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

HTTP_REQUESTS = Histogram(
    "keyplane_http_request_duration_seconds",
    "HTTP requests by method, route template and status, and how long they took.",
    ("method", "route", "status"),
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
GRPC_REQUESTS = Histogram(
    "keyplane_grpc_request_duration_seconds",
    "gRPC calls by method and status code, and how long they took.",
    ("method", "code"),
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
VERIFY = Counter(
    "keyplane_verify",
    "Verdicts given, by code.",
    ("code",),
    registry=REGISTRY,
)
#: One child per verdict code, bound once (``RuntimeSampler`` adds the verifier's counts).
VERDICTS = {code.value: VERIFY.labels(code.value) for code in Code}
LIMITER_SECONDS = Histogram(
    "keyplane_limiter_duration_seconds",
    "Time the limiter took to decide an admission (memory, or Redis with its fallback).",
    ("operation",),
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
LIMITER_ADMIT = LIMITER_SECONDS.labels("admit")
STORE_SECONDS = Histogram(
    "keyplane_store_duration_seconds",
    "Time a database unit of work held its connection, by kind (read, write).",
    ("kind",),
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
STORE_READ = STORE_SECONDS.labels("read")
STORE_WRITE = STORE_SECONDS.labels("write")
DATABASE_ERRORS = Counter(
    "keyplane_database_errors",
    "Database failures met by the store, by kind (connect, read, write).",
    ("kind",),
    registry=REGISTRY,
)
REDIS_ERRORS = Counter(
    "keyplane_redis_errors",
    "Redis failures, by component (limiter, usage_stream).",
    ("component",),
    registry=REGISTRY,
)
USAGE_REPORTS = Counter(
    "keyplane_usage_reports",
    "Usage reports written to the ledger.",
    registry=REGISTRY,
)
USAGE_TRANSACTIONS = Counter(
    "keyplane_usage_transactions",
    "Ledger transactions (group commits).",
    registry=REGISTRY,
)
USAGE_BATCH_SIZE = Histogram(
    "keyplane_usage_batch_size",
    "Usage reports per group commit.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
    registry=REGISTRY,
)
VAULT_LEASES = Counter(
    "keyplane_vault_leases",
    "Vault lease requests by outcome (granted, or the refusal's code).",
    ("outcome",),
    registry=REGISTRY,
)
VAULT_RELEASES = Counter(
    "keyplane_vault_releases",
    "Vault leases ended, by the outcome reported (ok, rate_limited, unauthorized).",
    ("outcome",),
    registry=REGISTRY,
)
STREAM_SUBSCRIBERS = Gauge(
    "keyplane_usage_stream_subscribers",
    "Live usage stream subscribers connected.",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
STREAM_DROPPED = Counter(
    "keyplane_usage_stream_dropped",
    "Usage stream subscribers dropped for reading too slowly.",
    registry=REGISTRY,
)

# Counted by the runtime's objects themselves; sampled into these (see RuntimeSampler).
KEY_CACHE_HITS = Counter("keyplane_key_cache_hits", "Key cache hits.", registry=REGISTRY)
KEY_CACHE_MISSES = Counter("keyplane_key_cache_misses", "Key cache misses.", registry=REGISTRY)
LIMITS_DEGRADED = Gauge(
    "keyplane_limits_degraded",
    "1 while Redis is unreachable and limits run on the fallback.",
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
LIMITS_FALLBACK = Counter(
    "keyplane_limits_fallback", "Admissions decided without Redis.", registry=REGISTRY
)
LIMITS_STATE_LOST = Counter(
    "keyplane_limits_state_lost",
    "API keys whose long windows and slots Redis was found to have lost.",
    registry=REGISTRY,
)
EVICTIONS_RECEIVED = Counter(
    "keyplane_cache_evictions_received",
    "Cache evictions received from the invalidation channel.",
    registry=REGISTRY,
)
LOOP_UP = Gauge(
    "keyplane_background_loop_up",
    "1 while a background loop runs, 0 while it waits to be restarted or has stopped.",
    ("loop",),
    registry=REGISTRY,
    multiprocess_mode="livemin",
)
LOOP_RESTARTS = Counter(
    "keyplane_background_loop_restarts",
    "Times a background loop crashed and was restarted.",
    ("loop",),
    registry=REGISTRY,
)

JOB_RUNS = Counter(
    "keyplane_jobs_runs",
    "Scheduled job runs this process finished, by job and outcome (success, failure).",
    ("job", "outcome"),
    registry=REGISTRY,
)
JOB_LAST_SUCCESS = Gauge(
    "keyplane_jobs_last_success_timestamp_seconds",
    "When a scheduled job last succeeded in any process (Unix time).",
    ("job",),
    registry=REGISTRY,
    multiprocess_mode="max",
)
JOB_DURATION = Histogram(
    "keyplane_jobs_duration_seconds",
    "How long scheduled job runs took.",
    ("job",),
    registry=REGISTRY,
    buckets=(0.01, 0.1, 0.5, 1, 5, 30, 120, 600),
)


class CountedChild:
    """One label set of a histogram observed in plain numbers, on one thread (an event
    loop's), and added to ``prometheus_client``'s child by :func:`fold` before each scrape.

    ``observe`` increments a bucket's count and a sum, where the library's takes a lock for
    each. Adding them to the library's child needs its bucket and sum values (``_buckets``,
    ``_sum``, each with ``inc``) and bounds (``_upper_bounds``), which are not its public API:
    when they are not as expected, ``observe`` is the library's own (:attr:`counted` is then
    False, and ``tests/test_metrics.py`` fails, so an upgrade that changed them is noticed).
    So it is with several workers: a scrape reads every worker's values from the shared
    files, and a worker folds only its own, so each observation goes there at once.
    """

    __slots__ = ("__weakref__", "_bounds", "_child", "_counts", "_folded", "_folded_sum",
                 "_sum", "observe")  # fmt: skip

    def __init__(self, child: Any, bounds: Iterable[float]) -> None:
        self._child = child
        #: The upper bounds, +Inf last, as the library keeps them.
        self._bounds = (*bounds, float("inf"))
        self._counts = [0] * len(self._bounds)
        self._folded = [0] * len(self._bounds)
        self._sum = 0.0
        self._folded_sum = 0.0
        buckets = getattr(child, "_buckets", None)
        foldable = (
            multiprocess_dir() is None
            and list(getattr(child, "_upper_bounds", ())) == list(self._bounds)
            and isinstance(buckets, list)
            and len(buckets) == len(self._bounds)
            and all(callable(getattr(value, "inc", None))
                    for value in (*buckets, getattr(child, "_sum", None)))
        )  # fmt: skip
        self.observe = self._count if foldable else child.observe

    @property
    def counted(self) -> bool:
        """Observations are counted here and folded (the library's internals are as expected)."""
        return self.observe == self._count

    def _count(self, value: float) -> None:
        # The first bucket whose bound is at least the value, as the library's observe finds.
        self._counts[bisect.bisect_left(self._bounds, value)] += 1
        self._sum += value

    def fold(self) -> None:
        """Add what was observed since the last fold to the library's child."""
        if not self.counted:
            return
        # A snapshot: what is observed meanwhile goes in the next fold.
        counts = list(self._counts)
        total = self._sum
        buckets = self._child._buckets
        for index, count in enumerate(counts):
            added = count - self._folded[index]
            if added:
                buckets[index].inc(added)
        self._folded = counts
        if total != self._folded_sum:
            self._child._sum.inc(total - self._folded_sum)
            self._folded_sum = total


#: The live counted children (their owner, an app's observer, keeps them alive).
_COUNTED: weakref.WeakSet[CountedChild] = weakref.WeakSet()
_COUNTED_LOCK = threading.Lock()


def counted(child: Any, bounds: Iterable[float]) -> CountedChild:
    """``child`` (a histogram's label set with these ``bounds``, +Inf left out) observed as
    a :class:`CountedChild`, folded by :func:`fold`. Its owner keeps it, on one thread."""
    counted_child = CountedChild(child, bounds)
    with _COUNTED_LOCK:
        _COUNTED.add(counted_child)
    return counted_child


def fold() -> None:
    """Add the counted children's observations to their histograms (before every scrape)."""
    with _COUNTED_LOCK:
        children = list(_COUNTED)
    for child in children:
        child.fold()


def multiprocess_dir() -> str | None:
    """The directory worker processes share their values in, when serving with several."""
    return os.environ.get(MULTIPROC_ENV) or None


def render() -> tuple[bytes, str]:
    """The exposition text and its content type: this process's values, or every worker's."""
    fold()
    path = multiprocess_dir()
    if path is None:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path)  # type: ignore[no-untyped-call]
    return generate_latest(registry), CONTENT_TYPE_LATEST


def process_exiting() -> None:
    """Forget this worker's live gauges (its subscribers, its loops) as it stops cleanly."""
    path = multiprocess_dir()
    if path is not None:
        multiprocess.mark_process_dead(os.getpid(), path)  # type: ignore[no-untyped-call]


def clear_multiprocess_dir(path: str) -> None:
    """Remove the value files a previous server left in ``path`` (counters start at zero)."""
    for name in os.listdir(path):
        if name.endswith(".db"):
            os.remove(os.path.join(path, name))


class Delta:
    """Turns a running total kept elsewhere into counter increments, sampled now and then."""

    __slots__ = ("_counter", "_seen")

    def __init__(self, counter: Any) -> None:
        self._counter = counter
        self._seen = 0

    def update(self, total: int) -> None:
        if total > self._seen:
            self._counter.inc(total - self._seen)
        self._seen = max(self._seen, total)


def set_loops(states: Iterable[tuple[str, bool]]) -> None:
    """Set ``keyplane_background_loop_up`` for each (loop name, running)."""
    for name, running in states:
        LOOP_UP.labels(name).set(1 if running else 0)
