"""Is the server still answering others while a hostile request is being handled?

The attacks in this catalogue blocked the event loop (a decimal conversion, a regex match, a
100 MiB header): every other client, ``/healthz`` included, waited 8 to 37 s. The check here
sends the hostile requests from background threads and, meanwhile, times ``/healthz`` on a
connection of its own.

Bound: the house rule forbids timing assertions under a second (the suite must pass while a
second copy of it loads the same two cores), so the assertion is ``RESPONSIVE_BOUND`` = 1 s.
That still fails every one of the original stalls by a factor of 8 or more; the 100 ms figure
the security issue names is measured by ``bench/hostile.py``, next to an idle baseline.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

RESPONSIVE_BOUND = 1.0
#: How many healthz probes run while the hostile requests are in flight, and how far apart.
PROBES = 10
PROBE_INTERVAL = 0.05


@dataclass
class Responsiveness:
    latencies: list[float] = field(default_factory=list)
    hostile_errors: list[BaseException] = field(default_factory=list)

    @property
    def worst(self) -> float:
        return max(self.latencies)


def measure_while(
    base_url: str,
    hostile: Callable[[], None],
    *,
    senders: int = 2,
    probes: int = PROBES,
) -> Responsiveness:
    """Run ``hostile`` in ``senders`` threads, each calling it repeatedly until the probes end,
    and time ``probes`` ``GET /healthz`` calls made meanwhile.

    ``hostile`` sends one hostile request and checks its answer (raise to fail); it is called at
    least once per sender even when the probes finish first.
    """
    result = Responsiveness()
    done = threading.Event()

    def send() -> None:
        try:
            hostile()
            while not done.is_set():
                hostile()
        except BaseException as exc:  # reported to the test, not lost in the thread
            result.hostile_errors.append(exc)

    threads = [threading.Thread(target=send, daemon=True) for _ in range(senders)]
    for thread in threads:
        thread.start()
    try:
        # Give the hostile requests a head start so the probes land while they are handled.
        time.sleep(PROBE_INTERVAL)
        with httpx.Client(base_url=base_url, timeout=60.0) as client:
            for _ in range(probes):
                started = time.perf_counter()
                response = client.get("/healthz")
                result.latencies.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text
                time.sleep(PROBE_INTERVAL)
    finally:
        done.set()
        for thread in threads:
            thread.join(120)
    return result


def assert_stays_responsive(
    base_url: str, hostile: Callable[[], None], *, senders: int = 2
) -> Responsiveness:
    """``measure_while``, then fail if a hostile request failed its own check or ``/healthz``
    took ``RESPONSIVE_BOUND`` or more."""
    result = measure_while(base_url, hostile, senders=senders)
    if result.hostile_errors:
        raise result.hostile_errors[0]
    assert result.worst < RESPONSIVE_BOUND, (
        f"/healthz took {result.worst:.3f} s while hostile requests were in flight"
        f" (all: {[round(x, 3) for x in result.latencies]})"
    )
    return result
