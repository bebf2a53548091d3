"""What observing a request costs: metrics and the access log, next to a floor in the same run.

Prints figures, asserts nothing about timings. In process, one event loop:

(a) the verify path's own instrumentation: a verdict counter increment (a label set bound once)
    and a limiter histogram observation, per call, next to an empty function call (the floor);
(b) ``api/observe.py``'s ``RequestObserver`` (request id, HTTP histogram, access log) around a
    minimal ASGI app answering 200, next to the bare app: with the access log off, and on (the
    JSON line put to a ``LoopBatchedStreamHandler`` with ``JsonFormatter``, as ``keyplane
    serve`` configures it, writing to memory: production minus the system call).

Run::

    .venv/bin/python bench/observe.py
    .venv/bin/python bench/observe.py --calls 200000
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import os
import time
from typing import Any

from keyplane.api.observe import Observer, RequestObserver
from keyplane.logging_config import JsonFormatter, LoopBatchedStreamHandler
from keyplane.metrics import LIMITER_ADMIT, VERDICTS


def per_call(fn: Any, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - started) / calls * 1e6


async def bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def per_request(app: Any, calls: int, settle: Any = None) -> float:
    """µs per request of ``app``; ``settle`` (timed too) finishes what the requests left for
    later (the access log's lines, rendered and written at the end of the loop's turn)."""
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/healthz",
        "headers": [(b"host", b"bench")],
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(_message: dict[str, Any]) -> None:
        return None

    started = time.perf_counter()
    for _ in range(calls):
        await app(dict(scope), receive, send)
    if settle is not None:
        settle()
    return (time.perf_counter() - started) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000)
    args = parser.parse_args()
    calls = args.calls
    load = os.getloadavg()[0]
    print(f"observe benchmark: {calls:,} calls each, load average {load:.2f} at start")

    def floor() -> None:
        return None

    valid = VERDICTS["VALID"]

    def instrumented() -> None:
        valid.inc()
        LIMITER_ADMIT.observe(0.0001)

    empty = per_call(floor, calls)
    counted = per_call(instrumented, calls)
    print(f"  empty call (floor)                     {empty:8.3f} µs")
    added = counted - empty
    print(f"  verdict counter + limiter histogram    {counted:8.3f} µs   ({added:.3f} µs added)")

    access = logging.getLogger("keyplane.access")
    handler = LoopBatchedStreamHandler(io.StringIO())
    handler.setFormatter(JsonFormatter())

    async def http() -> None:
        bare = await per_request(bare_app, calls)
        quiet = await per_request(
            RequestObserver(bare_app, observer=Observer(access_log=False)), calls
        )
        access.addHandler(handler)
        access.setLevel(logging.INFO)
        access.propagate = False
        logged_calls = max(1, calls // 5)
        logged = await per_request(
            RequestObserver(bare_app, observer=Observer(access_log=True)),
            logged_calls,
            handler.flush,
        )
        if handler.stream.getvalue().count("\n") < logged_calls:
            raise SystemExit("the access log wrote nothing: the figure would not be its cost")
        print(f"  bare ASGI app (floor)                  {bare:8.3f} µs/request")
        print(
            f"  + RequestObserver, access log off      {quiet:8.3f} µs/request"
            f"   ({quiet - bare:.3f} µs added, {quiet / bare:.2f}x)"
        )
        print(
            f"  + RequestObserver, access log on       {logged:8.3f} µs/request"
            f"   ({logged - bare:.3f} µs added, {logged / bare:.2f}x)"
        )

    asyncio.run(http())


if __name__ == "__main__":
    main()
