"""HTTP load generator for ``bench/usage.py``, and ``bench/verify.py``'s fallback without wrk.

Run as its own process (never imported by the server): ``--processes`` worker processes, each
an asyncio event loop (uvloop when installed) driving ``--concurrency / --processes``
keep-alive connections, closed loop (a connection sends its next request when the previous
answer arrived). It prints the same ``KEYPLANE_BENCH ...`` line as ``bench/wrk_verify.lua``.

Modes: ``healthz``; ``verify`` (``{"key": ...}`` bodies from ``--keys-file``); ``bodies``
(``POST /v1/verify`` with the JSON bodies of ``--bodies-file``, one per line); ``usage``
(``POST /v1/usage`` for ``--key-id``, every report with a request_id never used before).

With ``--rate R`` it is an *open* loop instead (``bench/open_loop.py``): requests are due at
a fixed schedule, R per second in all, whether or not earlier ones were answered; each takes a
free connection of the ``--concurrency`` opened (waiting for one if all are busy), and its
latency is counted from when it was due, not from when it could be sent, so a server that
falls behind shows it (no coordinated omission). The event loop's timers have a granularity of
about a millisecond: requests due within one leave together.

At the deadline a connection sends nothing more but still waits for the answer it is owed, so
every request sent was answered (or counted as an error) when this exits. ``bench/usage.py``
relies on that to compare the reports acknowledged with the rows in the ledger; wrk, which
abandons the requests in flight when its time is up, cannot give that guarantee.

It speaks HTTP/1.1 directly over asyncio streams, with the requests prepared up front (a usage
report only gets its request_id filled in), rather than through httpx: httpx's connection pool
collapses at this concurrency (measured on a 2-CPU box against ``/healthz``: ~500 req/s with 8
connections, ~66 req/s with 64, where this client does ~3,300). It is still slower than wrk,
so on a small machine it takes more CPU from the server, and its figures are a lower bound on
what the server can do. The ``cpu_us`` figure says how much CPU it took while driving load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import os
import secrets
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

VALID = b'"valid": true'
# The usage report each request sends; only request_id changes (see UsageTemplate).
USAGE_REPORT = {
    "cost": 0.01,
    "input_tokens": 100,
    "output_tokens": 50,
    "model": "gpt-4o",
    "latency_ms": 100,
    "status": 200,
}


@dataclass(frozen=True)
class UsageTemplate:
    """``POST /v1/usage`` requests that differ only in their request_id."""

    head: bytes  # up to and including "Content-Length: "
    body_start: bytes  # the JSON body up to the request_id's value
    body_end: bytes

    def request(self, request_id: str) -> bytes:
        body = self.body_start + request_id.encode() + self.body_end
        return self.head + str(len(body)).encode() + b"\r\n\r\n" + body


@dataclass
class Job:
    host: str
    port: int
    requests: list[bytes]
    first_slot: int
    slot_stride: int
    connections: int
    duration: float
    check: bool
    #: Usage mode: requests are built one by one from this, each with a new request_id.
    usage: UsageTemplate | None = None
    #: Unique to this run, so its request ids never repeat an earlier run's.
    run_tag: str = ""
    #: Open loop: requests due per second from this process (None: closed loop).
    rate: float | None = None


@dataclass
class Tally:
    latencies_us: list[int] = field(default_factory=list)
    errors: int = 0
    checked: int = 0
    invalid: int = 0
    elapsed: float = 0.0
    cpu: float = 0.0  # this worker's CPU seconds while driving the load


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="server base URL (http://host:port)")
    parser.add_argument("--mode", choices=("verify", "healthz", "bodies", "usage"), required=True)
    parser.add_argument("--keys-file", type=Path, help="one key per line (verify mode)")
    parser.add_argument(
        "--bodies-file", type=Path, help="one JSON verify body per line (bodies mode)"
    )
    parser.add_argument("--key-id", help="the key the usage reports are for (usage mode)")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument(
        "--rate", type=float, help="open loop: requests due per second, in all (see above)"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="count verdicts not valid (usage mode: answers other than 201, always counted)",
    )
    return parser.parse_args()


def post_head(path: str, host: str) -> str:
    """A POST request's head up to the Content-Length value, as the root key."""
    root_key = os.environ.get("KEYPLANE_BENCH_ROOT_KEY", "")
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {root_key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: "
    )


def prepare_requests(args: argparse.Namespace, host: str) -> list[bytes]:
    """Every request as raw HTTP/1.1 bytes, ready to write (none in usage mode)."""
    if args.mode == "healthz":
        return [f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()]
    if args.mode == "usage":
        return []
    if args.mode == "bodies":
        if args.bodies_file is None:
            raise SystemExit("--bodies-file is required in bodies mode")
        bodies = [line.encode() for line in args.bodies_file.read_text().splitlines() if line]
    else:
        if args.keys_file is None:
            raise SystemExit("--keys-file is required in verify mode")
        bodies = [json.dumps({"key": key}).encode() for key in args.keys_file.read_text().split()]
    head = post_head("/v1/verify", host)
    return [f"{head}{len(body)}\r\n\r\n".encode() + body for body in bodies]


