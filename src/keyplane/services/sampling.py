"""Brings the counts the runtime's objects keep themselves into the Prometheus metrics.

The key cache, the verifier (its verdicts), the resilient limiter, the invalidation channel
and the supervisor count their events in plain attributes (cheap, and what ``/readyz`` and
tests read). :class:`RuntimeSampler` turns those totals into counter increments and gauge
values: on every scrape, and every few seconds from a background loop, so that with several
workers each one's share is current whichever worker answers the scrape.
"""

from __future__ import annotations

import asyncio
from typing import Any

from keyplane import metrics
from keyplane.services.supervisor import LoopStatus, Supervisor

#: Seconds between two samples by the background loop.
SAMPLE_SECONDS = 5.0


class RuntimeSampler:
    """Samples one runtime's self-kept counts into :mod:`keyplane.metrics`."""

    def __init__(
        self,
        key_cache: Any,
        supervisor: Supervisor,
        limiter: Any | None = None,
        invalidation: Any | None = None,
        verdicts: dict[str, int] | None = None,
    ) -> None:
        self._key_cache = key_cache
        #: The verifier's count of verdicts given, by code (``Verifier.verdicts``).
        self._verdict_counts = verdicts or {}
        self._verdicts = {code: metrics.Delta(metrics.VERDICTS[code]) for code in metrics.VERDICTS}
        self._supervisor = supervisor
        self._limiter = limiter
        self._invalidation = invalidation
        self._hits = metrics.Delta(metrics.KEY_CACHE_HITS)
        self._misses = metrics.Delta(metrics.KEY_CACHE_MISSES)
        self._fallbacks = metrics.Delta(metrics.LIMITS_FALLBACK)
        self._losses = metrics.Delta(metrics.LIMITS_STATE_LOST)
        self._evictions = metrics.Delta(metrics.EVICTIONS_RECEIVED)

    def sample(self) -> None:
        """Update the metrics from the objects' current counts."""
        self._hits.update(self._key_cache.hits)
        self._misses.update(self._key_cache.misses)
        for code, count in self._verdict_counts.items():
            self._verdicts[code].update(count)
        if self._limiter is not None:
            metrics.LIMITS_DEGRADED.set(1 if self._limiter.degraded else 0)
            self._fallbacks.update(self._limiter.fallbacks)
            self._losses.update(self._limiter.state_losses)
        if self._invalidation is not None:
            self._evictions.update(self._invalidation.received)
        metrics.set_loops(
            (state.name, state.status is LoopStatus.RUNNING) for state in self._supervisor.states()
        )

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(SAMPLE_SECONDS)