def usage_template(args: argparse.Namespace, host: str) -> UsageTemplate | None:
    if args.mode != "usage":
        return None
    if args.key_id is None:
        raise SystemExit("--key-id is required in usage mode")
    marker = "@request_id@"  # plain ASCII: json.dumps leaves it as it is
    body = json.dumps({"key_id": args.key_id, "request_id": marker, **USAGE_REPORT})
    start, end = body.split(marker)
    return UsageTemplate(post_head("/v1/usage", host).encode(), start.encode(), end.encode())


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes]:
    """Send one request, read one response; ``(status, body)``."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def connection_loop(job: Job, slot: int, tally: Tally) -> None:
    deadline = time.perf_counter() + job.duration
    position = slot
    sent = 0
    reader, writer = await asyncio.open_connection(job.host, job.port)
    try:
        while True:
            started = time.perf_counter()
            if started >= deadline:
                return
            if job.usage is None:
                request = job.requests[position % len(job.requests)]
                position += job.slot_stride
            else:
                request = job.usage.request(f"bench-{job.run_tag}-{slot}-{sent}")
            sent += 1
            try:
                status, body = await exchange(reader, writer, request)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                tally.errors += 1
                writer.close()
                reader, writer = await asyncio.open_connection(job.host, job.port)
                continue
            tally.latencies_us.append(int((time.perf_counter() - started) * 1_000_000))
            if not 200 <= status < 400:
                tally.errors += 1
            if job.usage is not None:
                tally.checked += 1
                if status != 201:  # 200 would be a duplicate: counted before, not now
                    tally.invalid += 1
            elif job.check:
                tally.checked += 1
                if status != 200 or VALID not in body:
                    tally.invalid += 1
    finally:
        writer.close()


async def open_loop(job: Job, rate: float, tally: Tally) -> None:
    """Requests due every ``1 / rate`` seconds, each on a free connection, latency counted
    from when it was due."""
    free: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(job.connections):
        free.put_nowait(await asyncio.open_connection(job.host, job.port))
    in_flight: set[asyncio.Task[None]] = set()

    async def one(due: float, request: bytes) -> None:
        reader, writer = await free.get()
        try:
            status, body = await exchange(reader, writer, request)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            tally.errors += 1
            writer.close()
            free.put_nowait(await asyncio.open_connection(job.host, job.port))
            return
        free.put_nowait((reader, writer))
        tally.latencies_us.append(int((time.perf_counter() - due) * 1_000_000))
        if not 200 <= status < 400:
            tally.errors += 1
        elif job.check:
            tally.checked += 1
            if status != 200 or (job.requests[0].startswith(b"POST") and VALID not in body):
                tally.invalid += 1

    start = time.perf_counter()
    count = int(job.duration * rate)
    for n in range(count):
        due = start + n / rate
        wait = due - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        request = job.requests[(job.first_slot + n * job.slot_stride) % len(job.requests)]
        task = asyncio.create_task(one(due, request))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    while in_flight:
        await asyncio.gather(*in_flight)
    while not free.empty():
        free.get_nowait()[1].close()


async def drive(job: Job) -> Tally:
    tally = Tally()
    started, cpu_started = time.perf_counter(), time.process_time()
    if job.rate is not None:
        await open_loop(job, job.rate, tally)
    else:
        slots = range(job.first_slot, job.first_slot + job.connections)
        await asyncio.gather(*(connection_loop(job, slot, tally) for slot in slots))
    tally.elapsed = time.perf_counter() - started
    tally.cpu = time.process_time() - cpu_started
    return tally


def event_loop_runner() -> Callable[[Coroutine[Any, Any, Tally]], Tally]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


def run_job(job: Job) -> Tally:
    return event_loop_runner()(drive(job))


def percentile(sorted_values: list[int], q: float) -> int:
    """Nearest-rank percentile of an ascending list (0 when empty)."""
    if not sorted_values:
        return 0
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def main() -> None:
    args = parse_args()
    url = urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    if args.rate is not None and (args.mode == "usage" or args.rate <= 0):
        raise SystemExit("--rate is a positive number of verify or healthz requests per second")
    requests = prepare_requests(args, url.netloc)
    usage = usage_template(args, url.netloc)
    run_tag = secrets.token_hex(6)
    processes = max(1, min(args.processes, args.concurrency))
    shares = split(args.concurrency, processes)
    jobs = [
        Job(
            host,
            port,
            requests,
            sum(shares[:i]),
            args.concurrency,
            share,
            args.duration,
            args.check,
            usage,
            run_tag,
            None if args.rate is None else args.rate / processes,
        )
        for i, share in enumerate(shares)
    ]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        tallies = pool.map(run_job, jobs)
    latencies = sorted(value for tally in tallies for value in tally.latencies_us)
    elapsed = max(tally.elapsed for tally in tallies)
    figures = {
        "requests": len(latencies),
        "duration_us": int(elapsed * 1_000_000),
        "p50_us": percentile(latencies, 50),
        "p90_us": percentile(latencies, 90),
        "p99_us": percentile(latencies, 99),
        "max_us": latencies[-1] if latencies else 0,
        "errors": sum(tally.errors for tally in tallies),
        "checked": sum(tally.checked for tally in tallies),
        "invalid": sum(tally.invalid for tally in tallies),
        "cpu_us": int(sum(tally.cpu for tally in tallies) * 1_000_000),
    }
    print("KEYPLANE_BENCH " + " ".join(f"{name}={value}" for name, value in figures.items()))


if __name__ == "__main__":
    main()
